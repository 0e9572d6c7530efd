"""Open WebSockets counted per account and per client address, across every Daphne process.

An open socket holds a place under each of its keys (`user:<id>`, `address:<address>`), up to
WS_MAX_PER_USER and WS_MAX_PER_ADDRESS places per key. With REDIS_URL a key is a Redis sorted
set of sockets scored by when their place expires, and taking the places is one Lua script, so
two sockets racing for the last place cannot both get it; without it a lock-guarded dict serves
the single process. A refused socket takes no place under any key.

Places expire: a socket renews its places every RENEW seconds while it is open and gives them
back when it closes, and a place not renewed for TTL seconds no longer counts. So a Daphne
process that dies without closing its sockets frees their places by itself a few minutes later.
A plain counter (incr on open, decr on close) would keep them forever, and a TTL on the whole
counter would forget the live sockets along with the dead ones. Renewing on a timer rather
than on the client's frames keeps idle sockets counted: an address could otherwise hold any
number of silent sockets.

Both apps' sockets use this module, which is why it lives here: `hunt` never imports `avatars`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from functools import cache

from asgiref.sync import sync_to_async
from django.conf import settings

from lostwallet.addresses import bucket

logger = logging.getLogger(__name__)

TTL = 180
RENEW = 60

# KEYS: the socket's keys; ARGV[1]: the socket, ARGV[2]: TTL, ARGV[2 + i]: the limit of KEYS[i].
# Returns 1 when every key had room (the socket now holds a place under each), else 0.
_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', key, ARGV[2])
end
return 1
"""

# KEYS: the socket's keys; ARGV[1]: the socket, ARGV[2]: TTL. A place that expired meanwhile (a
# stalled event loop) is taken again: the socket is open, so it counts.
_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', key, ARGV[2])
end
"""

_local_lock = threading.Lock()
_local: dict[str, dict[str, float]] = {}  # key -> socket -> when its place expires


@cache
def _redis(url: str):
    import redis

    client = redis.Redis.from_url(url)
    return client, client.register_script(_TAKE_LUA), client.register_script(_RENEW_LUA)


def address_of(scope: dict) -> str | None:
    """The client address a socket is counted under; None when the server names none (a unix
    socket, a test client). The one place that says which address a socket comes from."""
    client = scope.get("client")
    # scope["client"] is already the real client (lostwallet.middleware.ClientAddressMiddleware);
    # IPv6 clients are counted per /64, which one of them holds whole.
    return bucket(client[0]) if client else None


def socket_limits(scope: dict, *, per_user: bool = True) -> dict[str, int]:
    """The keys a socket is counted under, with their limits."""
    limits = {}
    user = scope.get("user")
    if per_user and user is not None and user.is_authenticated:
        limits[f"user:{user.pk}"] = settings.WS_MAX_PER_USER
    address = address_of(scope)
    if address is not None:
        limits[f"address:{address}"] = settings.WS_MAX_PER_ADDRESS
    return limits


def _live_places(key: str, now: float) -> dict[str, float]:
    places = _local.setdefault(key, {})
    for socket in [s for s, expires in places.items() if expires <= now]:
        del places[socket]
    return places


def take(socket: str, limits: dict[str, int]) -> bool:
    """Gives `socket` a place under every key of `limits`; False, and no place anywhere, when
    some key already holds its limit of live places."""
    if not limits:
        return True
    if settings.REDIS_URL:
        _client, take_script, _renew = _redis(settings.REDIS_URL)
        keys = [f"sockets:{key}" for key in limits]
        return bool(take_script(keys=keys, args=[socket, TTL, *limits.values()]))
    with _local_lock:
        now = time.monotonic()
        places = [_live_places(key, now) for key in limits]
        if any(len(held) >= limit for held, limit in zip(places, limits.values(), strict=True)):
            return False
        for held in places:
            held[socket] = now + TTL
        return True


def renew(socket: str, keys: list[str]) -> None:
    """Keeps the places of an open socket from expiring for another TTL seconds."""
    if not keys:
        return
    if settings.REDIS_URL:
        _client, _take, renew_script = _redis(settings.REDIS_URL)
        renew_script(keys=[f"sockets:{key}" for key in keys], args=[socket, TTL])
        return
    with _local_lock:
        for key in keys:
            _local.setdefault(key, {})[socket] = time.monotonic() + TTL


def give_back(socket: str, keys: list[str]) -> None:
    """Frees the places of a closing socket."""
    if not keys:
        return
    if settings.REDIS_URL:
        client, _take, _renew = _redis(settings.REDIS_URL)
        with client.pipeline() as pipe:
            for key in keys:
                pipe.zrem(f"sockets:{key}", socket)
            pipe.execute()
        return
    with _local_lock:
        for key in keys:
            _local.get(key, {}).pop(socket, None)


def reset_local() -> None:
    """Forgets the in-process places (tests; a restart does the same in production)."""
    with _local_lock:
        _local.clear()


class Places:
    """The places of one socket, for its consumer: `await take()` in connect (False: refuse
    the socket), `await give_back()` in disconnect. Renews them on a timer in between."""

    def __init__(self, socket: str, limits: dict[str, int]) -> None:
        self.socket, self.limits = socket, limits
        self._renewing: asyncio.Task | None = None

    async def take(self) -> bool:
        # Off the event loop, on any thread: a Redis round trip must not stall other sockets.
        taken = await sync_to_async(take, thread_sensitive=False)(self.socket, self.limits)
        if taken:
            self._renewing = asyncio.ensure_future(self._renew())
        return taken

    async def give_back(self) -> None:
        if self._renewing is None:
            return  # never taken
        self._renewing.cancel()
        self._renewing = None
        await sync_to_async(give_back, thread_sensitive=False)(self.socket, list(self.limits))

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW)
            try:
                await sync_to_async(renew, thread_sensitive=False)(self.socket, list(self.limits))
            except Exception:
                # The next renewal tries again; meanwhile the places live on for TTL.
                logger.exception("renewing the socket places of %s failed", self.socket)
