"""Event-day path across processes: a discovery announced by another process (the gate runs in
a Celery worker) reaches the leaderboard socket served by a real Daphne through Redis."""

from __future__ import annotations

import json

import pytest
from channels.layers import channel_layers
from websockets.sync.client import connect

from hunt.leaderboard import announce_leaderboard_change
from tests.conftest import free_port, require_redis
from tests.hunt_helpers import discover, guarded_positions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_hashing"),
]


@pytest.fixture
def shared_redis(settings):
    """This test process on the same Redis cache and channel layer as the Daphne it starts."""
    url = require_redis()
    prefix = f"lbtest{free_port()}"
    settings.REDIS_URL = url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
        }
    }
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url]},
        }
    }
    channel_layers.backends.clear()
    yield prefix
    channel_layers.backends.clear()


def test_a_discovery_announced_elsewhere_reaches_the_socket(
    shared_redis, daphne_process, demo_hunt, make_player
):
    _server, host = daphne_process(redis=True, CACHE_PREFIX=shared_redis)
    first, second = guarded_positions(demo_hunt)[:2]
    discover(make_player("ann"), demo_hunt, first)
    with connect(f"ws://{host}/ws/hunts/{demo_hunt.slug}/leaderboard/", open_timeout=20) as ws:
        frame = json.loads(ws.recv(timeout=20))
        assert [(r["player"], r["words_found"]) for r in frame["rows"]] == [("ann", 1)]
        bea = make_player("bea")
        discover(bea, demo_hunt, first)
        discover(bea, demo_hunt, second)
        announce_leaderboard_change(demo_hunt.pk)
        frame = json.loads(ws.recv(timeout=20))
        assert [(r["player"], r["words_found"]) for r in frame["rows"]] == [
            ("bea", 2),
            ("ann", 1),
        ]
