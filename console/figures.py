"""The console's figures: one hunt's event at a glance, as a JSON-ready dict.

Each panel is one function and a handful of queries, every one of them bounded by an index or a
counter, so the whole stays fast on a big event (`bench_console` measures it with 10,000
players, 100,000 discoveries and 1,000,000 messages):

- per-minute counters (hunt.Activity) for messages and discoveries over time, never a count
  over the message table;
- `last_said_at` on conversations (indexed with the avatar) for active players and who talked
  to an avatar;
- the (word, player, found_at) index of discoveries, near misses by (clue, player), incidents
  by (hunt, time), replies by creation time, feedback copied with its avatar and model.

Message text is for superusers only (a reply can hold a word revealed to its player, and a
player's message is theirs): `stuck` carries texts only when `with_text` is true.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from avatars.models import Conversation, Feedback, Message, WorkerBeat
from hunt.claims import FAILED, MAX_CLAIM_COOLDOWN_SECONDS, cooling_until
from hunt.encoder import embed
from hunt.models import Activity, Claim, Clue, Discovery, Hunt, Incident, NearMiss, Player
from lostwallet.wire import iso_ms

TIMELINE_BUCKETS = 48  # points of the activity chart, whatever the event's length
STUCK_SAMPLE = 400  # newest near misses of a hunt read for the stuck-question groups
STUCK_GROUPS = 5  # groups shown per clue
SIMILAR_AT = 0.85  # cosine of sentence embeddings from which two stuck questions are one
ATTACK_WINDOW = timedelta(hours=24)
SERVICE_WINDOW = timedelta(minutes=10)


def console_figures(hunt: Hunt, *, with_text: bool) -> dict:
    now = timezone.now()
    # Read once for the funnel and the stuck panel, which both go clue by clue.
    clues = hunt_clues(hunt)
    near = near_miss_totals(clues)
    return {
        "hunt": hunt_header(hunt),
        "generated_at": iso_ms(now),
        "progress": progress(hunt, now, clues, near),
        "stuck": stuck(hunt, clues, near, with_text=with_text),
        "attacks": attacks(hunt, now),
        "service": service(now),
        "avatars": avatar_ratings(hunt),
    }


def hunt_header(hunt: Hunt) -> dict:
    return {
        "slug": hunt.slug,
        "title": hunt.title,
        "status": str(hunt.status),
        "paused": hunt.paused,
        "registration_open": hunt.registration_open,
        "starts_at": iso_ms(hunt.starts_at),
        "ends_at": iso_ms(hunt.ends_at),
        "winner": hunt.winner.name if hunt.winner_id else None,
    }


# Progress --------------------------------------------------------------------------------------


def hunt_clues(hunt: Hunt) -> list[Clue]:
    return list(Clue.objects.filter(word__hunt=hunt).select_related("word", "avatar"))


def progress(hunt: Hunt, now, clues: list[Clue], near: dict[int, dict]) -> dict:
    counters = Activity.objects.since(hunt, min(hunt.starts_at, now) - timedelta(minutes=1)).filter(
        minute__lte=now
    )
    recent = counters.filter(minute__gte=now - timedelta(minutes=5)).aggregate(
        n=Sum("messages", default=0)
    )["n"]
    return {
        "players": players(hunt, now),
        "messages_per_minute": round(recent / 5, 1),
        "timeline": timeline(counters, hunt.starts_at, min(now, hunt.ends_at)),
        "funnel": funnel(hunt, clues, near),
        "claims": claim_counts(hunt),
        "cooldowns": cooldowns(hunt, now),
        "recent_discoveries": recent_discoveries(hunt),
    }


def players(hunt: Hunt, now) -> dict:
    said = Conversation.objects.filter(avatar__hunt=hunt, player__hidden=False)

    def active(since) -> int:
        return said.filter(last_said_at__gte=since).values("player").distinct().count()

    return {
        "registered": Player.objects.filter(hidden=False).count(),
        "active_5m": active(now - timedelta(minutes=5)),
        "active_1h": active(now - timedelta(hours=1)),
    }


def timeline(counters: QuerySet[Activity], start, end) -> list[dict]:
    """The per-minute counters summed into at most TIMELINE_BUCKETS points from the start of
    the hunt to now (or its end); minutes before the start count in the first point, minutes
    after the last point's start in the last. Summed by the database in one row: reading a
    long event's thousands of minute rows back costs more in converting their dates than the
    sums do."""
    if end <= start:
        return []
    width = max((end - start) / TIMELINE_BUCKETS, timedelta(minutes=1))
    count = min(TIMELINE_BUCKETS, int((end - start) / width) + 1)
    starts = [start + i * width for i in range(count)]

    def within(i: int) -> Q | None:
        after = Q(minute__gte=starts[i]) if i > 0 else None
        before = Q(minute__lt=starts[i + 1]) if i < count - 1 else None
        return after & before if after and before else after or before

    sums = counters.aggregate(
        **{
            f"{field}_{i}": Sum(field, filter=within(i), default=0)
            for i in range(count)
            for field in ("messages", "discoveries")
        }
    )
    return [
        {
            "at": iso_ms(at),
            "messages": sums[f"messages_{i}"],
            "discoveries": sums[f"discoveries_{i}"],
        }
        for i, at in enumerate(starts)
    ]


def funnel(hunt: Hunt, clues: list[Clue], close: dict[int, dict]) -> list[dict]:
    """Per guarded word: players who talked to its avatar, came close to its clue (`close`,
    near_miss_totals), found it; and its first finder."""
    # Every conversation that said something, counted on the (avatar, last_said_at) index
    # alone, less the few of hidden players: joining every conversation to its player to
    # filter out hidden ones reads both tables whole.
    said = Conversation.objects.filter(
        avatar__in=[clue.avatar_id for clue in clues], last_said_at__isnull=False
    )
    talked = Counter(dict(said.values_list("avatar").annotate(n=Count("avatar"))))
    talked.subtract(
        dict(said.filter(player__hidden=True).values_list("avatar").annotate(n=Count("avatar")))
    )
    # Count("player") over the clues' words listed (not joined through the hunt): the
    # (word, player, found_at) index answers this alone, without the table.
    found = dict(
        Discovery.objects.filter(word__in=[clue.word_id for clue in clues])
        .values_list("word")
        .annotate(n=Count("player"))
    )
    firsts = {
        d.word_id: d
        for d in Discovery.objects.filter(word__hunt=hunt, first=True).select_related(
            "player__user"
        )
    }
    out = []
    for clue in clues:
        first = firsts.get(clue.word_id)
        out.append(
            {
                "clue": clue.pk,
                "position": clue.word.position,
                "avatar": clue.avatar.name,
                "talked": talked.get(clue.avatar_id, 0),
                "close": close.get(clue.pk, {}).get("players", 0),
                "found": found.get(clue.word_id, 0),
                "first_finder": first.player.name if first else None,
                "first_at": iso_ms(first.found_at) if first else None,
            }
        )
    return out


def claim_counts(hunt: Hunt) -> dict:
    counts = dict(Claim.objects.filter(hunt=hunt).values_list("result").annotate(n=Count("id")))
    return {result: counts.get(result, 0) for result in Claim.Result.values}


def cooldowns(hunt: Hunt, now) -> dict:
    """Players who may not claim now (hunt.claims.claim_wait, for everyone at once) and players
    for whom no clue opens now (their near-miss budget is spent)."""
    failed = (
        Claim.objects.filter(hunt=hunt, result__in=FAILED)
        .values("player")
        .annotate(n=Count("id"), last=Max("created_at"))
        .filter(last__gte=now - timedelta(seconds=MAX_CLAIM_COOLDOWN_SECONDS))
    )
    claims = sum(cooling_until(hunt, row["n"], row["last"]) > now for row in failed)
    gate = (
        NearMiss.objects.filter(hunt=hunt, cooldown_until__gt=now)
        .values("player")
        .distinct()
        .count()
    )
    return {"claims": claims, "gate": gate}


def recent_discoveries(hunt: Hunt, limit: int = 10) -> list[dict]:
    rows = (
        Discovery.objects.filter(word__hunt=hunt)
        .select_related("player__user", "word")
        .order_by("-found_at")[:limit]
    )
    return [
        {
            "id": d.pk,
            "position": d.word.position,
            "player": d.player.name,
            "first": d.first,
            "at": iso_ms(d.found_at),
        }
        for d in rows
    ]


# Where players are stuck -----------------------------------------------------------------------

_NOT_WORD = re.compile(r"[^\w']+")


def group_key(text: str) -> str:
    """A near miss's words, lowercased, in order: what its sentence embedding is taken of, so
    texts of the same words always share a group."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


def group_similar(nears: Iterable[tuple[str, float, int]]) -> list[dict]:
    """One clue's near misses, (text, score, id) newest first, in groups of the same question.
    Greedy: a near miss joins the first group whose first (newest) text it is as close to as
    SIMILAR_AT (cosine of sentence embeddings), else it starts a group. A group counts its near
    misses and keeps the best score; its `near_miss` is its first, for the add buttons."""
    groups: list[dict] = []
    firsts: list[np.ndarray] = []
    for text, score, near_miss in nears:
        vector = embed(group_key(text))
        at = next((i for i, v in enumerate(firsts) if float(v @ vector) >= SIMILAR_AT), None)
        if at is None:
            at = len(groups)
            firsts.append(vector)
            groups.append({"text": text, "count": 0, "best": 0.0, "near_miss": near_miss})
        groups[at]["count"] += 1
        groups[at]["best"] = round(max(groups[at]["best"], score), 3)
    return groups


def near_miss_totals(clues: list[Clue]) -> dict[int, dict]:
    """Near misses and players per clue. Filtered by clue rather than hunt (the same rows) and
    counting players rather than ids (never null), so the (clue, player) index answers it
    alone, in clue order, without reading the table."""
    return {
        row["clue"]: row
        for row in NearMiss.objects.filter(clue__in=clues)
        .values("clue")
        .annotate(near_misses=Count("player"), players=Count("player", distinct=True))
    }


def stuck(hunt: Hunt, clues: list[Clue], totals: dict[int, dict], *, with_text: bool) -> list[dict]:
    """Per clue: near misses and players (`totals`, near_miss_totals), and the newest near
    misses in groups of similar questions (group_similar) with counts. Texts (and the one-click
    "add as example" or "counterexample") only `with_text`: only then is the encoder loaded."""
    sampled: dict[int, list[tuple[str, float, int]]] = defaultdict(list)
    if with_text:
        sample = (
            NearMiss.objects.filter(hunt=hunt, message__isnull=False)
            .select_related("message")
            .order_by("-created_at")[:STUCK_SAMPLE]
        )
        for near in sample:
            sampled[near.clue_id].append((near.message.text, near.score, near.pk))
    out = []
    for clue in clues:
        total = totals.get(clue.pk, {})
        item = {
            "clue": clue.pk,
            "position": clue.word.position,
            "avatar": clue.avatar.name,
            "near_misses": total.get("near_misses", 0),
            "players": total.get("players", 0),
        }
        if with_text:
            groups = group_similar(sampled[clue.pk])
            ranked = sorted(groups, key=lambda g: (-g["count"], -g["best"]))
            item["groups"] = ranked[:STUCK_GROUPS]
        out.append(item)
    out.sort(key=lambda c: -c["near_misses"])
    return out


# Attacks ---------------------------------------------------------------------------------------


def attacks(hunt: Hunt, now) -> dict:
    """The last day's incidents: counts by kind, the newest, and the top offenders."""
    window = Incident.objects.filter(hunt=hunt, created_at__gte=now - ATTACK_WINDOW)
    counts = dict(window.values_list("kind").annotate(n=Count("id")))
    offenders = (
        window.filter(player__isnull=False)
        .values("player", "player__display_name", "player__user__username")
        .annotate(n=Count("id"), suspended=Max("player__suspended_at"))
        .order_by("-n")[:10]
    )
    addresses = (
        window.exclude(address="")
        .values("address")
        .annotate(n=Count("id"), players=Count("player", distinct=True))
        .order_by("-n")[:10]
    )
    recent = window.select_related("player__user").order_by("-created_at")[:15]
    return {
        "counts": {kind: counts.get(kind, 0) for kind in Incident.Kind.values},
        "offenders": [
            {
                "player": row["player"],
                "name": row["player__display_name"] or row["player__user__username"],
                "incidents": row["n"],
                "suspended": row["suspended"] is not None,
            }
            for row in offenders
        ],
        "addresses": [
            {"address": row["address"], "incidents": row["n"], "players": row["players"]}
            for row in addresses
        ],
        "recent": [
            {
                "kind": i.kind,
                "player": i.player.name if i.player_id else None,
                "address": i.address,
                "detail": i.detail,
                "at": iso_ms(i.created_at),
            }
            for i in recent
        ],
    }


# Service health --------------------------------------------------------------------------------


def percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def service(now) -> dict:
    """The generation service, all hunts together: one model serves them all."""
    since = now - SERVICE_WINDOW
    recent = Message.objects.filter(created_at__gte=since)
    waits = list(
        recent.filter(role=Message.Role.AVATAR, first_token_ms__isnull=False).values_list(
            "first_token_ms", flat=True
        )
    )
    alive_since = now - timedelta(seconds=WorkerBeat.ALIVE_SECONDS)
    workers = WorkerBeat.objects.filter(seen_at__gte=now - timedelta(hours=1))
    return {
        "waiting": Message.objects.waiting().count(),
        "ttft_ms": {"p50": percentile(waits, 50), "p95": percentile(waits, 95), "n": len(waits)},
        "failures": recent.filter(status=Message.Status.FAILED).count(),
        "window_minutes": int(SERVICE_WINDOW.total_seconds() // 60),
        "workers": [
            {
                "name": w.name,
                "model": w.model,
                "seen_at": iso_ms(w.seen_at),
                "alive": w.seen_at >= alive_since,
            }
            for w in workers
        ],
        "database": True,  # this answer came from it
        "redis": redis_reachable(),
    }


def redis_reachable() -> bool | None:
    """None when the server runs without Redis (the embedded demo)."""
    if not settings.REDIS_URL:
        return None
    import redis

    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


# Avatars ---------------------------------------------------------------------------------------


def avatar_ratings(hunt: Hunt) -> list[dict]:
    """Thumbs up and down per avatar, and per model that wrote the rated replies."""
    avatars = list(hunt.avatars.order_by("name"))
    # Filtered by the avatars' ids and counting values (never null), so the (avatar, model,
    # value) index answers it alone.
    rows = (
        Feedback.objects.filter(avatar__in=avatars)
        .values_list("avatar", "model")
        .annotate(up=Count("value", filter=Q(value=1)), down=Count("value", filter=Q(value=-1)))
    )
    per_avatar: dict[int, list] = defaultdict(list)
    for avatar_id, model, up, down in rows:
        per_avatar[avatar_id].append({"model": model or "unknown", "up": up, "down": down})
    out = []
    for avatar in avatars:
        models = sorted(per_avatar.get(avatar.pk, []), key=lambda m: m["model"])
        totals = Counter()
        for m in models:
            totals.update(up=m["up"], down=m["down"])
        rated = totals["up"] + totals["down"]
        out.append(
            {
                "slug": avatar.slug,
                "name": avatar.name,
                "up": totals["up"],
                "down": totals["down"],
                "up_rate": round(totals["up"] / rated, 3) if rated else None,
                "by_model": models,
            }
        )
    return out
