"""The chat page (/chat/<avatar>/): who may open it and what it gives the script."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from avatars.models import Avatar

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_of(make_user):
    def signed_in(username: str = "player", **extra) -> Client:
        client = Client()
        client.force_login(make_user(username, **extra))
        return client

    return signed_in


def test_it_sends_strangers_to_the_login_page(demo_hunt):
    response = Client().get("/chat/old-marta/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert "next=/chat/old-marta/" in response["Location"]


def test_it_shows_the_avatar_and_the_picker_of_the_hunts_published_avatars(demo_hunt, client_of):
    Avatar.objects.filter(slug="nia-neon").update(published=False)
    response = client_of().get("/chat/old-marta/")
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-ws-path="/ws/chat/old-marta/"' in page
    assert 'aria-current="page"' in page
    assert "/chat/captain-rook/" in page
    assert "/chat/nia-neon/" not in page
    assert 'aria-live="polite"' in page
    strings = json.loads(page.split('id="chat-strings" type="application/json">')[1].split("<")[0])
    assert strings["discovery"] == "You found word #%(position)s: %(word)s"


def test_it_never_puts_a_guarded_word_in_the_page(demo_hunt, client_of):
    page = client_of().get("/chat/old-marta/").content.decode().lower()
    assert not [w for w in demo_hunt.guarded_words().values() if f" {w} " in page]


def test_an_unknown_avatar_is_404(demo_hunt, client_of):
    assert client_of().get("/chat/nobody/").status_code == 404


def test_an_unpublished_avatar_is_404_for_players_but_open_to_staff(demo_hunt, client_of):
    Avatar.objects.filter(slug="old-marta").update(published=False)
    assert client_of().get("/chat/old-marta/").status_code == 404
    assert client_of("organizer", is_staff=True).get("/chat/old-marta/").status_code == 200
