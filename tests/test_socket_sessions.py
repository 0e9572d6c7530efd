"""Open sockets end with the account's access: sign-out, deactivation and a password change
close the player's chat and leaderboard sockets with 4401."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from lostwallet.asgi import application
from tests.chat_support import bearer_headers, open_chat, session_headers

pytest_plugins = ["tests.chat_support"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_hashing")]


async def closed_with(ws: WebsocketCommunicator) -> int | None:
    """The close code the socket gets next, skipping any frames before it."""
    while True:
        output = await ws.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output.get("code")


@database_sync_to_async
def deactivate(user) -> None:
    user.is_active = False
    user.save()


async def test_deactivating_a_player_closes_their_chat_socket(player_user, chat_avatar):
    ws, close = await open_chat(chat_avatar.slug, headers=await bearer_headers(player_user))
    assert close is None
    await deactivate(player_user)
    assert await closed_with(ws) == 4401


async def test_signing_out_closes_the_players_chat_socket(player_user, chat_avatar):
    browser = Client()
    await database_sync_to_async(browser.force_login)(player_user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    ws, close = await open_chat(chat_avatar.slug, headers=[(b"cookie", cookie)])
    assert close is None
    await database_sync_to_async(browser.post)("/accounts/logout/")
    assert await closed_with(ws) == 4401


async def test_a_password_change_closes_the_players_sockets(player_user, chat_avatar):
    ws, close = await open_chat(chat_avatar.slug, headers=await session_headers(player_user))
    assert close is None

    @database_sync_to_async
    def change_password():
        player_user.set_password("a-brand-new-passphrase-7")
        player_user.save()

    await change_password()
    assert await closed_with(ws) == 4401


async def test_deactivating_a_player_closes_their_leaderboard_socket(demo_hunt, player_user):
    ws = WebsocketCommunicator(
        application,
        f"/ws/hunts/{demo_hunt.slug}/leaderboard/",
        headers=await session_headers(player_user),
    )
    connected, _ = await ws.connect(timeout=5)
    assert connected
    await deactivate(player_user)
    assert await closed_with(ws) == 4401


async def test_another_players_sign_out_leaves_a_socket_open(make_user, player_user, chat_avatar):
    ws, close = await open_chat(chat_avatar.slug, headers=await session_headers(player_user))
    assert close is None
    await deactivate(await database_sync_to_async(make_user)("someone-else"))
    assert await ws.receive_nothing(timeout=0.5)
    await ws.disconnect()
