"""Conversation affinity (avatars/affinity.py): a conversation's next turn goes to the queue of
the worker that served its last one while that worker lives, else to the shared queue; each
worker consumes its own queue; a real worker stopped mid-conversation hands over to the other."""

from __future__ import annotations

import signal
import socket
import time
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.db import transaction

from avatars import affinity, tasks
from avatars.models import Message
from tests.engine_support import say

pytest_plugins = ["tests.engine_support"]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def routing(settings):
    # The unit suite's cache is local memory; affinity only needs get/set/delete of it.
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.GENERATION_AFFINITY = True


def test_a_conversation_goes_to_the_live_worker_that_served_it_last(routing):
    affinity.mark_alive("host-a:1")
    affinity.remember(7, "host-a:1")
    assert affinity.queue_for(7) == "generation.host-a:1"
    assert affinity.queue_for(8) == "generation"  # never served: the shared queue


def test_a_dead_workers_conversation_falls_back_to_the_shared_queue(routing):
    affinity.mark_alive("host-a:1")
    affinity.remember(7, "host-a:1")
    # Killed: its heartbeat stops and the liveness key runs out (what expiry does).
    cache.delete(affinity.alive_key("host-a:1"))
    assert affinity.queue_for(7) == "generation"


def test_a_cleanly_stopped_worker_gets_no_more_turns(routing):
    affinity.mark_alive("host-a:1")
    affinity.remember(7, "host-a:1")
    affinity.mark_gone("host-a:1")
    assert affinity.queue_for(7) == "generation"


def test_the_liveness_key_lives_for_two_missed_beats(routing, monkeypatch):
    written = {}
    monkeypatch.setattr(affinity.cache, "set", lambda k, v, t: written.update({k: t}))
    affinity.mark_alive("host-a:1")
    assert written == {affinity.alive_key("host-a:1"): affinity.ALIVE_SECONDS}
    assert affinity.ALIVE_SECONDS >= 3 * affinity.WorkerBeat.BEAT_SECONDS


def test_without_affinity_every_turn_goes_to_the_shared_queue(routing, settings):
    affinity.mark_alive("host-a:1")
    affinity.remember(7, "host-a:1")
    settings.GENERATION_AFFINITY = False
    assert affinity.queue_for(7) == "generation"


def test_a_turn_is_routed_after_commit_to_its_conversations_worker(
    routing, conversation, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        tasks.generate_reply, "apply_async", lambda *args, **options: sent.append(options)
    )
    affinity.mark_alive("host-b:2")
    affinity.remember(conversation.pk, "host-b:2")
    with transaction.atomic():
        tasks.enqueue_reply(say(conversation))
        assert sent == []
    assert sent == [{"queue": "generation.host-b:2"}]


def test_the_task_remembers_its_worker_for_the_conversation(routing, monkeypatch):
    monkeypatch.setattr(tasks, "run_turn", lambda message_id, publisher: None)
    tasks.generate_reply.run(41, conversation_id=5)
    assert cache.get(affinity.conversation_key(5)) == affinity.worker_name()


def test_a_task_that_must_wait_retries_on_the_shared_queue(routing, monkeypatch):
    monkeypatch.setattr(tasks, "run_turn", lambda message_id, publisher: 3.0)
    retried = {}

    class Retry(Exception):
        pass

    def retry(**options):
        retried.update(options)
        raise Retry

    monkeypatch.setattr(tasks.generate_reply, "retry", retry)
    with pytest.raises(Retry):
        tasks.generate_reply.run(41, conversation_id=5)
    assert retried == {"countdown": 3.0, "queue": "generation"}
    assert cache.get(affinity.conversation_key(5)) is None  # it served nothing


def test_a_worker_with_affinity_consumes_its_own_queue(routing):
    added = []
    queues = SimpleNamespace(select_add=added.append)
    instance = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=queues)))
    tasks._consume_own_queue(sender="w", instance=instance)
    assert added == [f"generation.{affinity.worker_name()}"]


@pytest.mark.integration
def test_two_real_workers_hand_a_conversation_over_when_its_worker_stops(
    celery_worker_process, conversation, settings
):
    """Two worker processes with affinity on: a conversation's second turn goes to the worker
    that served its first; that worker stops, and the third turn is served by the other."""
    from tests.conftest import require_postgres, require_redis

    require_postgres()
    url = require_redis()
    prefix = f"affinity-test-{time.monotonic_ns()}"
    settings.REDIS_URL = url
    settings.GENERATION_AFFINITY = True
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
        }
    }
    env = {"GENERATION_AFFINITY": "1", "CACHE_PREFIX": prefix, "AVATAR_MAX_NEW_TOKENS": "8"}
    workers = [celery_worker_process(**env), celery_worker_process(**env)]
    host = socket.gethostname()
    names = {w.proc.pid: f"{host}:{w.proc.pid}" for w in workers}
    deadline = time.monotonic() + 60
    while not all(map(affinity.is_alive, names.values())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(map(affinity.is_alive, names.values())), "both workers beat"

    from celery import Celery

    # This process's Celery app was configured without Redis (the unit suite runs embedded):
    # send as enqueue_reply does, through a client of the real broker.
    broker = Celery(broker=url)

    def turn(text: str) -> str:
        message = say(conversation, text)
        broker.send_task(
            "avatars.tasks.generate_reply",
            args=[message.pk],
            kwargs={"conversation_id": conversation.pk},
            queue=affinity.queue_for(conversation.pk),
        )
        until = time.monotonic() + 120
        while time.monotonic() < until:
            if Message.objects.filter(reply_to=message).exists():
                # The worker notes the conversation right after the reply is stored.
                time.sleep(0.5)
                return affinity.served_by(conversation.pk)
            time.sleep(0.2)
        raise AssertionError("no reply in time")

    first = turn("Hello captain.")
    assert first in names.values()
    assert turn("How are the tides?") == first
    [served] = [w for w in workers if names[w.proc.pid] == first]
    served.kill(signal.SIGTERM)
    assert not affinity.is_alive(first)
    second = turn("Still there?")
    assert second in names.values()
    assert second != first
