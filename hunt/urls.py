from __future__ import annotations

from django.urls import path

from hunt import views

urlpatterns = [
    path("", views.home, name="home"),
    path("hunts/<slug:slug>/", views.hunt_detail, name="hunt-detail"),
]
