"""The generation task: claiming a turn, streaming it to the conversation's group, storing one
reply, failing cleanly; in-process and on a real Celery worker.

The model is the tiny random one, run by the real engine; the gate is the real one (the avatar
here guards no word, so it opens nothing and loads no embedding model).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from avatars import publishing, tasks, turns
from avatars.engine.engine import EngineError
from avatars.models import Message
from avatars.turns import SEALED_FIELDS
from hunt.crypto import open_text
from lostwallet.wire import failed_event
from tests.engine_support import say

pytest_plugins = ["tests.engine_support"]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def engine(make_engine, monkeypatch, settings):
    """The real engine on the tiny model, as `get_engine()` of this process."""
    settings.AVATAR_MAX_NEW_TOKENS = 12
    running = make_engine()
    monkeypatch.setattr("avatars.engine.get_engine", lambda model=None: running)
    return running


class Listener:
    """Joins a conversation's group on a publisher's loop and collects the events it gets."""

    def __init__(self, group: str):
        self.publisher = publishing.Publisher()
        self.layer = self.publisher.layer
        self.channel = self._run(self.layer.new_channel())
        self._run(self.layer.group_add(group, self.channel))

    def _run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.publisher.loop).result(timeout)

    def turn(self, reply_to: int) -> list[dict]:
        """Events up to the turn's terminal event (chat.reply or chat.failed), their sealed
        text and word opened as the chat socket does."""
        events = []
        while True:
            event = self._run(self.layer.receive(self.channel))
            event = {k: open_text(v) if k in SEALED_FIELDS else v for k, v in event.items()}
            events.append(event)
            if event["type"] in ("chat.reply", "chat.failed") and event["reply_to"] == reply_to:
                return events

    def pending(self) -> int:
        return (
            self.layer.channels[self.channel].qsize() if self.channel in self.layer.channels else 0
        )


def replies_to(message: Message) -> list[Message]:
    return list(Message.objects.filter(reply_to=message))


def test_a_turn_streams_chunks_that_concatenate_to_the_stored_reply(engine, conversation):
    message = say(conversation)
    listener = Listener(conversation.group_name())
    assert turns.run_turn(message.pk, listener.publisher) is None
    events = listener.turn(message.pk)
    tokens = [e["text"] for e in events if e["type"] == "chat.token"]
    final = events[-1]
    [reply] = replies_to(message)
    assert final == {
        "type": "chat.reply",
        "reply_to": message.pk,
        "message_id": reply.pk,
        "text": reply.text,
    }
    assert tokens and "".join(tokens) == reply.text
    message.refresh_from_db()
    assert (message.status, reply.role, reply.status) == ("done", "avatar", "done")
    assert 0 < message.prompt_tokens <= 768


def test_a_redelivered_job_makes_no_second_reply(engine, conversation):
    message = say(conversation)
    listener = Listener(conversation.group_name())
    turns.run_turn(message.pk, listener.publisher)
    listener.turn(message.pk)
    assert turns.run_turn(message.pk, listener.publisher) is None
    assert len(replies_to(message)) == 1
    assert listener.pending() == 0  # the second run published nothing


def test_two_jobs_for_one_turn_at_once_make_one_reply(engine, conversation):
    message = say(conversation)
    listener = Listener(conversation.group_name())
    outcomes = []

    def job() -> None:
        outcomes.append(turns.run_turn(message.pk, listener.publisher))

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(replies_to(message)) == 1
    # One job answered; the other found the turn taken (live lease: try later) or done.
    assert None in outcomes
    assert Message.objects.get(pk=message.pk).status == "done"


def test_a_redelivered_job_takes_over_the_stale_claim_of_a_dead_worker(engine, conversation):
    message = say(conversation)
    dead = timezone.now() - turns.STALE_AFTER - timedelta(seconds=1)
    Message.objects.filter(pk=message.pk).update(status="generating", claimed_at=dead)
    listener = Listener(conversation.group_name())
    assert turns.run_turn(message.pk, listener.publisher) is None
    assert listener.turn(message.pk)[-1]["type"] == "chat.reply"
    assert len(replies_to(message)) == 1


def test_a_live_claim_makes_a_redelivered_job_wait_for_it(engine, conversation):
    message = say(conversation)
    Message.objects.filter(pk=message.pk).update(status="generating", claimed_at=timezone.now())
    wait = turns.run_turn(message.pk, publishing.Publisher())
    assert 0 < wait <= turns.STALE_AFTER.total_seconds() + 1
    assert replies_to(message) == []
    assert engine.steps == 0


def test_the_celery_task_retries_while_another_job_holds_the_turn(
    engine, conversation, monkeypatch
):
    message = say(conversation)
    Message.objects.filter(pk=message.pk).update(status="generating", claimed_at=timezone.now())
    retried = {}

    class Retry(Exception):
        pass

    def retry(countdown, **options):
        retried.update(options, countdown=countdown)
        raise Retry

    monkeypatch.setattr(tasks.generate_reply, "retry", retry)
    with pytest.raises(Retry):
        tasks.generate_reply.run(message.pk)
    assert 0 < retried["countdown"] <= turns.STALE_AFTER.total_seconds() + 1
    assert retried["queue"] == "generation"  # not back to a worker's own queue


@pytest.mark.parametrize("status", ["done", "failed"])
def test_a_finished_turn_is_never_claimed_again(engine, conversation, status):
    message = say(conversation)
    Message.objects.filter(pk=message.pk).update(status=status)
    assert turns.run_turn(message.pk, publishing.Publisher()) is None
    assert replies_to(message) == []
    assert Message.objects.get(pk=message.pk).status == status


def test_a_model_failure_fails_the_turn_and_tells_the_group(engine, conversation, monkeypatch):
    def broken(request):
        raise EngineError("the model fell over")

    monkeypatch.setattr(engine, "submit", broken)
    message = say(conversation)
    listener = Listener(conversation.group_name())
    assert turns.run_turn(message.pk, listener.publisher) is None
    events = listener.turn(message.pk)
    assert events[-1]["type"] == "chat.failed"
    assert events[-1]["reply_to"] == message.pk
    assert Message.objects.get(pk=message.pk).status == "failed"
    assert replies_to(message) == []


def test_a_job_that_lost_its_claim_stores_nothing(engine, conversation):
    message = say(conversation)
    lease = turns.claim_turn(message.pk)
    # Another job judged the lease stale and took the turn over.
    Message.objects.filter(pk=message.pk).update(claimed_at=timezone.now() + timedelta(seconds=1))
    assert not lease.renew()
    assert turns.store_reply(message, lease, "Too late.", None, engine.tokenizer) is None
    assert replies_to(message) == []


def test_the_heartbeat_keeps_the_claim_of_a_waiting_job_fresh(conversation, monkeypatch):
    monkeypatch.setattr(turns, "HEARTBEAT", timedelta(seconds=0.05))
    message = say(conversation)
    lease = turns.claim_turn(message.pk)
    first = lease.claimed_at
    with turns.Heartbeat(lease) as heartbeat:
        time.sleep(0.4)  # e.g. waiting for a place in the engine's batch: no token comes
    assert not heartbeat.lost
    assert lease.claimed_at > first
    assert Message.objects.get(pk=message.pk).claimed_at == lease.claimed_at


def test_the_heartbeat_notices_when_the_turn_is_taken_over(conversation, monkeypatch):
    monkeypatch.setattr(turns, "HEARTBEAT", timedelta(seconds=0.05))
    message = say(conversation)
    lease = turns.claim_turn(message.pk)
    with turns.Heartbeat(lease) as heartbeat:
        Message.objects.filter(pk=message.pk).update(status="failed")
        time.sleep(0.4)
    assert heartbeat.lost


def test_older_turns_fold_into_the_summary_as_the_conversation_grows(
    engine, conversation, settings
):
    settings.AVATAR_MAX_NEW_TOKENS = 60  # the tiny model's gibberish fills the budget fast
    listener = Listener(conversation.group_name())
    sizes = []
    for turn in range(12):
        message = say(conversation, f"Turn {turn}: tell me about the soup and the boats.")
        turns.run_turn(message.pk, listener.publisher)
        listener.turn(message.pk)
        sizes.append(Message.objects.get(pk=message.pk).prompt_tokens)
    conversation.refresh_from_db()
    assert conversation.summary and conversation.summary_upto
    folded = Message.objects.filter(
        conversation=conversation, role="player", pk__lte=conversation.summary_upto
    )
    # The summary quotes turns that left the prompt window.
    assert any(m.text.split(":")[0] + ":" in conversation.summary for m in folded)
    assert max(sizes) <= 768
    assert Message.objects.filter(conversation=conversation, role="avatar").count() == 12


def test_the_next_turns_prefix_is_warmed_after_a_reply(engine, conversation):
    message = say(conversation)
    listener = Listener(conversation.group_name())
    turns.run_turn(message.pk, listener.publisher)
    listener.turn(message.pk)
    following = say(conversation, "And the bread?")
    turns.run_turn(following.pk, listener.publisher)
    listener.turn(following.pk)
    # The second prompt repeated the first turn: its key/values came from the cache.
    assert engine.prefix_cache.hits >= 1
    assert engine.prefix_cache.reused_tokens > 50


def test_the_server_loop_is_found_from_its_sync_threads():
    async def probe():
        return await database_sync_to_async(publishing.server_loop)(), asyncio.get_running_loop()

    found, running = asyncio.run(probe())
    assert found is running
    assert publishing.server_loop() is None  # a plain thread has no server loop


async def test_in_process_jobs_publish_on_the_servers_own_loop(engine, conversation):
    """Without Redis the in-memory channel layer belongs to the server's event loop: the job,
    running in a pool thread, must hand its events to that loop."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conversation.group_name(), channel)

    def store_and_enqueue() -> Message:
        with transaction.atomic():
            message = say(conversation)
            tasks.enqueue_reply(message)
        return message

    message = await database_sync_to_async(store_and_enqueue)()
    events = []
    while not events or events[-1]["type"] != "chat.reply":
        events.append(await asyncio.wait_for(layer.receive(channel), timeout=60))
    reply = await database_sync_to_async(Message.objects.get)(reply_to=message)
    tokens = [open_text(e["text"]) for e in events if e["type"] == "chat.token"]
    assert "".join(tokens) == reply.text


def test_with_redis_the_job_goes_to_the_generation_queue_after_commit(
    conversation, settings, monkeypatch
):
    from lostwallet.celery import app

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    sent = []
    monkeypatch.setattr(
        tasks.generate_reply, "apply_async", lambda *args, **options: sent.append((args, options))
    )
    with transaction.atomic():
        message = say(conversation)
        tasks.enqueue_reply(message)
        assert sent == []  # not before the row is visible to a worker
    assert sent == [
        (((message.pk,), {"conversation_id": conversation.pk}), {"queue": "generation"})
    ]
    route = app.amqp.router.route({}, "avatars.tasks.generate_reply")
    assert route["queue"].name == "generation"
    options = tasks.generate_reply
    assert (options.acks_late, options.reject_on_worker_lost) == (True, True)
    limit = settings.GENERATION_TIME_LIMIT
    assert (options.soft_time_limit, options.time_limit) == (limit, limit + 30)


def test_a_turn_nobody_claimed_in_time_is_failed_for_the_player(conversation, settings):
    message = say(conversation)
    assert 0 < turns.expire_stuck_turn(message.pk) <= settings.GENERATION_QUEUE_TIMEOUT
    Message.objects.filter(pk=message.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.GENERATION_QUEUE_TIMEOUT + 1)
    )
    listener = Listener(conversation.group_name())
    assert turns.expire_stuck_turn(message.pk) is None
    assert listener.turn(message.pk)[-1] == failed_event(message.pk)
    assert Message.objects.get(pk=message.pk).status == "failed"
    assert turns.expire_stuck_turn(message.pk) is None  # finished: nothing more to watch


def test_a_claim_silent_past_the_time_limit_is_failed_and_a_live_one_is_not(conversation, settings):
    live, dead = say(conversation), say(conversation, "Anyone?")
    now = timezone.now()
    Message.objects.filter(pk=live.pk).update(status="generating", claimed_at=now)
    silent = now - timedelta(seconds=settings.GENERATION_TIME_LIMIT + 31)
    Message.objects.filter(pk=dead.pk).update(status="generating", claimed_at=silent)
    assert turns.expire_stuck_turn(live.pk) > 0
    assert turns.expire_stuck_turn(dead.pk) is None
    statuses = dict(Message.objects.filter(pk__in=[live.pk, dead.pk]).values_list("pk", "status"))
    assert statuses == {live.pk: "generating", dead.pk: "failed"}


@pytest.mark.integration
def test_a_real_worker_process_streams_and_stores_one_reply_over_redis(
    celery_worker_process, conversation
):
    """A Celery worker process (threads pool, tiny model) takes the job from Redis, streams the
    reply through the Redis channel layer to this process, and stores it in PostgreSQL. The job
    is sent twice, like a duplicate delivery: still one reply."""
    from celery import Celery
    from channels_redis.core import RedisChannelLayer

    from lostwallet.settings import channel_layer_host
    from tests.conftest import require_postgres, require_redis

    require_postgres()
    url = require_redis()
    celery_worker_process(AVATAR_MAX_NEW_TOKENS="24")
    message = say(conversation)

    async def exchange() -> list[dict]:
        layer = RedisChannelLayer(hosts=[channel_layer_host(url)])
        channel = await layer.new_channel()
        await layer.group_add(conversation.group_name(), channel)
        broker = Celery(broker=url)
        for _ in range(2):
            broker.send_task("avatars.tasks.generate_reply", args=[message.pk], queue="generation")
        events = []
        while not events or events[-1]["type"] not in ("chat.reply", "chat.failed"):
            events.append(await asyncio.wait_for(layer.receive(channel), timeout=120))
        await layer.flush()
        return events

    events = asyncio.run(exchange())
    [reply] = replies_to(message)
    assert events[-1]["type"] == "chat.reply"
    assert events[-1]["message_id"] == reply.pk
    tokens = [open_text(e["text"]) for e in events if e["type"] == "chat.token"]
    assert "".join(tokens) == reply.text
    assert Message.objects.get(pk=message.pk).status == "done"
