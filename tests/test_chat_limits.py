"""What one player, one address or a crowd can make the server spend: tokens per message,
turns waiting for the model, open sockets, and the history sent on connect (docs/protocol.md,
Limits), on the real `lostwallet.asgi.application`."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from avatars.models import Conversation, Message
from lostwallet.asgi import application
from tests.chat_support import (
    ChatClient,
    bearer_headers,
    collect_turn,
    open_chat,
    receive,
    session_headers,
)
from tests.test_prompts import RARE_CJK

pytest_plugins = ["tests.chat_support"]
pytestmark = pytest.mark.django_db(transaction=True)


async def from_address(slug: str, headers: list, address: str) -> int | None:
    """Opens a chat socket as Daphne would for a client at `address`; returns its close code,
    or None when it stays open (the socket is then left open until the test's end)."""
    client = ChatClient(f"/ws/chat/{slug}/", headers)
    client.scope["client"] = (address, 50000)
    connected, _ = await client.connect()
    assert connected
    output = await client.receive_output()
    return output.get("code") if output["type"] == "websocket.close" else None


# Tokens per message --------------------------------------------------------------------------


async def test_500_rare_characters_are_too_long_in_tokens(chat, engine, settings):
    await chat.send_json_to({"type": "say", "text": RARE_CJK, "client_id": "cjk"})
    error = await receive(chat)
    assert (error["code"], error["client_id"]) == ("too_long", "cjk")
    assert f"{settings.CHAT_MAX_TOKENS} tokens" in error["detail"]
    assert await database_sync_to_async(Message.objects.count)() == 0
    assert engine.requests == 0


async def test_a_message_at_the_token_limit_is_accepted(chat, engine, settings):
    settings.CHAT_MAX_TOKENS = 20
    engine.script("Counted.")
    await chat.send_json_to({"type": "say", "text": "1234567890" * 2})  # a token per digit
    ack = await receive(chat)
    assert ack["type"] == "ack"
    await collect_turn(chat, ack["message_id"])
    await chat.send_json_to({"type": "say", "text": "1234567890" * 2 + "1"})
    assert (await receive(chat))["code"] == "too_long"


# Turns waiting for the model -----------------------------------------------------------------


async def test_past_max_waiting_turns_a_say_is_overloaded_and_not_stored(
    chat, chat_avatar, engine, make_player, settings
):
    settings.MAX_WAITING_TURNS = 2

    def others_waiting() -> list[int]:
        waiting = []
        for name, status in (("ann", "pending"), ("bob", "generating")):
            conversation = Conversation.objects.create(player=make_player(name), avatar=chat_avatar)
            waiting.append(
                Message.objects.create(
                    conversation=conversation, role="player", text="Hi?", status=status
                ).pk
            )
        return waiting

    waiting = await database_sync_to_async(others_waiting)()
    await chat.send_json_to({"type": "say", "text": "Anyone there?", "client_id": "crowd"})
    error = await receive(chat)
    assert (error["type"], error["code"], error["client_id"]) == ("error", "overloaded", "crowd")
    assert isinstance(error["retry_after"], int) and error["retry_after"] >= 1
    assert await database_sync_to_async(Message.objects.count)() == 2
    # Once the line is short again, the same say goes through.
    await database_sync_to_async(Message.objects.filter(pk=waiting[0]).update)(status="done")
    engine.script("Here.")
    await chat.send_json_to({"type": "say", "text": "Anyone there?", "client_id": "crowd"})
    ack = await receive(chat)
    assert ack["type"] == "ack"
    await collect_turn(chat, ack["message_id"])


# Open sockets ----------------------------------------------------------------------------------


async def test_a_player_past_ws_max_per_user_is_closed_with_4409(
    player_user, chat_avatar, settings
):
    settings.WS_MAX_PER_USER = 2
    headers = await session_headers(player_user)
    first, close = await open_chat(chat_avatar.slug, headers)
    assert close is None
    second, close = await open_chat(chat_avatar.slug, await bearer_headers(player_user))
    assert close is None
    _third, close = await open_chat(chat_avatar.slug, headers)
    assert close == 4409
    # A closed socket gives its place back.
    await first.disconnect()
    fourth, close = await open_chat(chat_avatar.slug, headers)
    assert close is None
    await second.disconnect()
    await fourth.disconnect()


async def test_one_address_past_ws_max_per_address_is_closed_with_4409(
    chat_avatar, make_player, settings
):
    settings.WS_MAX_PER_ADDRESS = 2
    users = [await database_sync_to_async(make_player)(f"p{n}") for n in range(3)]
    headers = [await bearer_headers(p.user) for p in users]
    assert await from_address(chat_avatar.slug, headers[0], "203.0.113.7") is None
    assert await from_address(chat_avatar.slug, headers[1], "203.0.113.7") is None
    assert await from_address(chat_avatar.slug, headers[2], "203.0.113.7") == 4409
    assert await from_address(chat_avatar.slug, headers[2], "198.51.100.4") is None


async def test_a_refused_handshake_takes_no_place(chat_avatar, player_user, settings):
    settings.WS_MAX_PER_ADDRESS = 1
    assert await from_address(chat_avatar.slug, [], "203.0.113.7") == 4401
    headers = await session_headers(player_user)
    assert await from_address(chat_avatar.slug, headers, "203.0.113.7") is None


async def test_the_leaderboard_socket_is_capped_per_address(demo_hunt, settings):
    settings.WS_MAX_PER_ADDRESS = 1
    path = f"/ws/hunts/{demo_hunt.slug}/leaderboard/"
    first, second = (WebsocketCommunicator(application, path) for _ in range(2))
    for ws in (first, second):
        ws.scope["client"] = ("203.0.113.7", 50000)
        assert (await ws.connect())[0]
    assert (await first.receive_json_from())["type"] == "leaderboard"
    assert await second.receive_output() == {"type": "websocket.close", "code": 4409}
    await first.disconnect()


# History on connect ----------------------------------------------------------------------------


async def make_thread(player_user, chat_avatar, exchanges: int) -> list[int]:
    def setup() -> list[int]:
        conversation = Conversation.objects.create(player=player_user.player, avatar=chat_avatar)
        ids = []
        for n in range(exchanges):
            asked = Message.objects.create(conversation=conversation, role="player", text=f"Q{n}")
            answer = Message.objects.create(
                conversation=conversation, role="avatar", text=f"A{n}", reply_to=asked
            )
            ids += [asked.pk, answer.pk]
        return ids

    return await database_sync_to_async(setup)()


async def test_hello_holds_the_newest_messages_and_says_older_ones_exist(
    player_user, chat_avatar, settings
):
    settings.HELLO_HISTORY_LIMIT = 3
    ids = await make_thread(player_user, chat_avatar, 3)
    ws, _ = await open_chat(chat_avatar.slug, await session_headers(player_user))
    hello = await receive(ws)
    assert [m["id"] for m in hello["history"]] == ids[-3:]
    assert hello["history_more"] is True
    await ws.disconnect()


async def test_a_short_thread_is_all_in_hello(player_user, chat_avatar, settings):
    settings.HELLO_HISTORY_LIMIT = 4
    ids = await make_thread(player_user, chat_avatar, 2)
    ws, _ = await open_chat(chat_avatar.slug, await session_headers(player_user))
    hello = await receive(ws)
    assert [m["id"] for m in hello["history"]] == ids
    assert hello["history_more"] is False
    await ws.disconnect()


async def test_by_default_hello_holds_every_message_as_the_contract_promises(
    player_user, chat_avatar, settings
):
    assert settings.HELLO_HISTORY_LIMIT == 0
    ids = await make_thread(player_user, chat_avatar, 30)
    ws, _ = await open_chat(chat_avatar.slug, await session_headers(player_user))
    hello = await receive(ws)
    assert [m["id"] for m in hello["history"]] == ids and hello["history_more"] is False
    await ws.disconnect()
