"""API tokens expire, are listed and revoked by their owner (REST and a page), and all go when
the password changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from hunt.models import ApiToken
from tests.hunt_helpers import bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def stranger(make_user):
    return make_user("stranger")


def tokens(client: Client, raw: str):
    return client.get("/api/v1/auth/tokens", **bearer(raw))


@override_settings(API_TOKEN_TTL_DAYS=7)
def test_a_token_expires_after_the_configured_days(owner):
    raw = ApiToken.issue(owner)
    token = ApiToken.objects.get(user=owner)
    lifetime = token.expires_at - token.created_at
    assert lifetime == pytest.approx(timedelta(days=7), abs=timedelta(minutes=1))
    assert ApiToken.authenticate(raw) == owner


def test_an_expired_token_authenticates_nobody(client, owner):
    raw = ApiToken.issue(owner)
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert ApiToken.authenticate(raw) is None
    response = tokens(client, raw)
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"


def test_the_owner_lists_their_tokens_without_secrets(client, owner, stranger):
    raw = ApiToken.issue(owner)
    ApiToken.issue(owner)
    ApiToken.issue(stranger)
    response = tokens(client, raw)
    assert response.status_code == 200
    listed = response.json()
    assert len(listed) == 2
    assert all(set(item) == {"id", "created_at", "last_used_at", "expires_at"} for item in listed)
    assert raw not in response.content.decode()
    assert not any(t.digest in response.content.decode() for t in ApiToken.objects.all())


def test_the_owner_revokes_a_token(client, owner):
    raw = ApiToken.issue(owner)
    other = ApiToken.issue(owner)
    token_id = ApiToken.objects.get(digest=ApiToken._digest(other)).pk
    response = client.delete(f"/api/v1/auth/tokens/{token_id}", **bearer(raw))
    assert response.status_code == 204
    assert ApiToken.authenticate(other) is None and ApiToken.authenticate(raw) == owner


def test_nobody_revokes_anothers_token(client, owner, stranger):
    mine = ApiToken.issue(stranger)
    theirs = ApiToken.objects.get(digest=ApiToken._digest(ApiToken.issue(owner))).pk
    response = client.delete(f"/api/v1/auth/tokens/{theirs}", **bearer(mine))
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert ApiToken.objects.filter(pk=theirs).exists()
    assert client.delete(f"/api/v1/auth/tokens/{theirs}").status_code == 401


def test_a_session_revocation_needs_the_csrf_token(owner):
    ApiToken.issue(owner)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    token_id = ApiToken.objects.get(user=owner).pk
    response = browser.delete(f"/api/v1/auth/tokens/{token_id}")
    assert response.status_code == 403 and ApiToken.objects.filter(pk=token_id).exists()


def test_the_openapi_document_describes_the_token_calls(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/auth/tokens"]) == {"get"}
    assert set(paths["/api/v1/auth/tokens/{token_id}"]) == {"delete"}


def test_a_password_change_revokes_every_token(owner):
    raw = ApiToken.issue(owner)
    owner.set_password("a-brand-new-passphrase-7")
    owner.save()
    assert ApiToken.authenticate(raw) is None
    assert not ApiToken.objects.filter(user=owner).exists()


def test_changepassword_revokes_every_token(owner, monkeypatch):
    raw = ApiToken.issue(owner)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a-brand-new-passphrase-7")
    call_command("changepassword", "owner", stdout=None)
    assert ApiToken.authenticate(raw) is None


def test_other_saves_of_the_user_keep_the_tokens(owner):
    raw = ApiToken.issue(owner)
    owner.first_name = "Olga"
    owner.save()
    get_user_model().objects.get(pk=owner.pk).save(update_fields=["last_login"])
    assert ApiToken.authenticate(raw) == owner


# The page ---------------------------------------------------------------------------------


def test_the_tokens_page_lists_the_players_tokens(client, owner, stranger):
    ApiToken.issue(owner)
    ApiToken.issue(stranger)
    client.force_login(owner)
    response = client.get("/account/tokens/")
    assert response.status_code == 200
    assert list(response.context["tokens"]) == list(ApiToken.objects.filter(user=owner))
    assert "/account/tokens/" in client.get("/").content.decode()


def test_the_tokens_page_revokes_with_a_post(client, owner):
    raw = ApiToken.issue(owner)
    client.force_login(owner)
    token_id = ApiToken.objects.get(user=owner).pk
    response = client.post("/account/tokens/", {"revoke": token_id})
    assert response.status_code == 302
    assert ApiToken.authenticate(raw) is None


def test_the_tokens_page_cannot_revoke_anothers_token(client, owner, stranger):
    ApiToken.issue(owner)
    client.force_login(stranger)
    token_id = ApiToken.objects.get(user=owner).pk
    assert client.post("/account/tokens/", {"revoke": token_id}).status_code == 404
    assert ApiToken.objects.filter(pk=token_id).exists()


def test_the_tokens_page_needs_a_signed_in_player(client):
    response = client.get("/account/tokens/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
