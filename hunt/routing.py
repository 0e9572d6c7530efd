from __future__ import annotations

from django.urls import path

from hunt import consumers

websocket_urlpatterns = [
    path("ws/hunts/<slug:slug>/leaderboard/", consumers.LeaderboardConsumer.as_asgi()),
]
