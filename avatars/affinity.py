"""Conversation affinity: a conversation's next turn goes to the worker that served its last one.

The engine keeps the key/values of each finished turn in its prefix cache (avatars/engine), and
warms the conversation's next prompt after each reply; that saving is only realised when the
next turn runs on the same worker process. With GENERATION_AFFINITY on:

- every generation worker process also consumes a queue of its own, `generation.<name>` (name
  `host:pid`, as its WorkerBeat row), added when the worker sets up (avatars/tasks.py);
- after a turn the worker writes `affinity:<conversation id>` = its name (Redis, through the
  cache, kept REMEMBER_SECONDS);
- its heartbeat thread, the one that writes WorkerBeat every BEAT_SECONDS, also writes a
  liveness key with a time-to-live of ALIVE_SECONDS, and a clean shutdown deletes it;
- `queue_for(conversation)` on the enqueueing side (Daphne) routes to the remembered worker's
  queue when its liveness key is there, else to the shared `generation` queue.

Liveness is read from Redis, not from the WorkerBeat table: it is on the path of every turn
in the web tier, and one Redis GET is cheaper than a database query there; the database row
stays what the console reads.

Race: a worker killed (SIGKILL, lost host) after it was last seen still looks alive for up to
ALIVE_SECONDS; a turn routed to its queue then is never consumed. The chat socket's watcher
fails such a turn (`expire_stuck_turn`, GENERATION_TIME_LIMIT) and the player can ask again;
a clean stop (SIGTERM) deletes the liveness key first, so a rolling restart loses nothing.
"""

from __future__ import annotations

import os
import socket

from django.conf import settings
from django.core.cache import cache

from avatars.models import WorkerBeat

SHARED_QUEUE = "generation"
# A conversation is remembered this long after its last turn; past it the prefix cache has
# most likely dropped it anyway (LRU, AVATAR_PREFIX_CACHE_TOKENS).
REMEMBER_SECONDS = 30 * 60
# Two beats may be missed (a loaded CPU stalls the heartbeat thread) before routing stops.
ALIVE_SECONDS = WorkerBeat.ALIVE_SECONDS


def worker_name() -> str:
    """This process's name as a generation worker (the WorkerBeat row's name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def own_queue(name: str) -> str:
    return f"{SHARED_QUEUE}.{name}"


def conversation_key(conversation_id: int) -> str:
    return f"affinity:{conversation_id}"


def alive_key(name: str) -> str:
    return f"worker-alive:{name}"


def enabled() -> bool:
    # Only across processes: without Redis, turns run in this process's own pool.
    return bool(settings.GENERATION_AFFINITY and settings.REDIS_URL)


def served_by(conversation_id: int) -> str | None:
    """The worker that served the conversation's last turn, if remembered."""
    return cache.get(conversation_key(conversation_id))


def is_alive(name: str) -> bool:
    return bool(cache.get(alive_key(name)))


def queue_for(conversation_id: int) -> str:
    """The queue for this conversation's next turn (see module doc)."""
    if not enabled():
        return SHARED_QUEUE
    name = served_by(conversation_id)
    if name and is_alive(name):
        return own_queue(name)
    return SHARED_QUEUE


def remember(conversation_id: int, name: str | None = None) -> None:
    """Notes that this worker (or `name`) served the conversation's last turn."""
    if enabled():
        cache.set(conversation_key(conversation_id), name or worker_name(), REMEMBER_SECONDS)


def mark_alive(name: str | None = None) -> None:
    if enabled():
        cache.set(alive_key(name or worker_name()), 1, ALIVE_SECONDS)


def mark_gone(name: str | None = None) -> None:
    if enabled():
        cache.delete(alive_key(name or worker_name()))
