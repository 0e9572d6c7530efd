"""Generation jobs: a player's message becomes the avatar's streamed, stored reply.

`enqueue_reply(message)` starts a turn once the message's transaction commits: on a Celery
worker (queue `generation`) when REDIS_URL is set, otherwise in a thread pool of this process.
Both run `run_turn`, which:

1. claims the turn with a conditional update (pending -> generating), so a redelivered job, or
   two workers handed the same job, never produce two replies;
2. asks the gate (hunt/gate.py) which clues this message opens: reveals and hints for this
   turn's prompt only;
3. builds the prompt (persona, summary, recent turns within the budget) and streams the reply
   from the engine, through the reply cleaner and the gate's guard, to the conversation's group
   in chunks every ~50 ms;
4. stores the reply, folds old turns into the summary, and after commit sends the discovery
   frames, then the final `chat.reply`.

Any failure marks the turn failed and sends `chat.failed`; the player may ask again.

Workers: run `celery -A lostwallet worker -Q generation --pool threads --concurrency 16`. With
the threads pool one process owns one model copy and its engine batches the concurrent turns of
all its threads; a prefork pool would load a model per child and serve one turn per model. The
model is loaded when the worker is ready (threads) or in each child (prefork), never in a
parent that forks: torch threads and CUDA contexts do not survive a fork.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from asgiref.sync import SyncToAsync
from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from avatars import engine as avatar_engine
from avatars.engine import prompts, summary
from avatars.engine.cleaning import ReplyCleaner
from avatars.models import Conversation, Message

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05  # token frames are batched to about this cadence
REPLY_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.15}
# Tokens past AVATAR_MAX_NEW_TOKENS the model may use to finish its sentence.
SENTENCE_GRACE_TOKENS = 40
CHARS_PER_TOKEN = 4
PUBLISH_TIMEOUT = 10


def time_limit() -> int:
    """Seconds a turn may take on a worker, generation and storage included."""
    return settings.GENERATION_TIME_LIMIT


# A generating job refreshes its claim this often; a claim not refreshed for STALE_AFTER
# belongs to a worker that died, and a redelivered job may take the turn over.
HEARTBEAT = timedelta(seconds=5)
# Six missed beats: on a loaded CPU a live job's heartbeat thread can stall for seconds (model
# loads, GIL-heavy tokenising), and taking over a live turn would stream it twice. (The double
# stream once seen in CI came from the claim UPDATE's join, see claim_turn, not from this.)
STALE_AFTER = 6 * HEARTBEAT


# Publishing ------------------------------------------------------------------------------------


class Publisher:
    """Sends channel-layer events from a worker thread, in order, on one event loop.

    In-process (no Redis) the loop is the ASGI server's own: the in-memory channel layer's
    queues belong to it, and touching them from another loop or thread is not safe. With Redis
    the loop is a background thread of this process, so that channels_redis keeps one
    connection pool instead of opening one per event loop. Each send waits for the previous one
    to be delivered, which keeps a reply's frames in order.
    """

    _own_loop: asyncio.AbstractEventLoop | None = None
    _lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or self._background_loop()
        self.layer = get_channel_layer()

    @classmethod
    def _background_loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._own_loop is None or cls._own_loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="channel-publisher", daemon=True
                ).start()
                cls._own_loop = loop
            return cls._own_loop

    def send(self, group: str, event: dict) -> None:
        sending = self.layer.group_send(group, event)
        try:
            future = asyncio.run_coroutine_threadsafe(sending, self.loop)
        except RuntimeError:  # the server's loop is closed: it is shutting down
            sending.close()
            raise
        future.result(timeout=PUBLISH_TIMEOUT)


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's event loop when called from one of its sync_to_async threads (where
    asgiref records it: it is how async_to_sync finds its way back to that loop)."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


# Enqueueing ------------------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def local_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.GENERATION_THREADS, thread_name_prefix="generation"
            )
        return _pool


def enqueue_reply(message: Message) -> None:
    """Starts generating the reply to `message` after the current transaction commits."""
    if settings.REDIS_URL:
        generate_reply.delay_on_commit(message.pk)
        return
    loop = server_loop()

    def start() -> None:
        local_pool().submit(run_local_turn, message.pk, loop)

    transaction.on_commit(start)


def run_local_turn(message_id: int, loop: asyncio.AbstractEventLoop | None) -> None:
    try:
        run_turn(message_id, Publisher(loop))
    except Exception:
        logger.exception("in-process turn %s failed", message_id)


@shared_task(
    bind=True,
    name="avatars.tasks.generate_reply",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,
    # Enforced by prefork pools; run_turn keeps its own deadline too, for the threads pool.
    soft_time_limit=120,
    time_limit=150,
)
def generate_reply(self, message_id: int) -> None:
    wait = run_turn(message_id, Publisher())
    if wait is not None:
        # Another job holds a live claim on this turn (a duplicate delivery while it runs, or
        # a redelivery right after a worker died whose claim is not stale yet): look again once
        # that claim would be stale. The turn ends either way: done, or taken over here.
        raise self.retry(countdown=wait)


# The turn --------------------------------------------------------------------------------------


@dataclass
class Claim:
    """This job's hold on a turn: the `claimed_at` it last wrote."""

    message_id: int
    claimed_at: datetime

    def renew(self) -> bool:
        """Heartbeat: refreshes the claim; False when the turn is no longer this job's (taken
        over, or failed by the chat socket's deadline)."""
        now = timezone.now()
        renewed = Message.objects.filter(
            pk=self.message_id, status=Message.Status.GENERATING, claimed_at=self.claimed_at
        ).update(claimed_at=now)
        if renewed:
            self.claimed_at = now
        return bool(renewed)


class Heartbeat:
    """Renews a claim every HEARTBEAT from a thread of its own, so that a turn waiting for the
    gate's model or for a place in the engine's batch still shows a live worker. `lost` turns
    true when the claim was taken over or failed meanwhile: the job should stop."""

    def __init__(self, claim: Claim):
        self.claim = claim
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(HEARTBEAT.total_seconds()):
                if not self.claim.renew():
                    self.lost = True
                    return
        except Exception:
            logger.exception("heartbeat of turn %s failed", self.claim.message_id)
        finally:
            connection.close()  # this thread's own connection


def claim_turn(message_id: int) -> Claim | float | None:
    """Takes the turn for this job. Returns the Claim; or seconds to wait when another job's
    claim is still live; or None when there is nothing to do (answered, failed, unknown).

    Race: a job redelivered after its worker died, or delivered twice, runs twice. The
    conditional UPDATE lets exactly one of them move the message from pending to generating; a
    `generating` claim not refreshed for STALE_AFTER belongs to a dead worker and may be taken
    over the same way. A finished (done or failed) message is never claimed again.
    """
    now = timezone.now()
    claimable = Q(status=Message.Status.PENDING) | Q(
        status=Message.Status.GENERATING, claimed_at__lt=now - STALE_AFTER
    )
    # One table, no join: a join makes Django write `WHERE id IN (SELECT ...)`, and PostgreSQL
    # does not re-check such a subquery after waiting for the row lock, so two jobs delivered
    # together both took the turn and streamed it twice. A reply is stored in the transaction
    # that marks its message done, so a pending or generating message has none.
    taken = Message.objects.filter(claimable, pk=message_id, role=Message.Role.PLAYER).update(
        status=Message.Status.GENERATING, claimed_at=now
    )
    if taken:
        return Claim(message_id, now)
    held = (
        Message.objects.filter(pk=message_id, status=Message.Status.GENERATING)
        .values_list("claimed_at", flat=True)
        .first()
    )
    if held is None:
        return None
    return max(1.0, (held + STALE_AFTER - now).total_seconds() + 1)


def still_ours(claim: Claim) -> Message | None:
    """The claimed message, locked until the end of the transaction, if this job still owns
    the turn."""
    return (
        Message.objects.select_for_update()
        .filter(pk=claim.message_id, status=Message.Status.GENERATING, claimed_at=claim.claimed_at)
        .first()
    )


def history(message: Message, conversation: Conversation) -> list[Message]:
    """Stored turns after the summary and before `message`: answered player messages and
    their replies (a failed turn's message has no answer and is left out)."""
    rows = conversation.messages.filter(pk__lt=message.pk, status=Message.Status.DONE)
    if conversation.summary_upto:
        rows = rows.filter(pk__gt=conversation.summary_upto)
    return list(rows.order_by("id"))


def reveal_lines(outcome) -> tuple[str, ...]:
    return tuple(prompts.reveal_instruction(r.reveal_line) for r in outcome.reveals)


def run_turn(message_id: int, publisher: Publisher) -> float | None:
    """One turn, start to finish (see module doc). Returns seconds after which to try again
    when another job holds a live claim on it, else None. Never raises for a turn it claimed:
    a failure is stored and published as `chat.failed`."""
    claim = claim_turn(message_id)
    if not isinstance(claim, Claim):
        logger.info("turn %s is not claimable now (retry in %s)", message_id, claim)
        return claim
    group = None
    try:
        message = Message.objects.select_related(
            "conversation__avatar__hunt", "conversation__player"
        ).get(pk=message_id)
        group = message.conversation.group_name()
        generate_and_store(message, claim, publisher)
    except Exception:
        logger.exception("generating the reply to message %s failed", message_id)
        fail_turn(claim, group, publisher)
    return None


def generate_and_store(message: Message, claim: Claim, publisher: Publisher) -> None:
    from hunt import gate, leaks

    conversation = message.conversation
    hunt = conversation.avatar.hunt
    group = conversation.group_name()
    # The heartbeat stops before the reply is stored: storing checks the claim it renews.
    with Heartbeat(claim) as heartbeat:
        # The gate decides, before any generation, which words this message unlocks: only
        # then may a guarded word enter this turn's prompt.
        outcome = gate.open_clues(message)
        parts = turn_parts(message, outcome)
        engine = avatar_engine.get_engine()
        prompt = prompts.build_prompt(engine.tokenizer, parts)
        guard = leaks.ReplyGuard(message, outcome, *said_in(parts))
        text = stream_reply(engine, prompt, parts, message, guard, publisher, heartbeat)
    if text is None:
        logger.info("turn %s was taken over or expired; stopping", message.pk)
        return
    reply = store_reply(message, claim, text, prompt, engine.tokenizer)
    if reply is None:
        logger.info("turn %s was taken over or expired while generating", message.pk)
        return
    # After commit (store_reply's transaction is over). Discoveries first: the contract
    # promises that a discovered word is in this turn's reply text.
    for r in outcome.reveals:
        publisher.send(
            group,
            {
                "type": "chat.discovery",
                "position": r.position,
                "word": r.word,
                "hunt": hunt.slug if hunt else None,
                "first": r.first,
            },
        )
    publisher.send(
        group, {"type": "chat.reply", "reply_to": message.pk, "message_id": reply.pk, "text": text}
    )
    try:
        warm_next_turn(engine, reply.conversation_id)
    except Exception:
        # Only a speed-up for the next turn; this one is done.
        logger.exception("warming the next turn of conversation %s failed", reply.conversation_id)


def said_in(parts: prompts.PromptParts) -> tuple[list[str], list[str]]:
    """The player's words in a prompt, and the avatar's side of it (what the player has seen
    the avatar say): the reply guard treats the words a player put forward as guesses alike,
    right or wrong, less those the avatar already uses."""
    typed = [parts.message, summary.visitor_text(parts.summary)]
    typed += [t.text for t in parts.turns if t.role == "player"]
    seen = [parts.persona, parts.greeting, parts.hunt_context, parts.summary]
    seen += [t.text for t in parts.turns if t.role != "player"]
    return typed, seen


def turn_parts(message: Message, outcome) -> prompts.PromptParts:
    """What this turn's prompt is made of: the avatar, the summary, the stored turns since,
    the gate's instructions for this turn, and the player's message."""
    conversation = message.conversation
    parts = conversation_parts(conversation, history(message, conversation))
    return replace(parts, reveals=reveal_lines(outcome), hint=outcome.hint, message=message.text)


def stream_reply(
    engine, prompt, parts, message: Message, guard, publisher: Publisher, heartbeat: Heartbeat
) -> str | None:
    """Streams the reply through the cleaner and the guard to the conversation's group in
    chunks of about FLUSH_SECONDS; returns its text, or None when the turn stopped being this
    job's meanwhile."""
    # Here, not at the top: engine.py imports torch, and the web tier imports this module.
    from avatars.engine.engine import Request, Sampling

    deadline = time.monotonic() + time_limit() - 10
    group = message.conversation.group_name()
    avatar = message.conversation.avatar
    max_new = settings.AVATAR_MAX_NEW_TOKENS
    stream = engine.submit(
        Request(
            prompt.ids,
            Sampling(
                max_new_tokens=max_new + SENTENCE_GRACE_TOKENS,
                # The same message always samples the same reply: a redelivered job repeats
                # the first attempt instead of contradicting what was already streamed.
                seed=message.pk,
                **REPLY_SAMPLING,
            ),
        )
    )
    cleaner = ReplyCleaner(
        echo_sources=(avatar.persona, parts.hunt_context, parts.summary),
        instructions=(prompts.STYLE,),
        names=(avatar.name, avatar.name.split()[-1] if avatar.name else ""),
        soft_chars=max_new * CHARS_PER_TOKEN * 3 // 4,
        max_chars=(max_new + SENTENCE_GRACE_TOKENS) * CHARS_PER_TOKEN,
    )
    pending, last_flush = "", time.monotonic()
    complete = True
    try:
        for raw in stream:
            pending += guard.feed(cleaner.feed(raw))
            now = time.monotonic()
            if pending and now - last_flush >= FLUSH_SECONDS:
                publisher.send(group, token_event(message.pk, pending))
                pending, last_flush = "", now
            if heartbeat.lost:
                return None
            if cleaner.stop or now > deadline:
                complete = False
                break
    finally:
        stream.cancel()
    complete = complete and stream.finish_reason == "stop"
    pending += guard.feed(cleaner.finish(complete=complete))
    pending += guard.finish()
    if pending:
        publisher.send(group, token_event(message.pk, pending))
    return guard.text


def token_event(reply_to: int, text: str) -> dict:
    return {"type": "chat.token", "reply_to": reply_to, "text": text}


def store_reply(message, claim: Claim, text: str, prompt, tokenizer) -> Message | None:
    """Stores the reply and the conversation's new summary in one transaction; None when this
    job no longer owns the turn (then nothing is written)."""
    try:
        with transaction.atomic():
            # Race: a watcher failing the turn, or a job taking over a claim it thinks stale,
            # at the moment this one finishes. The row lock plus the claim check make one of
            # them win; the reply_to OneToOne would refuse a second reply in any case.
            owned = still_ours(claim)
            if owned is None:
                return None
            reply = Message.objects.create(
                conversation_id=message.conversation_id,
                role=Message.Role.AVATAR,
                text=text,
                status=Message.Status.DONE,
                reply_to=owned,
            )
            owned.status = Message.Status.DONE
            owned.prompt_tokens = prompt.tokens
            owned.save(update_fields=["status", "prompt_tokens"])
            fold_summary(message.conversation_id, tokenizer)
    except IntegrityError:
        logger.warning("a reply to message %s already exists", message.pk)
        return None
    return reply


def fold_summary(conversation_id: int, tokenizer) -> bool:
    """Folds the oldest stored turns into the summary once they no longer fit the prompt
    (summary.plan_fold). Runs inside the reply's transaction; True when the summary changed."""
    conversation = (
        Conversation.objects.select_related("avatar__hunt")
        # Only the conversation row: PostgreSQL cannot lock the nullable side of the outer
        # join to a hunt (an avatar may have none).
        .select_for_update(of=("self",))
        .get(pk=conversation_id)
    )
    rows = conversation.messages.filter(status=Message.Status.DONE)
    if conversation.summary_upto:
        rows = rows.filter(pk__gt=conversation.summary_upto)
    rows = list(rows.order_by("id"))
    parts = conversation_parts(conversation, rows)
    new_summary, folded = summary.plan_fold(tokenizer, parts, prompts.prompt_budget())
    if not folded:
        return False
    folded_rows = [m for m in rows if m.text][:folded]
    conversation.summary = new_summary
    conversation.summary_upto = folded_rows[-1].pk
    conversation.save(update_fields=["summary", "summary_upto", "updated_at"])
    return True


def conversation_parts(conversation: Conversation, rows: list[Message]) -> prompts.PromptParts:
    avatar = conversation.avatar
    hunt = avatar.hunt
    return prompts.PromptParts(
        persona=avatar.persona,
        greeting=avatar.greeting,
        hunt_context=prompts.hunt_context(hunt.title, hunt.description) if hunt else "",
        summary=conversation.summary,
        turns=prompts.turns_from(rows),
    )


def warm_next_turn(engine, conversation_id: int) -> None:
    """Prefills what the conversation's next prompt will start with, while the player reads
    and types: after a fold the summary changed, and without this the next turn would pay for
    recomputing the whole prompt before its first token."""
    conversation = Conversation.objects.select_related("avatar__hunt").get(pk=conversation_id)
    rows = conversation.messages.filter(status=Message.Status.DONE)
    if conversation.summary_upto:
        rows = rows.filter(pk__gt=conversation.summary_upto)
    parts = conversation_parts(conversation, list(rows.order_by("id")))
    prompt = prompts.build_prompt(engine.tokenizer, parts)
    engine.warm(prompts.prefix_ids(engine.tokenizer, parts, prompt))


def fail_turn(claim: Claim, group: str | None, publisher: Publisher) -> None:
    failed = Message.objects.filter(
        pk=claim.message_id, status=Message.Status.GENERATING, claimed_at=claim.claimed_at
    ).update(status=Message.Status.FAILED)
    if failed and group:
        publisher.send(group, failed_event(claim.message_id))


def failed_event(reply_to: int) -> dict:
    return {
        "type": "chat.failed",
        "reply_to": reply_to,
        "detail": "The avatar could not answer; please ask again.",
    }


def expire_stuck_turn(message_id: int) -> float | None:
    """For the chat socket's watcher: seconds until this turn should be checked again, or None
    once it is finished. A turn no worker claimed within GENERATION_QUEUE_TIMEOUT, or whose
    claim went without a heartbeat for the time limit plus 30 s (its worker died and no
    redelivered job took over), is failed here and `chat.failed` is published, so a player
    never waits in silence.

    Race: the worker finishing at the same moment. Both sides change the row only from the
    state they read (conditional update here, claim check under lock there): one wins.
    """
    row = (
        Message.objects.filter(pk=message_id, role=Message.Role.PLAYER)
        .values("status", "created_at", "claimed_at", "conversation_id")
        .first()
    )
    if row is None or row["status"] not in (Message.Status.PENDING, Message.Status.GENERATING):
        return None
    now = timezone.now()
    if row["status"] == Message.Status.PENDING:
        deadline = row["created_at"] + timedelta(seconds=settings.GENERATION_QUEUE_TIMEOUT)
    else:
        deadline = row["claimed_at"] + timedelta(seconds=time_limit() + 30)
    if now < deadline:
        return max(0.5, (deadline - now).total_seconds())
    failed = Message.objects.filter(
        pk=message_id, status=row["status"], claimed_at=row["claimed_at"]
    ).update(status=Message.Status.FAILED)
    if not failed:
        return 0.1  # it changed under us: look again
    group = Conversation(pk=row["conversation_id"]).group_name()
    transaction.on_commit(lambda: Publisher(server_loop()).send(group, failed_event(message_id)))
    return None


# Worker start ----------------------------------------------------------------------------------


def warm_engine() -> None:
    """Loads the model and runs one short generation, so the first player does not wait for
    the load and the first-call overheads."""
    # Here, not at the top: see stream_reply.
    from avatars.engine.engine import Sampling

    started = time.monotonic()
    engine = avatar_engine.get_engine()
    prompt = prompts.build_prompt(
        engine.tokenizer, prompts.PromptParts(persona="You are a friendly guide.", message="Hi!")
    )
    engine.generate(prompt.ids, Sampling(temperature=0, max_new_tokens=4))
    logger.info("avatar engine ready in %.1fs", time.monotonic() - started)


@worker_process_init.connect
def _load_in_child(**kwargs) -> None:
    warm_engine()


@worker_ready.connect
def _load_in_threads_worker(sender=None, **kwargs) -> None:
    from celery.concurrency.prefork import TaskPool as PreforkPool

    # A prefork parent only forks: its children loaded their own model (above).
    if sender is not None and not isinstance(getattr(sender, "pool", None), PreforkPool):
        warm_engine()
