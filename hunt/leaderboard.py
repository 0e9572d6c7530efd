"""The leaderboard of a hunt: computed from discoveries, cached, invalidated on change.

On event day thousands of spectators poll the board or hold its WebSocket open while players
discover words a few times a minute, so reads must not reach the database per request. The
board is cached under a *generation* key: `invalidate_leaderboard(hunt_id)` (called after the
commit that changed the board) starts a new generation, and the next reader rebuilds it once.
While one process rebuilds, the others keep serving the previous board.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.db.models import Count, Max, Q
from django.utils import timezone

from hunt.models import Discovery, Hunt, Player, SeedWord
from lostwallet.wire import iso_ms

# Rows shown: the top of the board. Sending 10,000 rows to every spectator every second would
# cost more than the board is worth; players see their own count on their dashboard.
DEFAULT_ROWS = 100
# A safety net only: every change that matters invalidates explicitly. It bounds how long an
# organizer's out-of-band edit (hiding a player in the admin) takes to show.
CACHE_SECONDS = 300
REBUILD_LOCK_SECONDS = 10
# Slugs almost never change; a renamed or deleted hunt's board lingers this long at most.
SLUG_CACHE_SECONDS = 60


def _cache():
    """One cache backend object per process and configuration.

    Django's `cache` is per request context under ASGI, and a Redis backend object per request
    means a new connection pool, so a TCP connect, per board read. redis-py's pool is
    thread-safe, and LocMemCache objects of one location share their storage.
    """
    config = settings.CACHES[DEFAULT_CACHE_ALIAS]
    return _backend(config["BACKEND"], str(config.get("LOCATION", "")), config.get("KEY_PREFIX"))


@functools.cache
def _backend(backend: str, location: str, prefix: str | None):
    return caches.create_connection(DEFAULT_CACHE_ALIAS)


def group_name(hunt_id: int) -> str:
    return f"hunt.leaderboard.{hunt_id}"


def _keys(hunt_id: int) -> tuple[str, str, str]:
    prefix = f"leaderboard:{hunt_id}"
    return f"{prefix}:generation", f"{prefix}:latest", f"{prefix}:rebuild"


def invalidate_leaderboard(hunt_id: int) -> None:
    """Marks the cached board of a hunt stale; the next reader rebuilds it.

    Call it after the commit that changed the board (a discovery, a winning claim), e.g. in
    `transaction.on_commit`; calling it earlier lets a reader cache the pre-commit board.
    """
    generation_key, _latest, _lock = _keys(hunt_id)
    # A fresh random value rather than a counter: two invalidations at once both leave a
    # generation no reader has cached, with no read-modify-write to race on.
    _cache().set(generation_key, uuid.uuid4().hex, timeout=None)


# The event loop of this process's leaderboard sockets, recorded by their consumer. Without
# Redis the in-memory channel layer's queues belong to that loop: an event must be sent from it,
# not from the thread (a generation job, a web request) that made the change.
_socket_loop: asyncio.AbstractEventLoop | None = None
PUBLISH_TIMEOUT = 5


def register_socket_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _socket_loop
    _socket_loop = loop


def announce_leaderboard_change(hunt_id: int) -> None:
    """Invalidates the board and tells the live leaderboard sockets; call after commit (e.g.
    `transaction.on_commit(lambda: announce_leaderboard_change(hunt_id))`), from sync code."""
    invalidate_leaderboard(hunt_id)
    layer = get_channel_layer()
    if layer is None:
        return
    event = {"type": "leaderboard.changed", "hunt_id": hunt_id}
    if settings.REDIS_URL:
        # Redis carries it to the sockets of every web process; any loop may send it.
        async_to_sync(layer.group_send)(group_name(hunt_id), event)
        return
    loop = _socket_loop
    if loop is None or not loop.is_running():
        return  # no socket was ever opened in this process: nobody to tell
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group_name(hunt_id), event), loop)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not loop:  # waiting on the loop's own thread would block it forever
        future.result(timeout=PUBLISH_TIMEOUT)


def hunt_id_for_slug(slug: str) -> int | None:
    """The id of the hunt with this slug, cached briefly so board reads skip the database."""
    key = f"leaderboard:slug:{slug}"
    store = _cache()
    hunt_id = store.get(key)
    if hunt_id is None:
        hunt_id = Hunt.objects.filter(slug=slug).values_list("pk", flat=True).first()
        if hunt_id is not None:
            store.set(key, hunt_id, timeout=SLUG_CACHE_SECONDS)
    return hunt_id


def leaderboard_json(hunt_id: int) -> str:
    """The board as JSON text, `{"rows", "updated_at", "winner"}`, from the cache when fresh.

    Cached as text so that a read is one cache lookup and no serialization: REST answers send
    it as is and every socket frame reuses it (see `leaderboard_frame`).

    Race: a reader rebuilding from a snapshot taken just before an invalidation would store a
    stale board. It stores it under the generation it read first, which the invalidation has
    already replaced, so later readers never see it.
    """
    store = _cache()
    generation_key, latest_key, lock_key = _keys(hunt_id)
    generation = store.get(generation_key)
    if generation is None:
        store.add(generation_key, uuid.uuid4().hex, timeout=None)
        generation = store.get(generation_key)
    board_key = f"leaderboard:{hunt_id}:board:{generation}"
    text = store.get(board_key)
    if text is not None:
        return text
    # Dogpile: after each invalidation every reader misses at once. One takes the rebuild lock,
    # the others serve the previous board for the few milliseconds the rebuild takes.
    rebuilder = store.add(lock_key, 1, timeout=REBUILD_LOCK_SECONDS)
    if not rebuilder:
        stale = store.get(latest_key)
        if stale is not None:
            return stale
    try:
        text = json.dumps(compute_leaderboard(hunt_id))
        store.set_many({board_key: text, latest_key: text}, timeout=CACHE_SECONDS)
    finally:
        if rebuilder:
            store.delete(lock_key)
    return text


def leaderboard(hunt: Hunt) -> dict[str, Any]:
    """The board of a hunt as a dict (pages); see `leaderboard_json`."""
    return json.loads(leaderboard_json(hunt.pk))


def leaderboard_frame(hunt_id: int) -> str:
    """The socket frame `{"type": "leaderboard", "rows", "updated_at", "winner"}` as text,
    spliced from the cached JSON: a change reaches every spectator without one encode each."""
    return '{"type": "leaderboard", ' + leaderboard_json(hunt_id)[1:]


def compute_leaderboard(hunt_id: int, rows: int | None = None) -> dict[str, Any]:
    """The board straight from the database.

    Ranked by words found, then the earlier last discovery (who got there first), then the
    older account as a stable last resort. Staff, hidden and deactivated accounts are left out.
    Shaped for speed on 100,000 discoveries: the aggregate reads only the discovery table
    (through the `discovery_word_player_time` covering index), the few excluded players are
    one small subquery, and names are fetched for the top rows only.
    """
    limit = rows or getattr(settings, "LEADERBOARD_ROWS", DEFAULT_ROWS)
    word_ids = list(SeedWord.objects.filter(hunt_id=hunt_id).values_list("pk", flat=True))
    excluded = Player.objects.filter(
        Q(hidden=True) | Q(user__is_staff=True) | Q(user__is_active=False)
    ).values("pk")
    ranked = list(
        Discovery.objects.filter(word_id__in=word_ids)
        .exclude(player_id__in=excluded)
        .values("player_id")
        .annotate(words_found=Count("id"), last_found_at=Max("found_at"))
        .order_by("-words_found", "last_found_at", "player_id")[:limit]
    )
    names = {
        pk: display or username
        for pk, display, username in Player.objects.filter(
            pk__in=[row["player_id"] for row in ranked]
        ).values_list("pk", "display_name", "user__username")
    }
    board_rows = [
        {
            "rank": rank,
            "player": names[row["player_id"]],
            "words_found": row["words_found"],
            "last_found_at": iso_ms(row["last_found_at"]),
        }
        for rank, row in enumerate(ranked, start=1)
    ]
    return {"rows": board_rows, "updated_at": iso_ms(timezone.now()), "winner": winner_of(hunt_id)}


def winner_of(hunt_id: int) -> dict[str, Any] | None:
    """`{"player", "claimed_at"}` of the hunt's winner, read fresh, or None."""
    row = (
        Hunt.objects.filter(pk=hunt_id, winner__isnull=False)
        .values("winner__display_name", "winner__user__username", "won_at")
        .first()
    )
    if row is None:
        return None
    return {
        "player": row["winner__display_name"] or row["winner__user__username"],
        "claimed_at": iso_ms(row["won_at"]) if row["won_at"] else None,
    }
