"""Rate limits counted per key: an account, an address (GCRA: a steady rate plus a burst).

With REDIS_URL set the check-and-update is one Lua script, so every web process and worker
shares one atomic counter per key; without it a lock-guarded dict serves the single process.
"""

from __future__ import annotations

import math
import threading
import time
from functools import cache

from django.conf import settings

# KEYS[1]: the bucket; ARGV: emission interval (s), burst, "1" to count an allowed event or "0"
# only to look. Returns nil when allowed, else the seconds to wait. Redis' own clock keeps all
# callers on one time base. "ahead" is how far the theoretical arrival time runs ahead of now
# (see _gcra() for why not a sum).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local ahead = tat - now
if ahead > (burst - 1) * interval then return tostring(ahead - (burst - 1) * interval) end
if ARGV[3] == '0' then return nil end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((ahead + interval) * 1000))
return nil
"""

_local_lock = threading.Lock()
_local_tat: dict[str, float] = {}


@cache
def _redis_script(url: str):
    import redis

    return redis.Redis.from_url(url).register_script(_GCRA_LUA)


def hit(key: str, rate: int, burst: int = 1, per_seconds: float = 60.0) -> float | None:
    """Counts one event for `key`, allowed `rate` times per `per_seconds` (a minute unless
    said) with bursts of `burst`. Returns None when allowed, else seconds until allowed.

    A refused event is not counted, so a client that waits `retry_after` gets through.
    """
    return _gcra(key, per_seconds / max(rate, 1), burst, count=True)


def peek(key: str, rate: int, burst: int = 1, per_seconds: float = 60.0) -> float | None:
    """What `hit` would answer now, without counting anything."""
    return _gcra(key, per_seconds / max(rate, 1), burst, count=False)


def _gcra(key: str, interval: float, burst: int, count: bool) -> float | None:
    burst = max(burst, 1)
    if settings.REDIS_URL:
        script = _redis_script(settings.REDIS_URL)
        wait = script(keys=[f"ratelimit:{key}"], args=[interval, burst, int(count)])
        return None if wait is None else float(wait)
    with _local_lock:
        now = time.monotonic()
        tat = max(_local_tat.get(key, now), now)
        # Compared as "how far ahead", not as (tat + interval) - burst * interval against now:
        # that sum rounds, and a fresh key was refused by 4.5e-13 s once in CI.
        ahead = tat - now
        if ahead > (burst - 1) * interval:
            return ahead - (burst - 1) * interval
        if count:
            _local_tat[key] = tat + interval
        return None


def reset_local() -> None:
    """Forgets the in-process counters (tests; a restart does the same in production)."""
    with _local_lock:
        _local_tat.clear()


def retry_after_seconds(wait: float) -> int:
    """Whole seconds for a `retry_after` field: never 0, so clients do not spin."""
    return max(1, math.ceil(wait))
