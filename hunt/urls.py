from __future__ import annotations

from django.urls import path

from hunt import views

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    path("account/tokens/", views.account_tokens, name="account-tokens"),
    path("hunts/<slug:slug>/", views.hunt_detail, name="hunt-detail"),
    path("hunts/<slug:slug>/avatars/", views.hunt_avatars, name="hunt-avatars"),
    path("hunts/<slug:slug>/leaderboard/", views.hunt_leaderboard, name="hunt-leaderboard"),
    path("hunts/<slug:slug>/claim/", views.hunt_claim, name="hunt-claim"),
]
