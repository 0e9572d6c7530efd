"""Generation jobs: the Celery task and the in-process pool that run the turn pipeline.

`enqueue_reply(message)` starts a turn once the message's transaction commits: on a Celery
worker (task `generate_reply`, queue `generation`) when REDIS_URL is set, otherwise in a thread
pool of this process. Both run `run_turn` (avatars/turns.py), which streams the reply to the
conversation's group and stores it; events go out through a `Publisher`
(avatars/publishing.py).

Workers: run `celery -A lostwallet worker -Q generation --pool threads --concurrency 16`. With
the threads pool one process owns one model copy and its engine batches the concurrent turns of
all its threads; a prefork pool would load a model per child and serve one turn per model. The
model is loaded when the worker is ready (threads) or in each child (prefork), never in a
parent that forks: torch threads and CUDA contexts do not survive a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from celery import shared_task
from celery.signals import celeryd_after_setup, worker_process_init, worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils.timezone import now

from avatars import affinity, versions
from avatars.engine import prompts
from avatars.models import Message, WorkerBeat
from avatars.publishing import Publisher, server_loop
from avatars.turns import TIME_LIMIT_GRACE, run_review_attacks, run_turn
from hunt import leaks

logger = logging.getLogger(__name__)


# Enqueueing ------------------------------------------------------------------------------------

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_beat_lock = threading.Lock()


def local_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=settings.GENERATION_THREADS, thread_name_prefix="generation"
            )
            # This process generates replies itself: the console lists it among the workers.
            start_beating()
        return _pool


# Heartbeats ------------------------------------------------------------------------------------

_beating_pid: int | None = None


def beat(name: str, started_at) -> None:
    """Says this generation process is alive and which model version it serves (WorkerBeat):
    the one of its last turn, before any the configured model."""
    WorkerBeat.objects.update_or_create(
        name=name,
        defaults={
            "model": versions.served_name() or settings.AVATAR_MODEL,
            "started_at": started_at,
            "seen_at": now(),
        },
    )


def start_beating() -> None:
    """Starts this process's heartbeat thread, once per process (a forked child starts its
    own: threads do not survive a fork)."""
    global _beating_pid
    with _beat_lock:
        if _beating_pid == os.getpid():
            return
        _beating_pid = os.getpid()
    name, started_at = affinity.worker_name(), now()

    def run() -> None:
        while True:
            try:
                affinity.mark_alive(name)
                beat(name, started_at)
            except Exception:
                # The database is away for a moment: the console shows the worker late, and
                # the next beat puts it right.
                logger.exception("worker heartbeat failed")
            # Drops a connection the database closed meanwhile, as the end of a request does.
            # Checking one needs the database too: a failure here must not end the beats.
            with contextlib.suppress(Exception):
                close_old_connections()
            time.sleep(WorkerBeat.BEAT_SECONDS)

    threading.Thread(target=run, name="worker-heartbeat", daemon=True).start()


def enqueue_reply(message: Message) -> None:
    """Starts generating the reply to `message` after the current transaction commits."""
    if settings.REDIS_URL:
        conversation_id = message.conversation_id

        def send() -> None:
            # Routed at commit, not before: the freshest view of which worker lives.
            generate_reply.apply_async(
                (message.pk,),
                {"conversation_id": conversation_id},
                queue=affinity.queue_for(conversation_id),
            )

        transaction.on_commit(send)
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
    # Read at import, as a decorator argument must be: a worker's settings never change.
    soft_time_limit=settings.GENERATION_TIME_LIMIT,
    time_limit=settings.GENERATION_TIME_LIMIT + TIME_LIMIT_GRACE,
)
def generate_reply(self, message_id: int, conversation_id: int | None = None) -> None:
    wait = run_turn(message_id, Publisher())
    if wait is not None:
        # Another job holds a live lease on this turn (a duplicate delivery while it runs, or
        # a redelivery right after a worker died whose lease is not stale yet): look again once
        # that lease would be stale. The turn ends either way: done, or taken over here.
        # A retry goes to the shared queue: this worker may be the reason for the wait.
        raise self.retry(countdown=wait, queue=affinity.SHARED_QUEUE)
    if conversation_id is not None:
        affinity.remember(conversation_id)


@shared_task(name="avatars.tasks.review_attacks", acks_late=True, ignore_result=True)
def review_attacks(avatar_id: int) -> None:
    run_review_attacks(avatar_id)


def enqueue_review_attacks(avatar_id: int) -> None:
    """Runs the review's attack prompts on a submitted draft (turns.run_review_attacks) where
    replies are generated, after the current transaction commits."""
    if settings.REDIS_URL:
        review_attacks.delay_on_commit(avatar_id)
        return
    transaction.on_commit(lambda: local_pool().submit(run_local_attacks, avatar_id))


def run_local_attacks(avatar_id: int) -> None:
    try:
        run_review_attacks(avatar_id)
    except Exception:
        logger.exception("the review attacks of avatar %s failed", avatar_id)


# Training and certification -------------------------------------------------------------------
# Long jobs of their own queue (`celery -A lostwallet worker -Q training --concurrency 1`, on a
# GPU host in production): a training run must not take a generation worker's model or cores.
# Without Redis they run in a thread of this process, one at a time.

_training_pool: ThreadPoolExecutor | None = None


def training_pool() -> ThreadPoolExecutor:
    global _training_pool
    with _pool_lock:
        if _training_pool is None:
            _training_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training")
        return _training_pool


def _run_logged(job, *args) -> None:
    try:
        job(*args)
    except Exception:
        logger.exception("%s%s failed", job.__name__, args)
    finally:
        close_old_connections()


# Not acks_late: a run redelivered after a worker died would start over on a half-written
# folder; the version stays "training" and an organizer starts a new run.
@shared_task(name="avatars.tasks.train_version", ignore_result=True)
def train_version(version_id: int) -> None:
    versions.run_training(version_id)


@shared_task(name="avatars.tasks.certify_version", acks_late=True, ignore_result=True)
def certify_version(version_id: int) -> None:
    # Idempotent: a redelivered certification measures again and writes the same report.
    versions.run_certification(version_id)


def _enqueue_long(task, job, version_id: int) -> None:
    if settings.REDIS_URL:
        task.delay_on_commit(version_id)
        return
    transaction.on_commit(lambda: training_pool().submit(_run_logged, job, version_id))


def enqueue_training(version_id: int) -> None:
    _enqueue_long(train_version, versions.run_training, version_id)


def enqueue_certification(version_id: int) -> None:
    _enqueue_long(certify_version, versions.run_certification, version_id)


# Worker start ----------------------------------------------------------------------------------


def warm_engine() -> None:
    """Loads the model and runs one short generation, and builds the reply guard's forms of
    every seed-list word (about a second), so the first player does not wait for the load
    and the first-call overheads."""
    # Here, not at the top: engine.py imports torch, and the web tier imports this module.
    from avatars.engine.engine import Sampling

    started = time.monotonic()
    engine, version = versions.serving_engine()
    if version.base != settings.AVATAR_MODEL and version.folder != settings.AVATAR_MODEL:
        # An engine upgrade is certified before it serves (docs/model-versions.md): the
        # configured model waits for that, and the operator should know why it is not used.
        logger.warning(
            "AVATAR_MODEL=%s is not what serves: the active version is %s (%s). Certify the new "
            "model with `manage.py certify_model --new-base`, then promote it.",
            settings.AVATAR_MODEL,
            version,
            version.folder,
        )
    prompt = prompts.build_prompt(
        engine.tokenizer, prompts.PromptParts(persona="You are a friendly guide.", message="Hi!")
    )
    engine.generate(prompt.ids, Sampling(temperature=0, max_new_tokens=4))
    leaks.seed_words_in([prompt.system])
    logger.info("avatar engine ready in %.1fs", time.monotonic() - started)
    start_beating()


@celeryd_after_setup.connect
def _consume_own_queue(sender=None, instance=None, **kwargs) -> None:
    """With affinity, this worker also consumes `generation.<name>` (avatars/affinity.py).
    The name is this process's: with the threads pool, the one whose engine runs the turns
    (a prefork pool's children each have an engine of their own: affinity cannot aim at one)."""
    if affinity.enabled() and instance is not None:
        instance.app.amqp.queues.select_add(affinity.own_queue(affinity.worker_name()))


@worker_shutdown.connect
def _stop_routing_here(**kwargs) -> None:
    # A clean stop: no new turn may be routed to this worker's own queue.
    affinity.mark_gone()


@worker_process_init.connect
def _load_in_child(**kwargs) -> None:
    warm_engine()


@worker_ready.connect
def _load_in_threads_worker(sender=None, **kwargs) -> None:
    from celery.concurrency.prefork import TaskPool as PreforkPool

    # A prefork parent only forks: its children loaded their own model (above).
    if sender is not None and not isinstance(getattr(sender, "pool", None), PreforkPool):
        warm_engine()
