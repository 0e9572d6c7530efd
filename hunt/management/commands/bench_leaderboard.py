"""Benchmark of the leaderboard on event-day data: 10,000 players, 100,000 discoveries.

By default the data goes into a throwaway hunt inside one transaction that is rolled back at
the end, so the configured database is left as it was; requests go through Django's whole
request stack (URL routing, middleware, ninja, JSON) with the test client. `--hunt SLUG` measures
an existing hunt instead, and `--url` sends the requests over HTTP to a running server.
"""

from __future__ import annotations

import json
import random
import statistics
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from hunt import leaderboard as lb
from hunt.models import PHRASE_LENGTH, Discovery, Hunt, Player, SeedWord


class _Rollback(Exception):
    """Raised at the end of the run to roll the generated data back."""


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": ordered[-1],
    }


class Command(BaseCommand):
    help = "Generate 10,000 players and 100,000 discoveries, then time leaderboard answers."

    def add_arguments(self, parser):
        parser.add_argument("--players", type=int, default=10_000)
        parser.add_argument("--discoveries", type=int, default=100_000)
        parser.add_argument("--requests", type=int, default=2_000, help="cached requests timed")
        parser.add_argument("--cold", type=int, default=30, help="rebuilds timed (and naive)")
        parser.add_argument(
            "--churn-every",
            type=int,
            default=50,
            help="in the churn scenario, one invalidation (a discovery) every N requests",
        )
        parser.add_argument("--hunt", help="measure this existing hunt; generate nothing")
        parser.add_argument("--keep", action="store_true", help="commit the generated data")
        parser.add_argument(
            "--url", help="base URL of a running server, e.g. http://127.0.0.1:8000"
        )
        parser.add_argument("--json", help="also write the results to this file")
        parser.add_argument("--seed", type=int, default=6)

    def handle(self, *args, **opts):
        if opts["url"] and not (opts["hunt"] or opts["keep"]):
            raise CommandError("--url needs data the server can see: use --hunt or --keep.")
        if opts["hunt"]:
            hunt = Hunt.objects.filter(slug=opts["hunt"]).first()
            if hunt is None:
                raise CommandError(f"No hunt {opts['hunt']!r}.")
            self.run(hunt, opts)
            return
        hunt = None
        try:
            with transaction.atomic():
                hunt = self.generate(opts)
                self.run(hunt, opts)
                if not opts["keep"]:
                    raise _Rollback
        except _Rollback:
            self.stdout.write("Generated data rolled back.")
        finally:
            if hunt is not None and not opts["keep"]:
                # The rolled-back id may be reused by a real hunt: leave no board behind.
                lb.invalidate_leaderboard(hunt.pk)
                cache.delete(lb._keys(hunt.pk)[1])

    def generate(self, opts) -> Hunt:
        rng = random.Random(opts["seed"])
        n_players, n_disc = opts["players"], opts["discoveries"]
        if n_disc > n_players * PHRASE_LENGTH:
            raise CommandError("At most 24 discoveries per player.")
        started = time.perf_counter()
        now = timezone.now()
        # Random, not from the seeded generator: a kept run must not block the next one.
        tag = f"bench-{uuid.uuid4().hex[:8]}"
        hunt = Hunt.objects.create(
            slug=tag,
            title="Leaderboard benchmark",
            starts_at=now - timedelta(days=10),
            ends_at=now + timedelta(days=10),
            phrase_hash="!",
            registration_open=False,
        )
        words = SeedWord.objects.bulk_create(
            SeedWord(hunt=hunt, position=p, world="bench") for p in range(1, PHRASE_LENGTH + 1)
        )
        User = get_user_model()
        # "!" is Django's unusable password: these accounts can never sign in.
        users = User.objects.bulk_create(
            (
                User(username=f"{tag}-{i}", password="!", is_staff=(i % 200 == 0))
                for i in range(n_players)
            ),
            batch_size=2000,
        )
        if not users[0].pk:  # backends that do not return ids from bulk inserts
            users = list(User.objects.filter(username__startswith=f"{tag}-").order_by("pk"))
        players = Player.objects.bulk_create(
            (
                Player(user=u, display_name=f"Player {i}", hidden=(i % 150 == 0))
                for i, u in enumerate(users)
            ),
            batch_size=2000,
        )
        if not players[0].pk:
            players = list(Player.objects.filter(user__username__startswith=f"{tag}-"))
        # Skewed like a real hunt: a few players find most words, most find a handful.
        pairs: set[tuple[int, int]] = set()
        while len(pairs) < n_disc:
            player = players[min(int(rng.paretovariate(1.2)) - 1, n_players - 1)]
            if rng.random() < 0.7:
                player = rng.choice(players)
            pairs.add((player.pk, words[rng.randrange(PHRASE_LENGTH)].pk))
        span = 10 * 24 * 3600
        Discovery.objects.bulk_create(
            (
                Discovery(
                    player_id=player_id,
                    word_id=word_id,
                    found_at=now - timedelta(seconds=rng.randrange(span)),
                )
                for player_id, word_id in pairs
            ),
            batch_size=5000,
        )
        staff = sum(u.is_staff for u in users)
        hidden = sum(p.hidden for p in players)
        self.stdout.write(
            f"Generated hunt {tag!r}: {n_players:,} players ({staff} staff, {hidden} hidden), "
            f"{n_disc:,} discoveries in {time.perf_counter() - started:.1f} s "
            f"on {connection.vendor}."
        )
        return hunt

    def run(self, hunt: Hunt, opts) -> None:
        path = f"/api/v1/hunts/{hunt.slug}/leaderboard"
        get = self._http_get(opts["url"], path) if opts["url"] else self._client_get(path)

        def timed(fn: Callable[[], object], n: int, before: Callable[[], None] | None = None):
            samples = []
            for _ in range(n):
                if before:
                    before()
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1000)
            return samples

        def invalidate() -> None:
            lb.invalidate_leaderboard(hunt.pk)

        # Over HTTP, this process can only invalidate the server's board through a shared cache.
        can_invalidate = not opts["url"] or bool(settings.REDIS_URL)
        results = {}
        # The naive way: the grouped query on every request, no cache.
        lb.compute_leaderboard(hunt.pk)  # warm the database's own caches first
        results["naive query (no cache)"] = timed(
            lambda: lb.compute_leaderboard(hunt.pk), opts["cold"]
        )
        # A rebuild: the first request after a discovery (query + caching + HTTP).
        get()
        if can_invalidate:
            results["REST, first after a change"] = timed(get, opts["cold"], before=invalidate)
        # Event day: spectators poll the cached board.
        for _ in range(200):
            get()
        results["REST, cached"] = timed(get, opts["requests"])
        # Event day with discoveries landing: one invalidation every N requests.
        counter = iter(range(10**9))

        def churn() -> None:
            if next(counter) % opts["churn_every"] == 0:
                invalidate()

        if can_invalidate:
            results[f"REST, 1 change per {opts['churn_every']} requests"] = timed(
                get, opts["requests"], before=churn
            )
        else:
            self.stdout.write(
                "No REDIS_URL: the server's cache is out of reach; cached reads only."
            )
        board = lb.leaderboard(hunt)
        self.report(hunt, results, board, opts)

    def _client_get(self, path: str) -> Callable[[], object]:
        hosts = [h for h in settings.ALLOWED_HOSTS if h and h[0] not in ".*["]
        client = Client(SERVER_NAME=hosts[0] if hosts else "localhost")

        def get():
            response = client.get(path)
            if response.status_code != 200:
                raise CommandError(f"{path} answered {response.status_code}")
            return response

        return get

    def _http_get(self, base: str, path: str) -> Callable[[], object]:
        url = base.rstrip("/") + path

        def get():
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.read()

        return get

    def report(self, hunt: Hunt, results: dict[str, list[float]], board: dict, opts) -> None:
        rows = {name: percentiles(samples) for name, samples in results.items()}
        width = max(len(name) for name in rows)
        self.stdout.write("")
        self.stdout.write(
            f"{'scenario':<{width}}  {'n':>6}  {'p50 ms':>8}  {'p95 ms':>8}  {'p99 ms':>8}  "
            f"{'max ms':>8}"
        )
        for name, r in rows.items():
            self.stdout.write(
                f"{name:<{width}}  {r['n']:>6}  {r['p50']:>8.2f}  {r['p95']:>8.2f}  "
                f"{r['p99']:>8.2f}  {r['max']:>8.2f}"
            )
        cached_p95 = rows["REST, cached"]["p95"]
        verdict = "met" if cached_p95 <= 50 else "NOT met"
        self.stdout.write(
            f"\nGoal p95 <= 50 ms after warm-up: {verdict} ({cached_p95:.2f} ms). "
            f"Board: {len(board['rows'])} rows, leader {board['rows'][0]['player']!r} with "
            f"{board['rows'][0]['words_found']} words. "
            f"Cache: {settings.CACHES['default']['BACKEND']}."
            if board["rows"]
            else f"\nGoal p95 <= 50 ms after warm-up: {verdict}."
        )
        if opts["json"]:
            with open(opts["json"], "w") as fp:
                json.dump({"hunt": hunt.slug, "database": connection.vendor, **rows}, fp, indent=2)
