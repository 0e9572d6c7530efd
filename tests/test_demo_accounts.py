"""`make demo` creates a player and an organizer who can use the admin, and says how."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from hunt.models import Player

pytestmark = pytest.mark.django_db


@pytest.fixture
def development_mode(settings):
    """`make demo` runs with DEBUG=1 (pytest-django turns DEBUG off for every test)."""
    settings.DEBUG = True


def test_it_refuses_to_run_with_debug_off(settings, demo_hunt):
    settings.DEBUG = False
    with pytest.raises(CommandError, match=r"published passwords.*only with DEBUG=1"):
        call_command("demo_accounts")
    assert not get_user_model().objects.filter(username__in=["organizer", "player"]).exists()


def test_the_demo_accounts_sign_in_and_the_organizer_reaches_the_admin(
    development_mode, client, demo_hunt, capsys
):
    call_command("demo_accounts", host="127.0.0.1", port="8000")
    out = capsys.readouterr().out
    assert "organizer / organizer-demo-pass" in out
    assert "player / player-demo-pass" in out

    assert client.login(username="organizer", password="organizer-demo-pass")
    assert client.get(reverse("admin:hunt_hunt_changelist")).status_code == 200
    assert Player.objects.get(user__username="organizer").hidden is True

    client.logout()
    assert client.login(username="player", password="player-demo-pass")
    assert client.get(reverse("admin:index")).status_code == 302
    assert Player.objects.get(user__username="player").hidden is False


def test_running_it_again_resets_the_passwords(development_mode, client, demo_hunt):
    call_command("demo_accounts")
    user = Player.objects.get(user__username="player").user
    user.set_password("changed")
    user.save()
    assert not client.login(username="player", password="player-demo-pass")
    call_command("demo_accounts")
    assert client.login(username="player", password="player-demo-pass")
