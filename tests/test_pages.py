"""The player's web pages: sign-up/sign-in/out, dashboard, avatars and map, claim."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone

from avatars.models import Avatar
from hunt.models import Claim, Hunt, Player
from hunt.views import map_points
from tests.hunt_helpers import (
    demo_phrase,
    discover,
    find_every_word,
    guarded_positions,
    wrong_phrase,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]

STRONG = "a-long-unusual-passphrase-42"


@pytest.fixture
def owner(make_player, demo_hunt):
    """A player who found the lighthouse's word (position 3)."""
    player = make_player("owner")
    discover(player, demo_hunt, 3)
    return player


# Accounts ---------------------------------------------------------------------------------


def test_the_home_page_lists_hunts_and_invites_to_join(client, demo_hunt):
    html = client.get("/").content.decode()
    assert demo_hunt.title in html and "/accounts/signup/" in html
    assert 'class="badge badge-live"' in html


def test_sign_up_creates_the_player_and_signs_in(client, demo_hunt):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "display_name": "New Bie",
            "password": STRONG,
            "password_again": STRONG,
            "next": f"/hunts/{demo_hunt.slug}/",
        },
    )
    assert response.status_code == 302 and response["Location"] == f"/hunts/{demo_hunt.slug}/"
    assert Player.objects.get(user__username="newbie").display_name == "New Bie"
    assert client.get("/").context["user"].username == "newbie"


def test_sign_up_shows_each_problem_next_to_its_field(client, demo_hunt, make_user):
    make_user("taken")
    response = client.post(
        "/accounts/signup/",
        {"username": "taken", "password": "short", "password_again": "other"},
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert "username" in form.errors and "password" in form.errors
    assert "password_again" in form.errors
    assert 'role="alert"' in response.content.decode()


def test_sign_up_ignores_a_foreign_next_url(client, demo_hunt):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "password": STRONG,
            "password_again": STRONG,
            "next": "https://evil.example/",
        },
    )
    assert response["Location"] == "/"


@override_settings(REGISTRATION_OPEN=False)
def test_sign_up_says_when_registration_is_closed(client, demo_hunt):
    response = client.get("/accounts/signup/")
    assert response.status_code == 403
    assert "Registration is closed" in response.content.decode()
    client.post(
        "/accounts/signup/", {"username": "x", "password": STRONG, "password_again": STRONG}
    )
    assert not get_user_model().objects.filter(username="x").exists()


def test_sign_in_and_sign_out(client, make_user):
    make_user("bob", password=STRONG)
    response = client.post("/accounts/login/", {"username": "bob", "password": STRONG})
    assert response.status_code == 302
    assert client.get("/").context["user"].is_authenticated
    client.post("/accounts/logout/")
    assert not client.get("/").context["user"].is_authenticated


def test_sign_in_attempts_are_rate_limited(client, make_user):
    make_user("bob", password=STRONG)
    for _ in range(10):
        client.post("/accounts/login/", {"username": "bob", "password": "guess"})
    response = client.post("/accounts/login/", {"username": "bob", "password": STRONG})
    assert response.status_code == 200
    assert "Too many attempts" in response.content.decode()
    assert not response.context["user"].is_authenticated


def test_a_rivals_failed_sign_ins_do_not_keep_the_owner_out(client, make_user):
    make_user("bob", password=STRONG)
    for i in range(20):
        guess = {"username": "bob", "password": "guess"}
        client.post("/accounts/login/", guess, REMOTE_ADDR=f"10.0.0.{i}")
    response = client.post(
        "/accounts/login/", {"username": "bob", "password": STRONG}, REMOTE_ADDR="10.0.1.1"
    )
    assert response.status_code == 302


# Dashboard --------------------------------------------------------------------------------


def test_the_dashboard_shows_the_players_words_and_where_to_go(client, demo_hunt, owner):
    client.force_login(owner.user)
    response = client.get(f"/hunts/{demo_hunt.slug}/")
    html = response.content.decode()
    phrase = demo_phrase()
    assert phrase[2] in html  # the word they found
    assert not [w for p, w in enumerate(phrase, 1) if p != 3 and f">{w}<" in html]
    assert "1 of 24 words found" in html
    slots = {s["position"]: s for s in response.context["slots"]}
    assert len(slots) == 24
    assert slots[3]["word"] == phrase[2]
    # Where to go next: the avatar guarding each word on this server, with a chat link.
    assert [a.slug for a in slots[7]["avatars"]] == ["captain-rook"]
    assert '<a href="/chat/captain-rook/">Captain Rook</a>' in html
    # Professor Quill's book needed the lighthouse's word (found), his clocks need the book.
    assert slots[12]["needs"] == [] and slots[15]["needs"] == [12]
    assert slots[1]["avatars"] == [] and slots[1]["world"] == "The Sandbox museum"


def test_the_dashboard_shows_no_word_to_another_player(client, demo_hunt, owner, make_player):
    client.force_login(make_player("other").user)
    response = client.get(f"/hunts/{demo_hunt.slug}/")
    assert demo_phrase()[2] not in response.content.decode()
    assert "0 of 24 words found" in response.content.decode()


def test_the_dashboard_invites_strangers_to_sign_in(client, demo_hunt, owner):
    html = client.get(f"/hunts/{demo_hunt.slug}/").content.decode()
    assert "to keep track of the words you find" in html
    assert demo_phrase()[2] not in html


def test_the_dashboard_says_when_the_hunt_starts(client, demo_hunt):
    Hunt.objects.filter(pk=demo_hunt.pk).update(starts_at=timezone.now() + timedelta(days=1))
    html = client.get(f"/hunts/{demo_hunt.slug}/").content.decode()
    assert "no word can be found before the start" in html


def test_an_unknown_hunt_page_is_404(client, make_user):
    client.force_login(make_user())
    for path in ["", "avatars/", "leaderboard/", "claim/"]:
        assert client.get(f"/hunts/nope/{path}").status_code == 404


# Avatars and map --------------------------------------------------------------------------


def test_the_avatar_directory_lists_lands_and_draws_the_map(client, demo_hunt):
    Avatar.objects.filter(slug="nia-neon").update(published=False)
    response = client.get(f"/hunts/{demo_hunt.slug}/avatars/")
    html = response.content.decode()
    assert "OVER · Cliffside hex 8a2a1072b59ffff" in html and "Nia Neon" not in html
    assert html.count('class="map-pin"') == 4
    assert '<svg viewBox="0 0 600 360" role="img"' in html
    assert "http" not in html.split("<svg", 1)[1].split("</svg>", 1)[0]  # no tiles


def test_the_map_keeps_north_up_and_east_right_inside_the_frame(demo_hunt):
    avatars = list(demo_hunt.avatars.all())
    plot = map_points(avatars)
    by_slug = {p["avatar"].slug: p for p in plot["points"]}
    # Rome (Nia) is south-east of Turin (Rook).
    assert by_slug["nia-neon"]["x"] > by_slug["captain-rook"]["x"]
    assert by_slug["nia-neon"]["y"] > by_slug["captain-rook"]["y"]
    assert all(0 < p["x"] < 600 and 0 < p["y"] < 360 for p in plot["points"])


def test_there_is_no_map_without_locations(client, demo_hunt):
    Avatar.objects.update(latitude=None, longitude=None)
    html = client.get(f"/hunts/{demo_hunt.slug}/avatars/").content.decode()
    assert "<svg" not in html and "Captain Rook" in html


def test_one_located_avatar_sits_in_the_middle(demo_hunt):
    avatar = demo_hunt.avatars.first()
    plot = map_points([avatar])
    assert (plot["points"][0]["x"], plot["points"][0]["y"]) == (300, 180)


# Claim ------------------------------------------------------------------------------------


def test_the_claim_page_needs_a_signed_in_player(client, demo_hunt):
    response = client.get(f"/hunts/{demo_hunt.slug}/claim/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_winning_claim_from_the_page(client, demo_hunt, owner):
    find_every_word(owner, demo_hunt)
    client.force_login(owner.user)
    url = f"/hunts/{demo_hunt.slug}/claim/"
    response = client.post(url, {"phrase": "\n".join(demo_phrase())}, follow=True)
    assert response.redirect_chain == [(url, 302)]
    assert "you won the hunt" in response.content.decode()
    demo_hunt.refresh_from_db()
    assert demo_hunt.winner == owner
    # The result is shown once; a reload is a plain page again.
    assert "you won the hunt" not in client.get(url).content.decode()


def test_a_wrong_claim_shows_the_result_and_the_cooldown(client, demo_hunt, owner):
    find_every_word(owner, demo_hunt)
    client.force_login(owner.user)
    url = f"/hunts/{demo_hunt.slug}/claim/"
    response = client.post(url, {"phrase": " ".join(wrong_phrase())}, follow=True)
    html = response.content.decode()
    assert "This phrase is not the wallet" in html
    assert "You can claim again in" in html
    assert 'id="claim-submit" disabled' in html


def test_an_invalid_claim_explains_itself_and_counts(client, demo_hunt, owner):
    find_every_word(owner, demo_hunt)
    client.force_login(owner.user)
    response = client.post(f"/hunts/{demo_hunt.slug}/claim/", {"phrase": "olive nut agent"})
    assert response.status_code == 400
    assert "Expected 24 words, got 3." in response.content.decode()
    assert Claim.objects.get(player=owner).result == "invalid"


def test_a_claim_during_the_cooldown_is_refused_with_the_time_left(client, demo_hunt, owner):
    find_every_word(owner, demo_hunt)
    client.force_login(owner.user)
    url = f"/hunts/{demo_hunt.slug}/claim/"
    client.post(url, {"phrase": "zoo"})
    response = client.post(url, {"phrase": " ".join(demo_phrase())})
    assert "You can claim again in" in response.content.decode()
    assert Claim.objects.filter(player=owner).count() == 1


def test_the_claim_page_of_a_hunt_not_live_is_closed(client, demo_hunt, owner):
    Hunt.objects.filter(pk=demo_hunt.pk).update(starts_at=timezone.now() + timedelta(days=1))
    client.force_login(owner.user)
    url = f"/hunts/{demo_hunt.slug}/claim/"
    assert 'id="claim-submit" disabled' in client.get(url).content.decode()
    response = client.post(url, {"phrase": " ".join(demo_phrase())})
    assert "The hunt is not live: claims are closed." in response.content.decode()
    assert not Claim.objects.exists()


def test_every_hunt_page_links_the_others(client, demo_hunt, owner):
    client.force_login(owner.user)
    for path in ["", "avatars/", "leaderboard/", "claim/"]:
        html = client.get(f"/hunts/{demo_hunt.slug}/{path}").content.decode()
        assert html.count('aria-current="page"') == 1
        for other in ["avatars/", "leaderboard/", "claim/"]:
            assert f'href="/hunts/{demo_hunt.slug}/{other}"' in html


def test_guarded_positions_of_the_demo_are_on_this_server(demo_hunt):
    assert guarded_positions(demo_hunt) == [3, 7, 12, 15, 18, 21]


def test_names_of_nearby_avatars_go_to_different_sides(demo_hunt):
    avatars = list(demo_hunt.avatars.all())[:3]
    for i, avatar in enumerate(avatars):  # three avatars a few streets apart
        avatar.latitude, avatar.longitude = 45.0 + i * 0.001, 7.0 + i * 0.001
    others = [a for a in demo_hunt.avatars.all() if a not in avatars]
    plot = map_points(avatars + others)
    spots = {(p["label"]["dx"], p["label"]["dy"]) for p in plot["points"][:3]}
    assert len(spots) == 3


def test_the_claim_page_says_what_is_missing_before_every_word_is_found(client, demo_hunt, owner):
    client.force_login(owner.user)
    html = client.get(f"/hunts/{demo_hunt.slug}/claim/").content.decode()
    total = len(guarded_positions(demo_hunt))
    assert f"Find every word guarded here before claiming: 1 of {total} found." in html
    assert 'id="claim-submit" disabled' in html
