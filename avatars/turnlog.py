"""Per-turn serving figures of the generation workers, for the load test (`loadtest`).

With GENERATION_TURN_LOG set, each turn appends one JSON record to a Redis list: when it ended,
which worker served it, how long the message waited before reaching the engine (stored ->
broker -> claimed -> gate -> prompt built), how long it waited in the engine for admission,
and how many of its prompt tokens came from the prefix cache. The load test reads the list
after its run; nothing else does, so it is off by default.
"""

from __future__ import annotations

import json
import logging
import time

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

KEEP = 100_000  # records; a load test of a few minutes writes a few thousand


def key() -> str:
    # The cache prefix keeps two load tests on one Redis apart.
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:generation-turns"


def enabled() -> bool:
    return bool(settings.GENERATION_TURN_LOG and settings.REDIS_URL)


def client():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


def note(message, stream, worker: str) -> None:
    """Appends the figures of `message`'s turn, streamed by engine `stream`."""
    if not enabled():
        return
    waited_before = stream.submitted_at - time.monotonic()  # negative: seconds ago
    record = {
        "t": time.time(),
        "worker": worker,
        "conversation": message.conversation_id,
        "message": message.pk,
        "before_engine_s": round(
            (timezone.now() - message.created_at).total_seconds() + waited_before, 4
        ),
        "engine_queue_s": None
        if stream.admitted_at is None
        else round(stream.admitted_at - stream.submitted_at, 4),
        "prompt_tokens": len(stream.request.prompt_ids),
        "cached_tokens": stream.cached_tokens,
    }
    try:
        with client() as redis_client:
            redis_client.rpush(key(), json.dumps(record))
            redis_client.ltrim(key(), -KEEP, -1)
    except Exception:
        # Figures for a benchmark: never the reason a turn fails.
        logger.exception("turn log write failed")


def read() -> list[dict]:
    with client() as redis_client:
        return [json.loads(item) for item in redis_client.lrange(key(), 0, -1)]


def clear() -> None:
    with client() as redis_client:
        redis_client.delete(key())
