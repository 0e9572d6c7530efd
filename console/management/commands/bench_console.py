"""Benchmark of the organizers' console on event-day data: 10,000 players, 100,000 discoveries,
1,000,000 messages (issue 15: the figures endpoint's p95 at most 100 ms on PostgreSQL).

Seeding a million messages takes minutes, so unlike bench_leaderboard the data is kept: the hunt
`bench-console` (live, two days in), its accounts (usernames `bench-console-…`) and rows. A
second run reuses it when it was seeded at the same size; `--reseed` starts over. The rows are
those two days would leave: conversations with a few avatars each, question-and-reply pairs
(replies with their model and wait), discoveries made by replies, near misses, incidents,
feedback, claims, worker beats, and the per-minute counters computed from those rows. On
PostgreSQL the big tables are written with COPY; elsewhere with batched INSERTs of the same rows,
so the command runs anywhere at small sizes (the test suite runs it on SQLite).

Measured, through Django's whole request stack with the test client, for a superuser (texts)
and for an organizer named in the hunt (counts):
- the `console-figures` endpoint as served: answered from the cache while a background refresh
  runs after every poll (CONSOLE_CACHE_SECONDS=0), the acceptance number;
- the same endpoint with the cache emptied before each request, so the figures are computed in
  it (a console's first poll): how heavy the figures themselves are;
- each panel of console/figures.py alone, so a slow one shows;
- a naive baseline: the headline figures counted straight from the raw rows, as a first
  implementation would, with the ratio naive/console; its answers must equal the console's.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from itertools import islice

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import connection, transaction
from django.db.models import Count, Max, Q
from django.db.models.functions import TruncMinute
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from avatars.models import Avatar, Conversation, Feedback, Message, WorkerBeat
from console import figures
from hunt import crypto
from hunt.management.commands.bench_leaderboard import percentiles
from hunt.models import (
    PHRASE_LENGTH,
    Activity,
    Claim,
    Clue,
    Discovery,
    Hunt,
    Incident,
    NearMiss,
    Player,
    SeedWord,
)
from lostwallet.wire import iso_ms

SLUG = "bench-console"
PREFIX = "bench-console-"  # of the benchmark's usernames, avatar slugs and worker names
GOAL_MS = 100
WARM_UPS = 3
HOURS = 48  # how long the hunt has been running
AVATARS = 7
MODELS = ("SmolLM2-135M-Instruct", "SmolLM2-360M-Instruct")
MODEL_SWITCH = timedelta(hours=30)  # replies after this much of the hunt come from MODELS[1]
QUESTIONS = [
    "Where did you last see the {}?",
    "What keeps the {} safe at night?",
    "Who gave you the {}?",
    "Is the {} older than the harbour?",
    "tell me about the {}",
    "What colour is the {} when it rains?",
    "Why do the sailors fear the {}?",
    "Can I borrow the {} for a day?",
]
THINGS = ["lamp", "compass", "key", "map", "bell", "anchor", "lantern", "coin", "rope", "chest"]
REPLIES = [
    "The sea keeps its own counsel, traveller.",
    "Ask me again when the tide is low.",
    "I have heard stories, but stories are cheap.",
    "Perhaps the lighthouse keeper knows more than I do.",
    "That is a question for another day.",
    "Follow the gulls; they always know the way home.",
]
INCIDENTS = {  # kind: (weight, detail)
    Incident.Kind.ATTACK: (50, "injection"),
    Incident.Kind.RATE_LIMITED: (30, "chat"),
    Incident.Kind.GUARD: (12, "reply redacted"),
    Incident.Kind.FLOOD: (7, "frames"),
    Incident.Kind.SUSPENDED: (1, "by organizer"),
}
CLAIMS = {Claim.Result.WRONG: 80, Claim.Result.INVALID: 17, Claim.Result.CORRECT: 3}


SEEDED = [Conversation, Message, Discovery, Activity, NearMiss, Feedback, Incident, Claim, Player]


def size_label(opts) -> str:
    """What the hunt's description records, so a later run knows whether it can reuse it."""
    sizes = ("players", "discoveries", "messages", "near_misses", "incidents", "feedback", "claims")
    return f"Benchmark data: {', '.join(f'{opts[s]} {s}' for s in sizes)}, seed {opts['seed']}."


def batched(rows: Iterable, size: int) -> Iterator[list]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def naive_figures(hunt: Hunt, now: datetime) -> dict:
    """The console's headline figures the way a first implementation reads them: counted over
    the raw rows on every request (messages joined through conversation, avatar and hunt,
    feedback through its message), with none of the counters or copied columns."""
    said = Message.objects.filter(conversation__avatar__hunt=hunt, role=Message.Role.PLAYER)
    per_minute: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    for minute, n in (
        said.annotate(minute=TruncMinute("created_at"))
        .values_list("minute")
        .annotate(n=Count("id"))
    ):
        per_minute[minute][0] += n
    for minute, n in (
        Discovery.objects.filter(word__hunt=hunt)
        .annotate(minute=TruncMinute("found_at"))
        .values_list("minute")
        .annotate(n=Count("id"))
    ):
        per_minute[minute][1] += n
    # Folded in Python, point by point, as a first version would: a reckoning independent of
    # the console's, which the agreement check compares.
    end = min(now, hunt.ends_at)
    width = max((end - hunt.starts_at) / figures.TIMELINE_BUCKETS, timedelta(minutes=1))
    count = min(figures.TIMELINE_BUCKETS, int((end - hunt.starts_at) / width) + 1)
    timeline = [
        {"at": iso_ms(hunt.starts_at + i * width), "messages": 0, "discoveries": 0}
        for i in range(count)
    ]
    for minute, (messages, discoveries) in per_minute.items():
        point = timeline[min(max(int((minute - hunt.starts_at) / width), 0), count - 1)]
        point["messages"] += messages
        point["discoveries"] += discoveries
    visible = said.filter(conversation__player__hidden=False)

    def active(since) -> int:
        return (
            visible.filter(created_at__gte=since).values("conversation__player").distinct().count()
        )

    ratings = (
        Feedback.objects.filter(message__conversation__avatar__hunt=hunt)
        .values_list("message__conversation__avatar__slug", "message__model")
        .annotate(up=Count("id", filter=Q(value=1)), down=Count("id", filter=Q(value=-1)))
    )
    return {
        "messages_per_minute": round(
            said.filter(created_at__gte=now - timedelta(minutes=5)).count() / 5, 1
        ),
        "active_5m": active(now - timedelta(minutes=5)),
        "active_1h": active(now - timedelta(hours=1)),
        "timeline": timeline,
        "talked": dict(
            visible.values_list("conversation__avatar__name").annotate(
                n=Count("conversation__player", distinct=True)
            )
        ),
        "found": dict(
            SeedWord.objects.filter(hunt=hunt)
            .values_list("position")
            .annotate(n=Count("discoveries"))
        ),
        "ratings": sorted(ratings),
    }


def console_headlines(hunt: Hunt, now: datetime) -> dict:
    """The figures naive_figures recomputes, as the console's panels give them."""
    clues = figures.hunt_clues(hunt)
    progress = figures.progress(hunt, now, clues, figures.near_miss_totals(clues))
    return {
        "active_5m": progress["players"]["active_5m"],
        "active_1h": progress["players"]["active_1h"],
        "timeline": progress["timeline"],
        "talked": {f["avatar"]: f["talked"] for f in progress["funnel"] if f["talked"]},
        "found": {f["position"]: f["found"] for f in progress["funnel"]},
        "ratings": sorted(
            (a["slug"], m["model"], m["up"], m["down"])
            for a in figures.avatar_ratings(hunt)
            for m in a["by_model"]
        ),
    }


class Command(BaseCommand):
    help = "Seed a big live hunt (kept for later runs), then time the console's figures."

    def add_arguments(self, parser):
        parser.add_argument("--players", type=int, default=10_000)
        parser.add_argument("--discoveries", type=int, default=100_000)
        parser.add_argument("--messages", type=int, default=1_000_000)
        parser.add_argument("--near-misses", type=int, default=50_000)
        parser.add_argument("--incidents", type=int, default=20_000)
        parser.add_argument("--feedback", type=int, default=50_000)
        parser.add_argument("--claims", type=int, default=5_000)
        parser.add_argument("--rounds", type=int, default=30, help="timed requests per scenario")
        parser.add_argument("--naive-rounds", type=int, default=5, help="naive baseline runs")
        parser.add_argument("--reseed", action="store_true", help="seed again even if seeded")
        parser.add_argument("--json", help="also write the results to this file")
        parser.add_argument("--seed", type=int, default=15)

    def handle(self, *args, **opts):
        label = size_label(opts)
        hunt = Hunt.objects.filter(slug=SLUG).first()
        seed_seconds = None
        if hunt is not None and hunt.description == label and not opts["reseed"]:
            age = (timezone.now() - hunt.created_at).total_seconds() / 60
            self.stdout.write(
                f"Reusing hunt {SLUG!r} seeded {age:.0f} min ago ({label}). Its last minutes "
                "are quieter than a live event's: --reseed for a fresh one."
            )
        else:
            started = time.perf_counter()
            with transaction.atomic():
                if hunt is not None:
                    self.drop(hunt)
                hunt = Seeder(opts, self.stdout).seed(label)
            if connection.vendor == "postgresql":
                # As autovacuum leaves a table some time after a big write: statistics for the
                # planner, and the visibility map that lets an index answer without the table.
                # VACUUM cannot run in a transaction (the test suite's): ANALYZE alone there.
                tables = ", ".join(m._meta.db_table for m in SEEDED)
                verb = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
                with connection.cursor() as cursor:
                    cursor.execute(f"{verb} {tables}")
            seed_seconds = round(time.perf_counter() - started, 1)
            self.stdout.write(f"Seeded in {seed_seconds} s on {connection.vendor}.")
        self.measure(hunt, opts, seed_seconds)

    def drop(self, hunt: Hunt) -> None:
        """Deletes the benchmark's rows with a few set-wise DELETEs: the ORM's cascade would
        first load every one of a million messages."""
        avatars = f"SELECT id FROM {Avatar._meta.db_table} WHERE hunt_id = %s"
        conversations = (
            f"SELECT id FROM {Conversation._meta.db_table} WHERE avatar_id IN ({avatars})"
        )
        words = f"SELECT id FROM {SeedWord._meta.db_table} WHERE hunt_id = %s"
        deletes = [
            (Feedback, f"avatar_id IN ({avatars})"),
            (NearMiss, "hunt_id = %s"),
            (Incident, "hunt_id = %s"),
            (Claim, "hunt_id = %s"),
            (Activity, "hunt_id = %s"),
            (Discovery, f"word_id IN ({words})"),
            (Message, f"conversation_id IN ({conversations})"),
            (Conversation, f"avatar_id IN ({avatars})"),
        ]
        with connection.cursor() as cursor:
            for model, where in deletes:
                cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE {where}", [hunt.pk])
        hunt.delete()
        get_user_model().objects.filter(username__startswith=PREFIX).delete()
        WorkerBeat.objects.filter(name__startswith=PREFIX).delete()

    # Measurement ---------------------------------------------------------------------------

    def measure(self, hunt: Hunt, opts, seed_seconds: float | None) -> None:
        User = get_user_model()
        path = reverse("console-figures", args=[hunt.slug])
        hosts = [h for h in settings.ALLOWED_HOSTS if h and h[0] not in ".*["]
        clients = {}
        for who in ("superuser", "organizer"):
            client = Client(SERVER_NAME=hosts[0] if hosts else "localhost")
            client.force_login(User.objects.get(username=PREFIX + who))
            clients[who] = client

        def get(who: str) -> Callable[[], object]:
            def fetch():
                response = clients[who].get(path)
                if response.status_code != 200:
                    raise CommandError(f"{path} answered {response.status_code} to the {who}")
                return response

            return fetch

        def computed(fetch: Callable[[], object]) -> Callable[[], object]:
            def fetch_computed():
                cache.clear()
                return fetch()

            return fetch_computed

        rounds = opts["rounds"]
        endpoint = {}
        # Computed: nothing cached, so the request works the figures out (a console's first
        # poll, the first after an action): how heavy the figures are.
        for who in clients:
            endpoint[f"endpoint, {who}, computed"] = timed(computed(get(who)), rounds)
        with CaptureQueriesContext(connection) as queries:
            computed(get("superuser"))()
        # As served: polls answered from the cache while the figures are refreshed in the
        # background. CONSOLE_CACHE_SECONDS=0 starts a refresh after every poll, so one is
        # always running beside them (in this process: they share its interpreter lock), the
        # most a console refreshes.
        with override_settings(CONSOLE_CACHE_SECONDS=0):
            for who in clients:
                endpoint[f"endpoint, {who}, as served"] = timed(get(who), rounds)

        now = timezone.now()
        clues = figures.hunt_clues(hunt)
        near = figures.near_miss_totals(clues)
        panels = {
            "clues and near-miss totals": lambda: figures.near_miss_totals(
                figures.hunt_clues(hunt)
            ),
            "progress (whole panel)": lambda: figures.progress(hunt, now, clues, near),
            "progress: players": lambda: figures.players(hunt, now),
            "progress: funnel": lambda: figures.funnel(hunt, clues, near),
            "progress: claims": lambda: figures.claim_counts(hunt),
            "progress: cooldowns": lambda: figures.cooldowns(hunt, now),
            "progress: recent discoveries": lambda: figures.recent_discoveries(hunt),
            "stuck, with texts": lambda: figures.stuck(hunt, clues, near, with_text=True),
            "stuck, counts only": lambda: figures.stuck(hunt, clues, near, with_text=False),
            "attacks": lambda: figures.attacks(hunt, now),
            "service": lambda: figures.service(now),
            "avatars": lambda: figures.avatar_ratings(hunt),
        }
        panel_times = {name: timed(fn, rounds) for name, fn in panels.items()}

        naive = timed(lambda: naive_figures(hunt, now), opts["naive_rounds"], warm_ups=1)
        headlines = console_headlines(hunt, now)
        naive_answer = naive_figures(hunt, now)
        agrees = {key: naive_answer[key] for key in headlines} == headlines
        self.report(hunt, opts, seed_seconds, endpoint, panel_times, naive, len(queries), agrees)

    def report(self, hunt, opts, seed_seconds, endpoint, panel_times, naive, queries, agrees):
        rows = {name: percentiles(s) for name, s in endpoint.items()}
        panels = {name: percentiles(s) for name, s in panel_times.items()}
        naive_row = percentiles(naive)
        computed = [r for name, r in rows.items() if name.endswith("computed")]
        console_p50 = max(r["p50"] for r in computed)
        console_p95 = max(r["p95"] for r in computed)
        ratio = {"p50": naive_row["p50"] / console_p50, "p95": naive_row["p95"] / console_p95}
        size = {
            "players": Player.objects.filter(user__username__startswith=PREFIX).count(),
            "discoveries": Discovery.objects.filter(word__hunt=hunt).count(),
            "messages": Message.objects.filter(conversation__avatar__hunt=hunt).count(),
            "near_misses": NearMiss.objects.filter(hunt=hunt).count(),
            "incidents": Incident.objects.filter(hunt=hunt).count(),
            "feedback": Feedback.objects.filter(avatar__hunt=hunt).count(),
            "claims": Claim.objects.filter(hunt=hunt).count(),
        }
        self.stdout.write("\n" + ", ".join(f"{n:,} {name}" for name, n in size.items()))
        self.table("scenario", {**rows, "naive baseline (headline figures)": naive_row})
        self.table("panel (called directly)", panels)
        self.stdout.write(
            f"\nQueries per computed request: {queries}. Naive/console (computed, worse "
            f"audience): {ratio['p50']:.1f}x at p50, {ratio['p95']:.1f}x at p95. "
            f"Naive and console figures agree: {'yes' if agrees else 'NO'}."
        )
        served_p95 = max(r["p95"] for name, r in rows.items() if name.endswith("as served"))
        met = served_p95 <= GOAL_MS
        if opts["json"]:
            with open(opts["json"], "w") as fp:
                json.dump(
                    {
                        "hunt": hunt.slug,
                        "database": connection.vendor,
                        "size": size,
                        "seed_seconds": seed_seconds,
                        "queries_per_request": queries,
                        "endpoint": rows,
                        "panels": panels,
                        "naive": naive_row,
                        "ratio_naive_to_console": ratio,
                        "naive_agrees": agrees,
                        "goal_p95_ms": GOAL_MS,
                        "computed_p95_ms": console_p95,
                        "served_p95_ms": served_p95,
                        "met": met,
                    },
                    fp,
                    indent=2,
                )
        self.stdout.write(
            f"figures computed in the request: p95 = {console_p95:.1f} ms\n"
            f"console endpoint as served p95 = {served_p95:.1f} ms (goal ≤ {GOAL_MS} ms): "
            f"{'met' if met else 'not met'}"
        )

    def table(self, title: str, rows: dict[str, dict]) -> None:
        width = max(len(title), *(len(name) for name in rows))
        self.stdout.write(
            f"\n{title:<{width}}  {'n':>4}  {'p50 ms':>8}  {'p95 ms':>8}  {'max ms':>8}"
        )
        for name, r in rows.items():
            self.stdout.write(
                f"{name:<{width}}  {r['n']:>4}  {r['p50']:>8.2f}  {r['p95']:>8.2f}  "
                f"{r['max']:>8.2f}"
            )


def timed(fn: Callable[[], object], n: int, warm_ups: int = WARM_UPS) -> list[float]:
    for _ in range(warm_ups):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


class Seeder:
    """Writes the benchmark hunt: plans every row in memory from one random generator, then
    writes each table in one pass."""

    def __init__(self, opts, stdout):
        self.opts = opts
        self.stdout = stdout
        self.rng = random.Random(opts["seed"])
        self.now = timezone.now()
        self.start = self.now - timedelta(hours=HOURS)
        # Fernet sealing costs tens of microseconds a text: each distinct text is sealed once
        # and its token reused by every row that says it (identical ciphertexts are harmless
        # here, and a million sealings would dominate the seeding time).
        self.questions = [crypto.seal_text(q.format(t)) for q in QUESTIONS for t in THINGS]
        self.replies = [crypto.seal_text(r) for r in REPLIES]

    def seed(self, label: str) -> Hunt:
        hunt = Hunt.objects.create(
            slug=SLUG,
            title="Console benchmark",
            description=label,
            starts_at=self.start,
            ends_at=self.now + timedelta(hours=24),
            phrase_hash="!",
            registration_open=False,
        )
        players = self.accounts(hunt)
        words = []
        for position in range(1, PHRASE_LENGTH + 1):
            word = SeedWord(hunt=hunt, position=position, world="bench")
            word.set_word(THINGS[position % len(THINGS)] + str(position))
            words.append(word)
        SeedWord.objects.bulk_create(words)
        Avatar.objects.bulk_create(
            Avatar(hunt=hunt, slug=f"{PREFIX}{i}", name=f"Avatar {i}", persona="A benchmark.")
            for i in range(AVATARS)
        )
        avatars = list(Avatar.objects.filter(hunt=hunt).order_by("slug"))
        Clue.objects.bulk_create(
            Clue(avatar=avatars[(w.position - 1) % AVATARS], word=w, questions=["?"])
            for w in SeedWord.objects.filter(hunt=hunt)
        )
        clues = defaultdict(list)  # avatar id -> [(clue id, word id)]
        for clue_id, avatar_id, word_id in Clue.objects.filter(word__hunt=hunt).values_list(
            "pk", "avatar", "word"
        ):
            clues[avatar_id].append((clue_id, word_id))
        self.plan_conversations(players, [a.pk for a in avatars])
        self.plan_turns()
        self.write_conversations()
        self.write_messages()
        found = self.write_discoveries(clues)
        self.write_activity(hunt, found)
        self.write_near_misses(hunt, clues)
        self.write_feedback()
        self.write_incidents(hunt, players)
        self.write_claims(hunt, players)
        WorkerBeat.objects.bulk_create(
            WorkerBeat(
                name=f"{PREFIX}worker:{i}",
                model=MODELS[1],
                started_at=self.start,
                seen_at=self.now - timedelta(seconds=5 if i < 2 else 1200),
            )
            for i in range(3)
        )
        with connection.cursor() as cursor:
            for sql in connection.ops.sequence_reset_sql(no_style(), [Conversation, Message]):
                cursor.execute(sql)
        return hunt

    def accounts(self, hunt: Hunt) -> list[tuple[int, bool]]:
        """The organizers who watch and the players; (player id, hidden) of each player."""
        User = get_user_model()
        # "!" is Django's unusable password: these accounts can never sign in.
        User.objects.create(
            username=PREFIX + "superuser", password="!", is_staff=True, is_superuser=True
        )
        hunt.organizers.add(
            User.objects.create(username=PREFIX + "organizer", password="!", is_staff=True)
        )
        n = self.opts["players"]
        User.objects.bulk_create(
            (User(username=f"{PREFIX}{i}", password="!") for i in range(n)), batch_size=2000
        )
        users = User.objects.filter(username__startswith=PREFIX, is_staff=False).values_list(
            "pk", flat=True
        )
        # About 1% hidden: testers and staff with a player profile, left out of counts.
        Player.objects.bulk_create(
            (Player(user_id=pk, hidden=i % 97 == 0) for i, pk in enumerate(users)),
            batch_size=2000,
        )
        return list(
            Player.objects.filter(user__username__startswith=PREFIX)
            .order_by("pk")
            .values_list("pk", "hidden")
        )

    def plan_conversations(self, players: list[tuple[int, bool]], avatars: list[int]) -> None:
        """Each player talks to a few avatars, the popular ones more often."""
        rng = self.rng
        popularity = [AVATARS - i for i in range(AVATARS)]
        self.conversations: list[tuple[int, int]] = []  # (player id, avatar id)
        for player_id, _hidden in players:
            k = rng.choices(range(1, AVATARS + 1), weights=[10, 14, 18, 18, 16, 14, 10])[0]
            talked = set()
            while len(talked) < k:
                talked.add(rng.choices(avatars, weights=popularity)[0])
            self.conversations.extend((player_id, a) for a in sorted(talked))

    def plan_turns(self) -> None:
        """A turn is a player's message and its reply, at a time over the hunt's two days; the
        newest few wait for their reply. Turns sorted by time get ids in that order."""
        rng, n = self.rng, self.opts["messages"]
        self.waiting = min(16, n // 100)
        self.waiting += (n - self.waiting) % 2
        self.answered = (n - self.waiting) // 2
        turns = self.answered + self.waiting
        span = (self.now - self.start).total_seconds() - 10
        # Talkative players and avatars: a conversation's share of turns is heavy-tailed.
        weights = [rng.paretovariate(1.5) for _ in self.conversations]
        conv = rng.choices(range(len(self.conversations)), weights=weights, k=turns)
        offsets = sorted(rng.random() * span for _ in range(turns))
        self.turn_conv = conv
        self.turn_time = [self.start + timedelta(seconds=s) for s in offsets]
        self.turn_ttft = [int(rng.lognormvariate(math.log(700), 0.5)) for _ in range(turns)]
        self.failed = set(rng.sample(range(self.answered), self.answered // 200))
        self.conv_turns: list[list[int]] = [[] for _ in self.conversations]
        for i, c in enumerate(conv[: self.answered]):
            self.conv_turns[c].append(i)
        self.conv_base = next_id(Conversation)
        self.message_base = next_id(Message)

    def question_id(self, turn: int) -> int:
        if turn < self.answered:
            return self.message_base + 2 * turn
        return self.message_base + self.answered + turn

    def reply_id(self, turn: int) -> int:
        return self.message_base + 2 * turn + 1

    def reply_time(self, turn: int) -> datetime:
        return self.turn_time[turn] + timedelta(milliseconds=self.turn_ttft[turn])

    def model(self, turn: int) -> str:
        return MODELS[self.turn_time[turn] - self.start >= MODEL_SWITCH]

    def write_conversations(self) -> None:
        first: dict[int, datetime] = {}
        last: dict[int, datetime] = {}
        for i, c in enumerate(self.turn_conv):
            first.setdefault(c, self.turn_time[i])
            last[c] = self.turn_time[i]  # turns are in time order
        write_rows(
            Conversation,
            [
                "id",
                "player",
                "avatar",
                "sandbox",
                "summary",
                "last_said_at",
                "created_at",
                "updated_at",
            ],
            (
                (
                    self.conv_base + c,
                    player_id,
                    avatar_id,
                    False,
                    "",
                    last.get(c),
                    first.get(c, self.start),
                    last.get(c, self.start),
                )
                for c, (player_id, avatar_id) in enumerate(self.conversations)
            ),
            len(self.conversations),
            self.stdout,
        )

    def write_messages(self) -> None:
        rng = self.rng

        def rows():
            for i in range(self.answered + self.waiting):
                conv = self.conv_base + self.turn_conv[i]
                question = rng.choice(self.questions)
                if i >= self.answered:
                    yield (
                        self.question_id(i),
                        conv,
                        "player",
                        question,
                        "pending",
                        None,
                        None,
                        "",
                        self.turn_time[i],
                    )
                    continue
                status = "failed" if i in self.failed else "done"
                yield (
                    self.question_id(i),
                    conv,
                    "player",
                    question,
                    status,
                    None,
                    None,
                    "",
                    self.turn_time[i],
                )
                yield (
                    self.reply_id(i),
                    conv,
                    "avatar",
                    "" if status == "failed" else rng.choice(self.replies),
                    status,
                    self.question_id(i),
                    None if status == "failed" else self.turn_ttft[i],
                    self.model(i),
                    self.reply_time(i),
                )

        write_rows(
            Message,
            [
                "id",
                "conversation",
                "role",
                "text",
                "status",
                "reply_to",
                "first_token_ms",
                "model",
                "created_at",
            ],
            rows(),
            self.opts["messages"],
            self.stdout,
        )

    def write_discoveries(self, clues: dict[int, list[tuple[int, int]]]) -> list[datetime]:
        """Words found by replies: at most once per (player, word), the earliest finder of a
        word first. Returns the times, for the counters."""
        candidates = [
            (c, clue_id, word_id)
            for c, (_player, avatar_id) in enumerate(self.conversations)
            if self.conv_turns[c]
            for clue_id, word_id in clues[avatar_id]
        ]
        n = self.opts["discoveries"]
        if n > len(candidates):
            raise CommandError(
                f"{n:,} discoveries need more conversations: at most {len(candidates):,} here "
                "(raise --players or --messages)."
            )
        found = []
        for c, clue_id, word_id in self.rng.sample(candidates, n):
            turn = self.rng.choice(self.conv_turns[c])
            found.append((self.reply_time(turn), self.conversations[c][0], word_id, clue_id, turn))
        found.sort()
        firsts = set()
        rows = []
        for at, player_id, word_id, clue_id, turn in found:
            first = word_id not in firsts
            firsts.add(word_id)
            rows.append((player_id, word_id, clue_id, self.reply_id(turn), first, at))
        write_rows(
            Discovery,
            ["player", "word", "clue", "message", "first", "found_at"],
            rows,
            n,
            self.stdout,
        )
        return [row[-1] for row in rows]

    def write_activity(self, hunt: Hunt, found: list[datetime]) -> None:
        """The per-minute counters, computed from the rows just planned: what Activity.bump
        would have added as they were written."""
        messages = Counter(minute_of(t) for t in self.turn_time)
        discoveries = Counter(minute_of(t) for t in found)
        minutes = sorted(messages.keys() | discoveries.keys())
        write_rows(
            Activity,
            ["hunt", "minute", "messages", "discoveries"],
            ((hunt.pk, m, messages[m], discoveries[m]) for m in minutes),
            len(minutes),
            self.stdout,
        )

    def write_near_misses(self, hunt: Hunt, clues: dict[int, list[tuple[int, int]]]) -> None:
        rng, n = self.rng, self.opts["near_misses"]
        cooldown = timedelta(seconds=hunt.gate_cooldown_seconds)

        def rows():
            for turn in rng.choices(range(self.answered), k=n):
                player_id, avatar_id = self.conversations[self.turn_conv[turn]]
                at = self.turn_time[turn]
                # One near miss in gate_attempts ends a player's budget and starts a cooldown.
                until = at + cooldown if rng.random() < 1 / hunt.gate_attempts else None
                yield (
                    hunt.pk,
                    rng.choice(clues[avatar_id])[0],
                    player_id,
                    self.question_id(turn),
                    round(rng.uniform(0.55, 0.8), 3),
                    until,
                    at,
                )

        write_rows(
            NearMiss,
            ["hunt", "clue", "player", "message", "score", "cooldown_until", "created_at"],
            rows(),
            n,
            self.stdout,
        )

    def write_feedback(self) -> None:
        rng = self.rng
        picked = rng.sample(range(self.answered), min(self.opts["feedback"], self.answered))
        rated = [turn for turn in picked if turn not in self.failed]  # a failed reply has no text

        def rows():
            for turn in rated:
                player_id, avatar_id = self.conversations[self.turn_conv[turn]]
                value = 1 if rng.random() < 0.7 else -1
                yield (
                    self.reply_id(turn),
                    player_id,
                    value,
                    avatar_id,
                    self.model(turn),
                    self.reply_time(turn) + timedelta(seconds=20),
                )

        write_rows(
            Feedback,
            ["message", "player", "value", "avatar", "model", "created_at"],
            rows(),
            len(rated),
            self.stdout,
        )

    def random_time(self) -> datetime:
        return self.start + timedelta(seconds=self.rng.random() * HOURS * 3600)

    def offender(self, players: list[tuple[int, bool]]) -> int:
        """A few players make most trouble."""
        return players[min(int(self.rng.paretovariate(1.1)) - 1, len(players) - 1)][0]

    def write_incidents(self, hunt: Hunt, players: list[tuple[int, bool]]) -> None:
        rng, n = self.rng, self.opts["incidents"]
        kinds = list(INCIDENTS)
        weights = [INCIDENTS[k][0] for k in kinds]

        def rows():
            for kind in rng.choices(kinds, weights=weights, k=n):
                player = self.offender(players) if rng.random() < 0.9 else None
                address = f"198.51.100.{rng.randrange(1, 255)}" if rng.random() < 0.8 else ""
                yield (hunt.pk, kind, player, address, INCIDENTS[kind][1], self.random_time())

        write_rows(
            Incident,
            ["hunt", "kind", "player", "address", "detail", "created_at"],
            rows(),
            n,
            self.stdout,
        )

    def write_claims(self, hunt: Hunt, players: list[tuple[int, bool]]) -> None:
        rng, n = self.rng, self.opts["claims"]

        def rows():
            for result in rng.choices(list(CLAIMS), weights=list(CLAIMS.values()), k=n):
                yield (hunt.pk, self.offender(players), result, self.random_time())

        write_rows(Claim, ["hunt", "player", "result", "created_at"], rows(), n, self.stdout)


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def next_id(model) -> int:
    return (model.objects.aggregate(m=Max("pk"))["m"] or 0) + 1


def write_rows(model, fields: list[str], rows: Iterable[tuple], total: int, stdout) -> None:
    """Writes `rows` (values of `fields`, as stored) into the model's table: COPY on
    PostgreSQL, batched INSERTs elsewhere. Not through the ORM: bulk_create would seal the
    already sealed texts again and overwrite the auto_now dates the rows must keep."""
    ops = connection.ops
    table = ops.quote_name(model._meta.db_table)
    columns = ", ".join(ops.quote_name(model._meta.get_field(f).column) for f in fields)
    name = model._meta.verbose_name_plural
    started = time.perf_counter()
    step = max(total // 10, 1)

    def progress(done: int) -> None:
        if total >= 100_000 and done % step == 0:
            stdout.write(f"  {name}: {done:,} / {total:,} ({time.perf_counter() - started:.0f} s)")

    done = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    done += 1
                    progress(done)
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
            for batch in batched(rows, 1000):
                cursor.executemany(sql, [[adapt(v) for v in row] for row in batch])
                done += len(batch)
    stdout.write(f"  {name}: {done:,} written in {time.perf_counter() - started:.1f} s")


def adapt(value):
    """A value as the database driver takes it outside the ORM (SQLite stores naive UTC)."""
    if isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    return value
