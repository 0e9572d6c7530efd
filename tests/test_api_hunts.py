"""REST reads (contract §2): hunts, one hunt with the caller's words, avatars, progress, docs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from avatars.hunt_files import import_hunt_document
from avatars.models import Avatar
from hunt.models import ApiToken, Hunt
from lostwallet.wire import iso_ms
from tests.conftest import DEMO_HUNT
from tests.hunt_helpers import bearer, demo_phrase, discover, guarded_positions

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]


@pytest.fixture
def owner(make_player, demo_hunt):
    """A player who found the first two guarded words of the demo hunt."""
    player = make_player("owner")
    for position in guarded_positions(demo_hunt)[:2]:
        discover(player, demo_hunt, position)
    return player


def test_it_lists_hunts_with_their_status(client, demo_hunt):
    Hunt.objects.filter(pk=demo_hunt.pk).update(slug="now")
    now = timezone.now()
    for slug, start in [("soon", now + timedelta(days=1)), ("past", now - timedelta(days=9))]:
        Hunt.objects.create(
            slug=slug, title=slug, starts_at=start, ends_at=start + timedelta(days=2)
        )
    response = client.get("/api/v1/hunts")
    assert response.status_code == 200
    rows = {row["slug"]: row for row in response.json()}
    assert {slug: row["status"] for slug, row in rows.items()} == {
        "now": "live",
        "soon": "upcoming",
        "past": "ended",
    }
    assert set(rows["now"]) == {"slug", "title", "status", "paused", "starts_at", "ends_at"}
    assert rows["now"]["paused"] is False
    assert rows["now"]["starts_at"] == iso_ms(demo_hunt.starts_at)


def test_times_have_milliseconds_even_on_a_whole_second(client, demo_hunt):
    Hunt.objects.filter(pk=demo_hunt.pk).update(starts_at=datetime(2026, 1, 1, tzinfo=UTC))
    [row] = client.get("/api/v1/hunts").json()
    assert row["starts_at"] == "2026-01-01T00:00:00.000Z"


def test_a_stranger_sees_the_hunt_but_no_word(client, demo_hunt, owner):
    response = client.get(f"/api/v1/hunts/{demo_hunt.slug}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "slug",
        "title",
        "description",
        "status",
        "paused",
        "starts_at",
        "ends_at",
        "prize",
        "words",
        "winner",
    }
    assert body["status"] == "live" and body["winner"] is None
    assert [w["position"] for w in body["words"]] == list(range(1, 25))
    assert all(w["found"] is False and w["word"] is None for w in body["words"])
    assert not set(demo_phrase()) & set(response.content.decode().lower().split('"'))


def test_the_player_sees_only_the_words_they_found(client, demo_hunt, owner):
    found = guarded_positions(demo_hunt)[:2]
    response = client.get(f"/api/v1/hunts/{demo_hunt.slug}", **bearer(ApiToken.issue(owner.user)))
    words = {w["position"]: w for w in response.json()["words"]}
    phrase = demo_phrase()
    for position in range(1, 25):
        if position in found:
            assert words[position]["found"] is True
            assert words[position]["word"] == phrase[position - 1]
        else:
            assert words[position] == {**words[position], "found": False, "word": None}
    assert set(words[found[0]]) == {"position", "world", "hint", "found", "word"}


def test_another_player_does_not_see_the_owners_words(client, demo_hunt, owner, make_player):
    other = make_player("other")
    client.force_login(other.user)
    body = client.get(f"/api/v1/hunts/{demo_hunt.slug}").json()
    assert not any(w["found"] or w["word"] for w in body["words"])


def test_the_winner_is_shown_once_the_wallet_is_claimed(client, demo_hunt, owner):
    won_at = timezone.now()
    Hunt.objects.filter(pk=demo_hunt.pk).update(winner=owner, won_at=won_at)
    winner = client.get(f"/api/v1/hunts/{demo_hunt.slug}").json()["winner"]
    assert winner["player"] == "owner"
    assert winner["claimed_at"] == iso_ms(won_at)


@pytest.mark.parametrize(
    "path", ["", "/avatars", "/leaderboard", "/progress", "/claim"], ids=lambda p: p or "detail"
)
def test_an_unknown_hunt_is_404_on_every_endpoint(client, make_player, path):
    client.force_login(make_player().user)
    url = f"/api/v1/hunts/no-such-hunt{path}"
    if path == "/claim":
        response = client.post(url, {"words": ["a"] * 24}, content_type="application/json")
    else:
        response = client.get(url)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


def test_it_lists_the_published_avatars_with_their_location(client, demo_hunt):
    Avatar.objects.filter(hunt=demo_hunt, slug="nia-neon").update(published=False)
    Avatar.objects.filter(hunt=demo_hunt, slug="old-marta").update(latitude=None, longitude=None)
    response = client.get(f"/api/v1/hunts/{demo_hunt.slug}/avatars")
    assert response.status_code == 200
    avatars = {a["slug"]: a for a in response.json()}
    assert "nia-neon" not in avatars and len(avatars) == 4
    assert avatars["old-marta"]["location"] is None
    assert avatars["captain-rook"]["location"] == {"lat": 45.0703, "lon": 7.6869}
    assert set(avatars["captain-rook"]) == {"slug", "name", "greeting", "land", "location"}
    assert "persona" not in response.content.decode()


def test_progress_needs_a_player(client, demo_hunt):
    response = client.get(f"/api/v1/hunts/{demo_hunt.slug}/progress")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_progress_lists_the_callers_discoveries_only(client, demo_hunt, owner, make_player):
    other = make_player("other")
    discover(other, demo_hunt, guarded_positions(demo_hunt)[-1])
    response = client.get(
        f"/api/v1/hunts/{demo_hunt.slug}/progress", **bearer(ApiToken.issue(owner.user))
    )
    assert response.status_code == 200
    rows = response.json()["discoveries"]
    phrase = demo_phrase()
    first, second = guarded_positions(demo_hunt)[:2]
    assert [(r["position"], r["word"]) for r in rows] == [
        (first, phrase[first - 1]),
        (second, phrase[second - 1]),
    ]
    assert rows[0]["avatar"] == "old-marta"
    assert set(rows[0]) == {"position", "word", "avatar", "found_at"}


def test_progress_of_another_hunt_is_empty(client, demo_hunt, owner):
    doc = json.loads(DEMO_HUNT.read_text())
    doc["slug"] = "second"
    for avatar in doc["avatars"]:
        avatar["slug"] = "second-" + avatar["slug"]
    import_hunt_document(doc)
    client.force_login(owner.user)
    assert client.get("/api/v1/hunts/second/progress").json() == {"discoveries": []}


def test_the_openapi_document_describes_every_endpoint(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/api/v1/auth/register",
        "/api/v1/auth/token",
        "/api/v1/hunts",
        "/api/v1/hunts/{slug}",
        "/api/v1/hunts/{slug}/avatars",
        "/api/v1/hunts/{slug}/leaderboard",
        "/api/v1/hunts/{slug}/progress",
        "/api/v1/hunts/{slug}/claim",
    } <= set(doc["paths"])
    claim = doc["paths"]["/api/v1/hunts/{slug}/claim"]["post"]
    assert {"200", "400", "401", "404", "409", "429"} <= set(claim["responses"])
    assert {"BearerToken", "SessionCookie"} <= set(doc["components"]["securitySchemes"])


def test_the_docs_page_works_offline(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert b"cdn." not in response.content and b"/static/ninja/" in response.content


def test_unknown_api_paths_answer_in_the_error_format(client):
    response = client.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found"}


def test_only_the_callers_words_are_ever_decrypted(client, demo_hunt, owner, monkeypatch):
    from hunt import crypto

    decrypted: list[str] = []
    real = crypto.decrypt_word

    def spy(token: str) -> str:
        decrypted.append(real(token))
        return decrypted[-1]

    monkeypatch.setattr(crypto, "decrypt_word", spy)
    client.get(f"/api/v1/hunts/{demo_hunt.slug}")
    assert decrypted == []  # a stranger: nothing read
    client.force_login(owner.user)
    client.get(f"/api/v1/hunts/{demo_hunt.slug}")
    client.get(f"/api/v1/hunts/{demo_hunt.slug}/progress")
    client.get(f"/hunts/{demo_hunt.slug}/")
    phrase = demo_phrase()
    assert set(decrypted) == {phrase[p - 1] for p in guarded_positions(demo_hunt)[:2]}
