"""bench_console at a tiny size: it seeds a consistent hunt, prints its figures and writes its
JSON. No timing is asserted: speed is the benchmark's to measure, on PostgreSQL at full size."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.db.models import Max, Sum

from avatars.models import Conversation, Feedback, Message
from hunt.models import Activity, Discovery, Hunt

pytestmark = pytest.mark.django_db

TINY = {
    "players": 30,
    "discoveries": 60,
    "messages": 400,
    "near_misses": 50,
    "incidents": 40,
    "feedback": 30,
    "claims": 20,
    "rounds": 2,
    "naive_rounds": 1,
}


@pytest.fixture
def bench(tmp_path, capsys):
    """Runs the command at the tiny size; returns (printed output, written JSON)."""

    def run(**extra) -> tuple[str, dict]:
        path = tmp_path / "bench.json"
        call_command("bench_console", json=str(path), **TINY, **extra)
        return capsys.readouterr().out, json.loads(path.read_text())

    return run


def test_it_prints_every_scenario_panel_and_the_verdict(bench):
    out, _ = bench()
    for line in (
        "endpoint, superuser, computed",
        "endpoint, organizer, computed",
        "endpoint, superuser, as served",
        "endpoint, organizer, as served",
        "naive baseline (headline figures)",
        "progress: funnel",
        "stuck, with texts",
        "Queries per computed request:",
        "Naive and console figures agree: yes",
    ):
        assert line in out
    assert out.strip().splitlines()[-2].startswith("figures computed in the request: p95 = ")
    assert out.strip().splitlines()[-1].startswith("console endpoint as served p95 = ")
    assert "(goal ≤ 100 ms):" in out.strip().splitlines()[-1]


def test_it_writes_all_numbers_to_the_json_file(bench):
    _, numbers = bench()
    assert {
        "hunt",
        "database",
        "size",
        "seed_seconds",
        "queries_per_request",
        "endpoint",
        "panels",
        "naive",
        "ratio_naive_to_console",
        "naive_agrees",
        "goal_p95_ms",
        "computed_p95_ms",
        "served_p95_ms",
        "met",
    } <= set(numbers)
    assert numbers["size"] == {
        "players": 30,
        "discoveries": 60,
        "messages": 400,
        "near_misses": 50,
        "incidents": 40,
        "feedback": numbers["size"]["feedback"],  # rated replies that failed are skipped
        "claims": 20,
    }
    assert 0 < numbers["size"]["feedback"] <= 30
    assert set(numbers["endpoint"]["endpoint, superuser, computed"]) >= {"p50", "p95", "max"}
    assert numbers["endpoint"]["endpoint, superuser, computed"]["n"] == 2
    assert numbers["naive_agrees"] is True


def test_its_counters_match_the_seeded_messages_and_discoveries(bench):
    bench()
    hunt = Hunt.objects.get(slug="bench-console")
    said = Message.objects.filter(conversation__avatar__hunt=hunt, role=Message.Role.PLAYER)
    totals = Activity.objects.filter(hunt=hunt).aggregate(m=Sum("messages"), d=Sum("discoveries"))
    assert totals["m"] == said.count()
    assert totals["d"] == Discovery.objects.filter(word__hunt=hunt).count() == 60


def test_its_rows_hang_together(bench):
    bench()
    hunt = Hunt.objects.get(slug="bench-console")
    # Every reply answers a player message of its own conversation, with a model and a wait.
    replies = Message.objects.filter(conversation__avatar__hunt=hunt, role=Message.Role.AVATAR)
    assert replies.exists()
    for reply in replies.select_related("reply_to"):
        assert reply.reply_to.role == Message.Role.PLAYER
        assert reply.reply_to.conversation_id == reply.conversation_id
        assert reply.model
        assert reply.created_at >= reply.reply_to.created_at
        assert (reply.first_token_ms is None) == (reply.status == Message.Status.FAILED)
    # Texts are sealed at rest and read in clear.
    assert not replies.first().text.startswith("sealed:")
    # A conversation's last_said_at is its newest player message.
    newest = dict(
        Message.objects.filter(conversation__avatar__hunt=hunt, role=Message.Role.PLAYER)
        .values_list("conversation")
        .annotate(at=Max("created_at"))
    )
    for conversation in Conversation.objects.filter(avatar__hunt=hunt):
        assert conversation.last_said_at == newest.get(conversation.pk)
    # One first finder per word, the earliest one.
    for word in hunt.words.filter(discoveries__isnull=False).distinct():
        found = word.discoveries.order_by("found_at")
        assert [d.first for d in found] == [True] + [False] * (found.count() - 1)
    # Feedback carries its reply's avatar and model.
    for feedback in Feedback.objects.filter(avatar__hunt=hunt).select_related(
        "message__conversation"
    ):
        assert feedback.avatar_id == feedback.message.conversation.avatar_id
        assert feedback.model == feedback.message.model


def test_a_second_run_reuses_the_seeded_hunt_and_reseed_starts_over(bench):
    bench()
    first = Hunt.objects.get(slug="bench-console").pk
    out, numbers = bench()
    assert "Reusing hunt 'bench-console'" in out
    assert numbers["seed_seconds"] is None
    assert Hunt.objects.get(slug="bench-console").pk == first
    out, numbers = bench(reseed=True)
    assert numbers["seed_seconds"] is not None
    assert Hunt.objects.get(slug="bench-console").pk != first
    assert numbers["size"]["messages"] == 400  # the old rows went with the old hunt
