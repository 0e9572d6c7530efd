"""Faults in the real stack: a worker killed mid-reply, a Redis restart, a lost job.

Each test starts its own processes; the Redis restart test runs a dedicated redis-server on a
free port so that restarting it disturbs nothing else on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import redis as redis_client

from avatars.models import Message
from hunt.models import ApiToken
from tests.chat_support import LiveChat
from tests.conftest import free_port, missing_service, require_postgres

pytest_plugins = ["tests.chat_support"]
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Long replies (the tiny model rarely stops by itself) leave time to kill a worker mid-reply.
SLOW = {"AVATAR_MODEL": "tiny-random", "AVATAR_MAX_NEW_TOKENS": "1500"}
VISIBILITY = "3"


def test_a_worker_killed_mid_reply_still_ends_the_turn(
    daphne_process, celery_worker_process, player_user, chat_avatar
):
    require_postgres()
    env = {**SLOW, "CELERY_VISIBILITY_TIMEOUT": VISIBILITY, "GENERATION_TIME_LIMIT": "20"}
    worker = celery_worker_process(**env)
    _server, host = daphne_process(**env)
    token = ApiToken.issue(player_user)
    with LiveChat(host, chat_avatar.slug, token) as chat:
        chat.next()
        ack = chat.say("Tell me the whole story of the harbour.", "kill-1")
        first = chat.next(timeout=120)
        assert first["type"] == "token", first
        worker.kill(signal.SIGKILL)
        assert Message.objects.get(pk=ack["message_id"]).status == "generating"

        # Past the visibility timeout a new worker finds the unacknowledged job at startup.
        time.sleep(int(VISIBILITY) + 1)
        celery_worker_process(**env)
        _tokens, terminal = chat.turn(ack["message_id"], timeout=240)
        assert terminal["type"] in ("reply", "error"), terminal
        if terminal["type"] == "error":
            assert terminal["code"] == "generation_failed"
        else:
            stored = Message.objects.get(pk=terminal["message_id"])
            assert stored.text == terminal["text"]
        # Exactly one ending: nothing more arrives for this turn.
        chat.send({"type": "ping"})
        assert chat.next() == {"type": "pong"}
    assert Message.objects.filter(role="avatar", reply_to_id=ack["message_id"]).count() <= 1


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server on a free port, restartable by the test: (url, restart(), stop())."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis-server is not installed")
    port = free_port()
    state: dict = {}

    def start() -> None:
        state["proc"] = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=(tmp_path / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = redis_client.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis_client.RedisError:
                time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    def stop() -> None:
        proc = state.get("proc")
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)

    def restart() -> None:
        stop()
        start()

    start()
    yield f"redis://127.0.0.1:{port}/0", restart, stop
    stop()


def reconnect(host: str, slug: str, token: str, within: float = 60) -> tuple[LiveChat, dict]:
    """Opens a chat, retrying while the server recovers; returns (chat, hello)."""
    deadline = time.monotonic() + within
    while True:
        try:
            chat = LiveChat(host, slug, token, timeout=10)
            return chat, chat.next()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def wait_for_broker_acks(url: str, within: float = 30) -> None:
    """Waits until the broker holds no job a worker has yet to acknowledge (kombu's `unacked`
    hash). A Redis restart at the moment a worker acknowledges can stop that worker (a kombu
    race: restoring the unacknowledged job on a closed connection is an "unrecoverable error");
    production runs workers under a supervisor for that (README), and this test is about the
    web tier, so it restarts Redis with the worker idle."""
    client = redis_client.Redis.from_url(url)
    deadline = time.monotonic() + within
    while client.hlen("unacked") and time.monotonic() < deadline:
        time.sleep(0.1)


def test_the_web_tier_survives_a_redis_restart_and_nothing_acknowledged_is_lost(
    own_redis, daphne_process, celery_worker_process, player_user, chat_avatar
):
    require_postgres()
    url, restart_redis, _stop = own_redis
    env = {"REDIS_URL": url, "AVATAR_MODEL": "tiny-random", "GENERATION_QUEUE_TIMEOUT": "15"}
    worker = celery_worker_process(**env)
    daphne, host = daphne_process(**env)
    token = ApiToken.issue(player_user)

    with LiveChat(host, chat_avatar.slug, token) as chat:
        chat.next()
        first = chat.say("Before the storm.", "r-1")
        assert chat.turn(first["message_id"])[1]["type"] == "reply"

    wait_for_broker_acks(url)
    restart_redis()
    assert daphne.proc.poll() is None, "Daphne died with Redis"
    chat, hello = reconnect(host, chat_avatar.slug, token)
    with chat:
        assert len(hello["history"]) == 2
        second = chat.say("After the storm.", "r-2")
        assert chat.turn(second["message_id"])[1]["type"] == "reply"

    # A job lost with Redis: the worker is down, the message is acknowledged and queued, and
    # Redis restarts empty. The turn must still end, and the message must still be there.
    worker.kill(signal.SIGKILL)
    with LiveChat(host, chat_avatar.slug, token) as chat:
        chat.next()
        lost = chat.say("Is anyone there?", "r-3")
    restart_redis()
    celery_worker_process(**env)
    chat, hello = reconnect(host, chat_avatar.slug, token)
    with chat:
        assert hello["history"][-1]["id"] == lost["message_id"]
        if hello["pending"] == lost["message_id"]:
            _tokens, terminal = chat.turn(lost["message_id"], timeout=60)
            assert (terminal["type"], terminal["code"]) == ("error", "generation_failed")
        else:
            assert hello["history"][-1]["status"] == "failed"
    assert Message.objects.get(pk=lost["message_id"]).status == "failed"
    assert daphne.proc.poll() is None
