"""The console over real processes: Daphne, Redis, a Celery worker and PostgreSQL.

The worker's heartbeat and its replies' waits reach the console's service panel, Redis is seen
reachable, and an announcement posted to the console crosses Redis to a player's socket.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from django.test import Client

from hunt.models import ApiToken
from tests.chat_support import LiveChat
from tests.conftest import require_postgres

pytest_plugins = ["tests.chat_support"]
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CSRF = "k" * 32


def organizer_opener(user, host: str):
    """An HTTP client signed in as `user` (a session made in the test database), with a CSRF
    cookie and header for its POSTs."""
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}; csrftoken={CSRF}"
    headers = {"Cookie": cookie, "X-CSRFToken": CSRF, "Origin": f"http://{host}"}

    def call(path: str, data: dict | None = None) -> dict:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(f"http://{host}{path}", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    return call


def test_the_console_sees_a_real_worker_and_announces_across_redis(
    daphne_process, celery_worker_process, demo_hunt, make_player, make_user
):
    require_postgres()
    celery_worker_process()
    _server, host = daphne_process(AVATAR_MODEL="tiny-random", CONSOLE_CACHE_SECONDS="0")
    organizer = make_user("organizer", is_staff=True)
    demo_hunt.organizers.add(organizer)
    console = organizer_opener(organizer, host)
    player = make_player("walker")

    with LiveChat(host, "old-marta", ApiToken.issue(player.user)) as chat:
        chat.next()
        ack = chat.say("Good evening, Marta. How is the sea?", "i-1")
        _tokens, reply = chat.turn(ack["message_id"])
        assert reply["type"] == "reply", reply

        service = console(f"/console/{demo_hunt.slug}/figures.json")["service"]
        assert service["redis"] is True
        assert service["ttft_ms"]["n"] == 1
        assert any(w["alive"] and w["model"] == "tiny-random" for w in service["workers"])

        sent = console(f"/console/{demo_hunt.slug}/announce", {"text": "Ten minutes left!"})
        assert sent["text"] == "Ten minutes left!"
        frame = chat.next(timeout=30)
    assert (frame["type"], frame["text"], frame["hunt"]) == (
        "announcement",
        "Ten minutes left!",
        demo_hunt.slug,
    )
