"""Full chat turns across real processes: Daphne, Redis, a Celery worker and PostgreSQL.

The worker runs the tiny random model (AVATAR_MODEL=tiny-random): its words are gibberish, but
every process boundary of a turn is real — the socket in Daphne stores and acknowledges, the
job crosses Redis to the worker, the worker streams through the channel layer back to Daphne.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from avatars.models import Message
from hunt.models import ApiToken, Clue
from tests.chat_support import LiveChat
from tests.conftest import ROOT, require_postgres

pytest_plugins = ["tests.chat_support"]
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def live_stack(daphne_process, celery_worker_process):
    """(host) of a Daphne process and a Celery worker sharing Redis and the test database."""
    require_postgres()
    celery_worker_process()
    _server, host = daphne_process(AVATAR_MODEL="tiny-random")
    return host


def test_a_turn_crosses_daphne_redis_a_worker_and_postgresql(live_stack, player_user, chat_avatar):
    token = ApiToken.issue(player_user)
    with LiveChat(live_stack, chat_avatar.slug, token) as chat:
        hello = chat.next()
        assert (hello["type"], hello["history"], hello["pending"]) == ("hello", [], None)
        ack = chat.say("Good evening, keeper. How is the lamp tonight?", "int-1")
        tokens, reply = chat.turn(ack["message_id"])
    assert reply["type"] == "reply", reply
    assert tokens, "the reply was not streamed"
    assert "".join(tokens) == reply["text"]
    stored = Message.objects.get(pk=reply["message_id"])
    assert (stored.role, stored.text, stored.reply_to_id) == (
        "avatar",
        reply["text"],
        ack["message_id"],
    )
    assert Message.objects.get(pk=ack["message_id"]).status == "done"

    # A new connection finds the whole thread, nothing pending.
    with LiveChat(live_stack, chat_avatar.slug, token) as again:
        hello = again.next()
    assert [m["id"] for m in hello["history"]] == [ack["message_id"], reply["message_id"]]
    assert hello["pending"] is None


def test_a_right_question_unlocks_a_word_across_processes(live_stack, demo_hunt, make_player):
    player = make_player("seeker")
    clue = Clue.objects.select_related("word").get(avatar__slug="old-marta")
    word = clue.word.reveal_word()
    with LiveChat(live_stack, "old-marta", ApiToken.issue(player.user)) as chat:
        chat.next()
        ack = chat.say("What keeps the lighthouse lamp burning at night?", "q-1")
        others: list[dict] = []
        _tokens, reply = chat.turn(ack["message_id"], others=others)
    discoveries = [f for f in others if f["type"] == "discovery"]
    assert discoveries == [
        {"type": "discovery", "position": 3, "word": word, "hunt": demo_hunt.slug, "first": True}
    ]
    assert reply["type"] == "reply"
    assert word in reply["text"].lower()


def test_the_example_client_logs_in_and_chats(live_stack, make_user, chat_avatar):
    make_user("integrator", password="correct-horse-battery")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "chat_client.py"),
            "--server",
            f"http://{live_stack}",
            "--username",
            "integrator",
            "--password",
            "correct-horse-battery",
            chat_avatar.slug,
            "--say",
            "Hello there!",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "you: Hello there!" in result.stdout
    # Texts are sealed at rest, so a query cannot compare them: the one reply is this turn's.
    reply = Message.objects.get(role="avatar")
    assert reply.reply_to.text == "Hello there!"
    assert f"{chat_avatar.name}: {reply.text}" in result.stdout
