"""Who may open the chat socket: session cookies, bearer tokens, origins and the close codes.

The first group drives the real ASGI application in-process; the last test checks, against a
real Daphne process, that a refusal's close code actually reaches a WebSocket client (a refusal
before accept() would arrive as a bare HTTP 403).
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from avatars.models import Avatar
from lostwallet.middleware import bearer_token
from tests.chat_support import (
    bearer_headers,
    open_chat,
    receive,
    session_headers,
)

# Fixtures of the chat tests: player_user, chat_avatar, chat, chat_hello, engine.
pytest_plugins = ["tests.chat_support"]
pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_closes_an_anonymous_handshake_with_4401(chat_avatar):
    _ws, close = await open_chat(chat_avatar.slug, headers=[])
    assert close == 4401


async def test_it_closes_an_unknown_avatar_with_4404(player_user):
    _ws, close = await open_chat("nobody-here", headers=await session_headers(player_user))
    assert close == 4404


async def test_it_closes_an_unpublished_avatar_with_4403(player_user, chat_avatar):
    await database_sync_to_async(Avatar.objects.filter(pk=chat_avatar.pk).update)(published=False)
    _ws, close = await open_chat(chat_avatar.slug, headers=await session_headers(player_user))
    assert close == 4403


async def test_it_opens_an_unpublished_avatar_to_its_owner(make_user, chat_avatar):
    owner = await database_sync_to_async(make_user)("creator")
    await database_sync_to_async(Avatar.objects.filter(pk=chat_avatar.pk).update)(
        published=False, owner=owner
    )
    ws, close = await open_chat(chat_avatar.slug, headers=await session_headers(owner))
    assert close is None
    await ws.disconnect()


async def test_it_accepts_a_bearer_token(player_user, chat_avatar):
    ws, close = await open_chat(chat_avatar.slug, headers=await bearer_headers(player_user))
    assert close is None
    hello = await receive(ws)
    assert hello["type"] == "hello"
    await ws.disconnect()


async def test_a_wrong_bearer_token_is_not_authenticated_even_with_a_session(
    player_user, chat_avatar
):
    headers = await session_headers(player_user) + [(b"authorization", b"Bearer not-a-token")]
    _ws, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close == 4401


async def test_a_revoked_token_is_not_authenticated(player_user, chat_avatar):
    headers = await bearer_headers(player_user)
    await database_sync_to_async(player_user.api_tokens.all().delete)()
    _ws, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close == 4401


async def test_a_browser_handshake_from_a_foreign_origin_is_refused(player_user, chat_avatar):
    headers = await session_headers(player_user) + [(b"origin", b"https://evil.example")]
    _ws, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close == "refused"


async def test_a_browser_handshake_from_the_site_is_accepted(player_user, chat_avatar):
    headers = await session_headers(player_user) + [(b"origin", b"https://localhost")]
    ws, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close is None
    await ws.disconnect()


async def origin_answer(user, avatar, origin: bytes, host: bytes = b"localhost"):
    headers = await session_headers(user) + [(b"origin", origin), (b"host", host)]
    ws, close = await open_chat(avatar.slug, headers=headers)
    if close is None:
        await ws.disconnect()
    return close


@pytest.mark.parametrize(
    "origin",
    [b"https://localhost:8443", b"http://localhost", b"https://localhost.evil.example", b"null"],
)
async def test_the_right_host_with_another_port_or_scheme_is_refused(
    player_user, chat_avatar, origin
):
    assert await origin_answer(player_user, chat_avatar, origin) == "refused"


async def test_a_wildcard_allowed_host_does_not_open_the_sockets_to_every_site(
    player_user, chat_avatar, settings
):
    settings.ALLOWED_HOSTS = ["*"]
    assert await origin_answer(player_user, chat_avatar, b"https://evil.example") == "refused"
    answer = await origin_answer(player_user, chat_avatar, b"https://evil.example", b"evil.example")
    assert answer == "refused"


async def test_in_debug_the_site_may_be_plain_http_on_the_port_it_is_served_on(
    player_user, chat_avatar, settings
):
    settings.DEBUG = True
    site = b"localhost:8000"
    assert await origin_answer(player_user, chat_avatar, b"http://" + site, site) is None
    assert await origin_answer(player_user, chat_avatar, b"http://localhost:9000", site) == (
        "refused"
    )


async def test_a_csrf_trusted_origin_is_accepted_with_its_port(player_user, chat_avatar, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://hunt.example.org:8443"]
    origin = b"https://hunt.example.org:8443"
    assert await origin_answer(player_user, chat_avatar, origin) is None
    assert await origin_answer(player_user, chat_avatar, b"https://hunt.example.org") == "refused"


async def test_it_opens_an_unpublished_avatar_to_staff(make_user, chat_avatar):
    staff = await database_sync_to_async(make_user)("organizer", is_staff=True)
    await database_sync_to_async(Avatar.objects.filter(pk=chat_avatar.pk).update)(published=False)
    ws, close = await open_chat(chat_avatar.slug, headers=await session_headers(staff))
    assert close is None
    await ws.disconnect()


async def test_the_token_of_a_deactivated_account_is_not_authenticated(player_user, chat_avatar):
    headers = await bearer_headers(player_user)
    player_user.is_active = False
    await database_sync_to_async(player_user.save)()
    _ws, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close == 4401


async def test_an_authorization_header_of_another_scheme_is_not_authenticated(
    player_user, chat_avatar
):
    headers = await session_headers(player_user) + [(b"authorization", b"Basic dXNlcjpwdw==")]
    _ws, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close == 4401


async def test_the_bearer_scheme_is_case_insensitive(player_user, chat_avatar):
    [(name, value)] = await bearer_headers(player_user)
    ws, close = await open_chat(
        chat_avatar.slug, headers=[(name, value.replace(b"Bearer", b"bearer"))]
    )
    assert close is None
    await ws.disconnect()


async def test_a_session_cookie_of_a_signed_out_browser_is_not_authenticated(chat_avatar):
    _ws, close = await open_chat(chat_avatar.slug, headers=[(b"cookie", b"sessionid=forged")])
    assert close == 4401


def test_bearer_token_reads_only_the_authorization_header():
    assert bearer_token({"headers": []}) is None
    assert bearer_token({"headers": [(b"authorization", b"Bearer abc ")]}) == "abc"
    assert bearer_token({"headers": [(b"authorization", b"Token abc")]}) == ""


@pytest.mark.integration
def test_a_real_client_sees_the_close_codes(daphne_process, player_user, chat_avatar):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    _server, host = daphne_process(redis=False)

    def close_code(path: str, headers: dict) -> int | None:
        with connect(f"ws://{host}{path}", additional_headers=headers, open_timeout=30) as ws:
            try:
                ws.recv(timeout=30)
                ws.recv(timeout=30)
            except ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None
        return None

    token = asyncio.run(bearer_headers(player_user))[0][1].decode()
    assert close_code(f"/ws/chat/{chat_avatar.slug}/", {}) == 4401
    assert close_code("/ws/chat/nobody/", {"Authorization": token}) == 4404
