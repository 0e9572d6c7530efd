from __future__ import annotations

from django.urls import path

from avatars import views

urlpatterns = [
    path("chat/<slug:avatar_slug>/", views.chat_page, name="chat"),
]
