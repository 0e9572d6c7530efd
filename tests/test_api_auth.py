"""REST accounts (contract §1): registration, tokens, bearer and session authentication, limits."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.utils import timezone

from hunt.models import ApiToken, Hunt, Player
from tests.hunt_helpers import bearer, find_every_word

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]


STRONG = "a-long-unusual-passphrase-42"


def register(client: Client, **body):
    return client.post("/api/v1/auth/register", body, content_type="application/json")


def token(client: Client, username: str, password: str, **extra):
    return client.post(
        "/api/v1/auth/token",
        {"username": username, "password": password},
        content_type="application/json",
        **extra,
    )


def test_it_registers_a_player_and_returns_a_working_token(client, demo_hunt):
    response = register(client, username="alice", password=STRONG, display_name="Alice A.")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "username"} and body["username"] == "alice"
    player = Player.objects.get(user__username="alice")
    assert player.display_name == "Alice A." and not player.hidden
    progress = client.get(f"/api/v1/hunts/{demo_hunt.slug}/progress", **bearer(body["token"]))
    assert progress.status_code == 200


def test_it_stores_tokens_hashed_only(client, demo_hunt):
    raw = register(client, username="alice", password=STRONG).json()["token"]
    stored = ApiToken.objects.get(user__username="alice")
    assert raw not in stored.digest and stored.digest == ApiToken._digest(raw)


def test_it_refuses_a_taken_username_whatever_its_case(client, demo_hunt, make_user):
    make_user("alice")
    response = register(client, username="ALICE", password=STRONG)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "taken" in response.json()["detail"]


@pytest.mark.parametrize("password", ["short", "password123", "12345678901", "alice1234"])
def test_it_refuses_a_weak_password(client, demo_hunt, password):
    response = register(client, username="alice", password=password)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert response.json()["detail"].startswith("password:")
    assert not get_user_model().objects.filter(username="alice").exists()


def test_it_refuses_a_body_without_the_required_fields(client, demo_hunt):
    response = register(client, username="alice")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "password" in response.json()["detail"]


def test_it_refuses_a_body_that_is_not_json(client, demo_hunt):
    response = client.post("/api/v1/auth/register", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {"error": "invalid", "detail": "Cannot parse request body"}


@override_settings(REGISTRATION_OPEN=False)
def test_registration_is_closed_by_the_setting(client, demo_hunt):
    response = register(client, username="alice", password=STRONG)
    assert response.status_code == 403
    assert response.json()["error"] == "registration_closed"


def test_registration_is_closed_when_no_running_hunt_takes_players(client, demo_hunt):
    Hunt.objects.update(registration_open=False)
    assert register(client, username="alice", password=STRONG).status_code == 403
    Hunt.objects.update(registration_open=True, ends_at=timezone.now() - timedelta(seconds=1))
    Hunt.objects.update(starts_at=timezone.now() - timedelta(days=2))
    response = register(client, username="alice", password=STRONG)
    assert response.status_code == 403
    assert response.json() == {
        "error": "registration_closed",
        "detail": "No hunt takes new players at the moment.",
    }


def test_registrations_from_one_address_are_rate_limited(client, demo_hunt):
    statuses = [
        register(client, username=f"user{i}", password=STRONG).status_code for i in range(11)
    ]
    assert statuses == [201] * 10 + [429]
    body = register(client, username="late", password=STRONG)
    assert body.json()["error"] == "rate_limited" and body.json()["retry_after"] >= 1
    assert int(body["Retry-After"]) == body.json()["retry_after"]


def test_it_exchanges_good_credentials_for_a_token(client, make_user):
    user = make_user("bob", password=STRONG)
    response = token(client, "bob", STRONG)
    assert response.status_code == 200
    assert set(response.json()) == {"token"}
    assert ApiToken.authenticate(response.json()["token"]) == user


def test_it_answers_bad_credentials_with_401(client, make_user):
    make_user("bob", password=STRONG)
    for username, password in [("bob", "wrong-password"), ("nobody", STRONG)]:
        response = token(client, username, password)
        assert response.status_code == 401
        assert response.json() == {"error": "bad_credentials"}


def test_it_refuses_a_token_to_a_deactivated_account(client, make_user):
    make_user("bob", password=STRONG, is_active=False)
    assert token(client, "bob", STRONG).status_code == 401


def test_a_rivals_failures_from_other_addresses_never_lock_the_owner_out(client, make_user):
    make_user("bob", password=STRONG)
    for i in range(30):
        assert token(client, "bob", "guess", REMOTE_ADDR=f"10.0.0.{i}").status_code == 401
    assert token(client, "bob", STRONG, REMOTE_ADDR="10.0.1.1").status_code == 200


def test_once_a_username_is_under_attack_the_addresses_that_failed_it_wait(client, make_user):
    make_user("bob", password=STRONG)
    for i in range(10):
        assert token(client, "bob", "guess", REMOTE_ADDR=f"10.0.0.{i}").status_code == 401
    # Every address that failed for bob now waits, even with the right password ...
    for password in ["guess", STRONG]:
        limited = token(client, "bob", password, REMOTE_ADDR="10.0.0.3")
        assert limited.status_code == 429 and limited.json()["retry_after"] >= 1
    # ... while a fresh address is still judged by its password, and other users are not slowed.
    assert token(client, "bob", "guess", REMOTE_ADDR="10.0.1.1").status_code == 401
    assert token(client, "bob", "guess", REMOTE_ADDR="10.0.1.1").status_code == 429
    assert token(client, "carol", "guess", REMOTE_ADDR="10.0.0.3").status_code == 401


def test_one_address_guessing_one_username_is_limited(client, make_user):
    make_user("bob", password=STRONG)
    statuses = [token(client, "bob", "guess").status_code for _ in range(11)]
    assert statuses == [401] * 10 + [429]
    assert token(client, "bob", STRONG).status_code == 429


def test_token_attempts_are_limited_per_address_across_usernames(client):
    statuses = [token(client, f"user{i}", "guess").status_code for i in range(11)]
    assert statuses == [401] * 10 + [429]
    assert token(client, "other", "guess", REMOTE_ADDR="10.9.9.9").status_code == 401


def test_an_unknown_bearer_token_is_refused_even_with_a_session(client, make_user, demo_hunt):
    client.force_login(make_user())
    response = client.get(f"/api/v1/hunts/{demo_hunt.slug}/progress", **bearer("forged"))
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_the_session_cookie_authenticates_browsers(client, make_user, demo_hunt):
    client.force_login(make_user())
    assert client.get(f"/api/v1/hunts/{demo_hunt.slug}/progress").status_code == 200


def test_a_session_post_needs_the_csrf_token(make_player, demo_hunt):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(find_every_word(make_player(), demo_hunt).user)  # a claim is judged
    url = f"/api/v1/hunts/{demo_hunt.slug}/claim"
    response = browser.post(url, {"words": ["a"] * 24}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    browser.get("/")  # sets the csrftoken cookie, as the pages do
    csrf = browser.cookies["csrftoken"].value
    response = browser.post(
        url, {"words": ["a"] * 24}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_phrase"


def test_a_bearer_post_needs_no_csrf_token(make_player, demo_hunt):
    player = find_every_word(make_player(), demo_hunt)  # so that the claim is judged
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        f"/api/v1/hunts/{demo_hunt.slug}/claim",
        {"words": ["a"] * 24},
        content_type="application/json",
        **bearer(ApiToken.issue(player.user)),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_phrase"
