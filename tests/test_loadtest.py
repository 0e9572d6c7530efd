"""The end-to-end load test command: players' scripts, the chart, and a tiny real run (Daphne,
Redis, a Celery worker, PostgreSQL) in which every acknowledged message is answered."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET

import pytest
from django.core.management import call_command

from avatars.management.commands import loadtest
from tests.conftest import DEMO_HUNT


def demo_avatar() -> dict:
    return json.loads(DEMO_HUNT.read_text())["avatars"][0]


def test_a_player_greets_first_then_asks_mostly_clue_questions():
    lines = loadtest.script_lines(demo_avatar())
    rng = random.Random(1)
    kinds = [loadtest.next_line(rng, lines, turn)[0] for turn in range(400)]
    assert kinds[0] == "greeting"
    assert "greeting" not in kinds[1:]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert counts["clue"] > counts["near_miss"] > counts["attack"] > 0


def test_clue_questions_and_near_misses_come_from_the_hunt_file():
    avatar = demo_avatar()
    lines = loadtest.script_lines(avatar)
    assert set(avatar["clues"][0]["questions"]) <= set(lines["clue"])
    assert set(avatar["clues"][0]["counterexamples"]) <= set(lines["near_miss"])


def step(players: int, ttft50: float | None, ttft95: float | None) -> dict:
    return {
        "players": players,
        "ttft_p50_s": ttft50,
        "ttft_p95_s": ttft95,
        "full_p50_s": None if ttft50 is None else ttft50 * 3,
        "full_p95_s": None if ttft95 is None else ttft95 * 3,
    }


def test_the_chart_draws_each_latency_against_players():
    report = {
        "model": "m",
        "workers": 2,
        "affinity": "on",
        "players_per_worker": 4.0,
        "ttft_target_p95_s": 3.0,
        "steps": [step(2, 0.5, 0.9), step(4, 0.8, 1.9), step(8, 2.0, 5.5), step(12, None, None)],
    }
    svg = ET.fromstring(loadtest.chart_svg(report))
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 4
    # The steps with replies only, ordered by players: x grows along each line.
    for line in lines:
        xs = [float(p.split(",")[0]) for p in line.get("points").split()]
        assert len(xs) == 3 and xs == sorted(xs)
    # Higher latency is drawn higher (smaller y) than the p50 of the same step.
    p50 = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    p95 = [float(p.split(",")[1]) for p in lines[1].get("points").split()]
    assert all(high < low for high, low in zip(p95, p50, strict=True))


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_tiny_run_answers_every_acknowledged_message(tmp_path, settings, monkeypatch):
    from tests.conftest import require_postgres, require_redis, test_database_url

    require_postgres()
    url = require_redis()
    # The command starts its processes with this process's environment.
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("DATABASE_URL", test_database_url())
    settings.REDIS_URL = url
    out = tmp_path / "run.json"
    chart = tmp_path / "run.svg"
    call_command(
        "loadtest",
        workers=1,
        affinity="on",
        players="1,3",
        step_seconds=12,
        think=1.0,
        reconnect=1.0,  # every turn: the path must be taken however few turns there are
        drain=90,
        model="tiny-random",
        max_new_tokens=8,
        json_path=str(out),
        chart=str(chart),
    )
    report = json.loads(out.read_text())
    assert [s["players"] for s in report["steps"]] == [1, 3]
    assert report["acked"] > 0
    assert report["answered"] > 0
    assert report["acked_never_answered"] == 0
    assert report["reconnects"] > 0
    assert sum(report["turns_by_worker"].values()) >= report["answered"]
    assert report["prefix_cache_share"] is not None
    assert chart.read_text().startswith("<svg")


def test_players_served_is_the_largest_step_within_the_target_without_refusals():
    steps = [
        {**step(2, 0.5, 0.9), "refused_by_code": {}},
        {**step(4, 0.8, 1.9), "refused_by_code": {}},
        {**step(6, 0.9, 2.5), "refused_by_code": {"overloaded": 1}},
        {**step(8, 2.0, 5.5), "refused_by_code": {}},
    ]
    assert loadtest.players_served(steps, 2.0) == 4
    assert loadtest.players_served(steps, 6.0) == 8
    assert loadtest.players_served(steps, 0.5) == 0
