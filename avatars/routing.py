from __future__ import annotations

from django.urls import path

from avatars.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/chat/<slug:avatar_slug>/", ChatConsumer.as_asgi()),
]
