"""The leaderboard (contract §2): ranking, exclusions, the cache and its invalidation, the page."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import override_settings

from avatars.hunt_files import import_hunt_document
from hunt import leaderboard as lb
from hunt.api import LeaderboardOut
from hunt.claims import do_claim
from hunt.models import Hunt, Player
from lostwallet.wire import iso_ms
from tests.conftest import DEMO_HUNT
from tests.hunt_helpers import (
    demo_phrase,
    discover,
    find_every_word,
    guarded_positions,
    minutes_ago,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]


def board(client, hunt: Hunt) -> dict:
    response = client.get(f"/api/v1/hunts/{hunt.slug}/leaderboard")
    assert response.status_code == 200
    return response.json()


def names(body: dict) -> list[str]:
    return [row["player"] for row in body["rows"]]


@pytest.fixture
def positions(demo_hunt) -> list[int]:
    return guarded_positions(demo_hunt)


def test_it_ranks_by_words_found_then_by_the_earlier_last_discovery(
    client, demo_hunt, make_player, positions
):
    ann, bea, cid = make_player("ann"), make_player("bea"), make_player("cid")
    discover(ann, demo_hunt, positions[0], minutes_ago(50))
    discover(bea, demo_hunt, positions[0], minutes_ago(40))
    discover(bea, demo_hunt, positions[1], minutes_ago(10))
    discover(cid, demo_hunt, positions[1], minutes_ago(30))
    discover(cid, demo_hunt, positions[2], minutes_ago(20))
    body = board(client, demo_hunt)
    # cid and bea both have two words; cid got there first (20 min ago against 10).
    assert names(body) == ["cid", "bea", "ann"]
    assert [(r["rank"], r["words_found"]) for r in body["rows"]] == [(1, 2), (2, 2), (3, 1)]
    assert set(body["rows"][0]) == {"rank", "player", "words_found", "last_found_at"}
    # The wire's one format: UTC, milliseconds, Z.
    for time in (body["rows"][0]["last_found_at"], body["updated_at"]):
        assert time == iso_ms(datetime.fromisoformat(time))
    assert body["winner"] is None
    # Served from the cache as text: it still matches the documented schema.
    assert LeaderboardOut.model_validate(body).rows[0].words_found == 2


def test_it_shows_display_names_and_is_readable_without_login(
    client, demo_hunt, make_player, positions
):
    player = make_player("dana")
    player.display_name = "Dana the Bold"
    player.save()
    discover(player, demo_hunt, positions[0])
    assert names(board(client, demo_hunt)) == ["Dana the Bold"]


def test_staff_hidden_and_deactivated_accounts_are_left_out(
    client, demo_hunt, make_player, positions
):
    visible = make_player("visible")
    staff = make_player("staff", is_staff=True)
    hidden = make_player("hidden")
    Player.objects.filter(pk=hidden.pk).update(hidden=True)
    gone = make_player("gone")
    get_user_model().objects.filter(pk=gone.user_id).update(is_active=False)
    # A staff account whose player row was made before it became staff is still left out.
    Player.objects.filter(pk=staff.pk).update(hidden=False)
    for player in (visible, staff, hidden, gone):
        discover(player, demo_hunt, positions[0])
    assert names(board(client, demo_hunt)) == ["visible"]


def test_discoveries_of_another_hunt_do_not_count(client, demo_hunt, make_player, positions):
    doc = json.loads(DEMO_HUNT.read_text())
    doc["slug"] = "second"
    for avatar in doc["avatars"]:
        avatar["slug"] = "second-" + avatar["slug"]
    second = import_hunt_document(doc)
    ann, bea = make_player("ann"), make_player("bea")
    discover(ann, demo_hunt, positions[0])
    discover(bea, second, positions[0])
    discover(bea, second, positions[1])
    assert names(board(client, demo_hunt)) == ["ann"]
    assert names(board(client, second)) == ["bea"]


@override_settings(LEADERBOARD_ROWS=2)
def test_it_shows_the_top_rows_only(client, demo_hunt, make_player, positions):
    for i in range(4):
        discover(make_player(f"p{i}"), demo_hunt, positions[0], minutes_ago(10 - i))
    assert names(board(client, demo_hunt)) == ["p0", "p1"]


def test_a_cached_board_costs_no_query(
    client, demo_hunt, make_player, positions, django_assert_num_queries
):
    discover(make_player("ann"), demo_hunt, positions[0])
    first = board(client, demo_hunt)
    # Neither the hunt's id nor the board needs the database once cached.
    with django_assert_num_queries(0):
        again = board(client, demo_hunt)
    assert again == first


def test_a_discovery_shows_after_invalidation(client, demo_hunt, make_player, positions):
    ann = make_player("ann")
    discover(ann, demo_hunt, positions[0])
    assert names(board(client, demo_hunt)) == ["ann"]
    discover(make_player("bea"), demo_hunt, positions[0], minutes_ago(5))
    discover(Player.objects.get(user__username="bea"), demo_hunt, positions[1], minutes_ago(4))
    # Until invalidated, readers get the cached board (the point of caching it)...
    assert names(board(client, demo_hunt)) == ["ann"]
    lb.invalidate_leaderboard(demo_hunt.pk)
    # ...and right after, the new one.
    assert names(board(client, demo_hunt)) == ["bea", "ann"]


def test_a_board_built_before_an_invalidation_is_never_served_after_it(
    demo_hunt, make_player, positions, monkeypatch
):
    """The race of leaderboard(): a rebuild reading the old data while a discovery commits."""
    ann = make_player("ann")
    real_compute = lb.compute_leaderboard

    def compute_then_discovery_commits(hunt_id, rows=None):
        stale = real_compute(hunt_id, rows)
        discover(ann, demo_hunt, positions[0])
        lb.invalidate_leaderboard(hunt_id)
        return stale

    monkeypatch.setattr(lb, "compute_leaderboard", compute_then_discovery_commits)
    assert lb.leaderboard(demo_hunt)["rows"] == []
    monkeypatch.setattr(lb, "compute_leaderboard", real_compute)
    assert [r["player"] for r in lb.leaderboard(demo_hunt)["rows"]] == ["ann"]


def test_while_one_reader_rebuilds_the_others_get_the_previous_board(
    demo_hunt, make_player, positions, django_assert_num_queries
):
    discover(make_player("ann"), demo_hunt, positions[0])
    previous = lb.leaderboard(demo_hunt)
    lb.invalidate_leaderboard(demo_hunt.pk)
    _generation, _latest, lock = lb._keys(demo_hunt.pk)
    cache.add(lock, 1)  # another process is rebuilding
    with django_assert_num_queries(0):
        assert lb.leaderboard(demo_hunt) == previous
    cache.delete(lock)
    assert lb.leaderboard(demo_hunt)["updated_at"] >= previous["updated_at"]


def test_announcing_a_change_invalidates_the_board(client, demo_hunt, make_player, positions):
    board(client, demo_hunt)
    discover(make_player("ann"), demo_hunt, positions[0])
    lb.announce_leaderboard_change(demo_hunt.pk)
    assert names(board(client, demo_hunt)) == ["ann"]


def test_the_winner_is_announced_on_the_board(client, demo_hunt, make_player, positions):
    ann = make_player("ann")
    discover(ann, demo_hunt, positions[0])
    board(client, demo_hunt)
    Hunt.objects.filter(pk=demo_hunt.pk).update(winner=ann, won_at=minutes_ago(1))
    lb.invalidate_leaderboard(demo_hunt.pk)
    winner = board(client, demo_hunt)["winner"]
    assert winner["player"] == "ann" and winner["claimed_at"].endswith("Z")
    page = client.get(f"/hunts/{demo_hunt.slug}/leaderboard/")
    assert "ann opened the wallet!" in page.content.decode()


def test_the_leaderboard_page_renders_the_board_and_the_socket_path(
    client, demo_hunt, make_player, positions
):
    discover(make_player("ann"), demo_hunt, positions[0])
    page = client.get(f"/hunts/{demo_hunt.slug}/leaderboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<td>ann</td>" in html
    assert f'data-ws-path="/ws/hunts/{demo_hunt.slug}/leaderboard/"' in html
    assert "js/leaderboard.js" in html


def test_the_leaderboard_page_of_an_unknown_hunt_is_404(client):
    assert client.get("/hunts/nope/leaderboard/").status_code == 404


def test_a_winning_claim_announces_the_change_after_commit(
    demo_hunt, make_player, monkeypatch, django_capture_on_commit_callbacks
):
    announced: list[int] = []
    monkeypatch.setattr("hunt.claims.announce_leaderboard_change", announced.append)
    with django_capture_on_commit_callbacks() as callbacks:
        ann = find_every_word(make_player("ann"), demo_hunt)
        assert do_claim(demo_hunt, ann, demo_phrase()) == "winner"
        assert announced == []  # not before the commit
    for callback in callbacks:
        callback()
    assert announced == [demo_hunt.pk]
