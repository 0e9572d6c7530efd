"""The chat socket (client contract §3.1) driven through the real `lostwallet.asgi.application`.

Turns run through the real task pipeline in-process (no REDIS_URL in the unit suite); only the
model is replaced, below the task layer, by the scripted engine of tests/chat_support.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from avatars.models import Avatar, Conversation, Feedback, Message
from hunt.models import Clue, Discovery, Hunt
from lostwallet.wire import iso_ms
from tests.chat_support import (
    bearer_headers,
    collect_turn,
    open_chat,
    receive,
    session_headers,
    stored,
)

# Fixtures of the chat tests: player_user, chat_avatar, chat, chat_hello, engine.
pytest_plugins = ["tests.chat_support"]
pytestmark = pytest.mark.django_db(transaction=True)


# hello ---------------------------------------------------------------------------------------


async def test_hello_holds_the_thread_this_players_words_and_the_pending_turn(
    demo_hunt, make_player
):
    player = await database_sync_to_async(make_player)("finder")
    rival = await database_sync_to_async(make_player)("rival")

    def setup():
        marta = Avatar.objects.get(slug="old-marta")
        rook = Avatar.objects.get(slug="captain-rook")
        conversation = Conversation.objects.create(player=player, avatar=marta)
        asked = Message.objects.create(
            conversation=conversation, role="player", text="Hello Marta", client_id="c1"
        )
        reply = Message.objects.create(
            conversation=conversation, role="avatar", text="Ahoy", reply_to=asked
        )
        failed = Message.objects.create(
            conversation=conversation, role="player", text="Again?", status="failed"
        )
        pending = Message.objects.create(
            conversation=conversation, role="player", text="Lamp?", status="generating"
        )
        # A reply row still being written is not part of the thread.
        Message.objects.create(
            conversation=conversation,
            role="avatar",
            text="half",
            reply_to=pending,
            status="generating",
        )
        marta_clue = Clue.objects.get(avatar=marta)
        rook_clue = Clue.objects.get(avatar=rook)
        Discovery.objects.create(player=player, word=marta_clue.word, clue=marta_clue)
        # Another avatar's word, and another player's: neither belongs in this hello.
        Discovery.objects.create(player=player, word=rook_clue.word, clue=rook_clue)
        Discovery.objects.create(player=rival, word=marta_clue.word, clue=marta_clue)
        return (
            [asked.pk, reply.pk, failed.pk, pending.pk],
            marta_clue.word.reveal_word(),
            rook_clue.word.reveal_word(),
            conversation.pk,
        )

    ids, marta_word, rook_word, conversation_id = await database_sync_to_async(setup)()
    ws, _close = await open_chat("old-marta", headers=await bearer_headers(player.user))
    hello = await receive(ws)
    assert hello["conversation_id"] == conversation_id
    assert hello["avatar"]["slug"] == "old-marta"
    assert hello["avatar"]["name"] == "Old Marta"
    assert [m["id"] for m in hello["history"]] == ids
    assert [m["role"] for m in hello["history"]] == ["player", "avatar", "player", "player"]
    assert hello["history"][0]["client_id"] == "c1"
    assert hello["history"][1]["reply_to"] == ids[0]
    assert hello["history"][2]["status"] == "failed"
    # The wire's one format: UTC, milliseconds, Z.
    assert all(
        m["created_at"] == iso_ms(datetime.fromisoformat(m["created_at"])) for m in hello["history"]
    )
    assert hello["discoveries"] == [{"position": 3, "word": marta_word}]
    assert hello["pending"] == ids[3]
    assert hello["hunt"]["status"] == "live"
    assert rook_word not in json.dumps(hello)
    await ws.disconnect()


async def test_hello_never_shows_a_word_this_player_has_not_found(demo_hunt, make_player):
    player = await database_sync_to_async(make_player)()
    words = await database_sync_to_async(lambda: list(demo_hunt.guarded_words().values()))()
    ws, _close = await open_chat("old-marta", headers=await bearer_headers(player.user))
    text = json.dumps(await receive(ws)).lower()
    assert not [w for w in words if w in text]
    await ws.disconnect()


async def test_two_tabs_opening_at_once_share_one_conversation(player_user, chat_avatar):
    headers = await session_headers(player_user)
    (a, _), (b, _) = await asyncio.gather(
        open_chat(chat_avatar.slug, headers=headers), open_chat(chat_avatar.slug, headers=headers)
    )
    hello_a, hello_b = await receive(a), await receive(b)
    assert hello_a["conversation_id"] == hello_b["conversation_id"]
    assert await database_sync_to_async(Conversation.objects.count)() == 1
    await a.disconnect()
    await b.disconnect()


# say -----------------------------------------------------------------------------------------


async def test_say_is_acknowledged_once_stored_and_answered_by_one_reply(chat, engine):
    engine.script("Welcome, traveller. ", "Sit by the fire.")
    await chat.send_json_to({"type": "say", "text": "  Good evening!  ", "client_id": "m-1"})
    ack = await receive(chat)
    assert ack["type"] == "ack"
    assert ack["client_id"] == "m-1"
    message = await stored(ack["message_id"])
    assert (message.role, message.text, message.client_id) == ("player", "Good evening!", "m-1")
    tokens, terminal = await collect_turn(chat, ack["message_id"])
    assert terminal["type"] == "reply"
    assert "".join(tokens) == terminal["text"] == "Welcome, traveller. Sit by the fire."
    reply = await stored(terminal["message_id"])
    assert (reply.role, reply.text, reply.reply_to_id) == ("avatar", terminal["text"], message.pk)


async def test_say_without_client_id_is_acknowledged_with_null(chat, engine):
    engine.script("Yes.")
    await chat.send_json_to({"type": "say", "text": "Hi"})
    ack = await receive(chat)
    assert ack["type"] == "ack"
    assert ack["client_id"] is None
    await collect_turn(chat, ack["message_id"])


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "say", "text": "   "}, "bad_request"),
        ({"type": "say", "text": ""}, "bad_request"),
        ({"type": "say"}, "bad_request"),
        ({"type": "say", "text": 42}, "bad_request"),
        ({"type": "say", "text": ["a"]}, "bad_request"),
        ({"type": "say", "text": "x" * 501}, "too_long"),
        ({"type": "say", "text": "hi", "client_id": "x" * 65}, "bad_request"),
        ({"type": "say", "text": "hi", "client_id": ""}, "bad_request"),
        ({"type": "say", "text": "hi", "client_id": 7}, "bad_request"),
    ],
)
async def test_a_bad_say_is_refused_and_nothing_stored(chat, frame, code):
    await chat.send_json_to(frame)
    error = await receive(chat)
    assert (error["type"], error["code"]) == ("error", code)
    assert error["detail"]
    assert await database_sync_to_async(Message.objects.count)() == 0
    await chat.send_json_to({"type": "ping"})
    assert (await receive(chat))["type"] == "pong"


async def test_an_error_names_the_client_id_of_the_refused_say(chat):
    await chat.send_json_to({"type": "say", "text": "x" * 501, "client_id": "long-one"})
    error = await receive(chat)
    assert (error["code"], error["client_id"]) == ("too_long", "long-one")


async def test_500_characters_after_trimming_are_accepted(chat, engine):
    engine.script("Long indeed.")
    # 500 characters, 167 tokens: within CHAT_MAX_TOKENS too (tests/test_chat_limits.py).
    text = ("Le café est très chaud. " * 25)[:499] + "!"
    await chat.send_json_to({"type": "say", "text": "  " + text + "\n"})
    ack = await receive(chat)
    assert ack["type"] == "ack"
    assert (await stored(ack["message_id"])).text == text
    await collect_turn(chat, ack["message_id"])


async def test_a_repeated_client_id_answers_the_original_ack_and_starts_nothing(chat, engine):
    engine.script("Once.")
    await chat.send_json_to({"type": "say", "text": "Hello", "client_id": "same"})
    ack = await receive(chat)
    await collect_turn(chat, ack["message_id"])
    await chat.send_json_to({"type": "say", "text": "Hello again", "client_id": "same"})
    again = await receive(chat)
    assert again == ack
    assert await database_sync_to_async(Message.objects.filter(role="player").count)() == 1
    assert engine.requests == 1
    await chat.send_json_to({"type": "ping"})
    assert (await receive(chat))["type"] == "pong"


async def test_a_resend_while_its_reply_is_generating_gets_the_ack_not_busy(chat, engine):
    gate = engine.hold()
    engine.script("Patience.")
    await chat.send_json_to({"type": "say", "text": "Hello", "client_id": "resent"})
    ack = await receive(chat)
    await chat.send_json_to({"type": "say", "text": "Hello", "client_id": "resent"})
    assert await receive(chat) == ack
    gate.set()
    await collect_turn(chat, ack["message_id"])
    assert engine.requests == 1


async def test_one_client_id_from_two_sockets_at_once_is_stored_once(
    player_user, chat_avatar, engine
):
    engine.script("One answer.")
    headers = await session_headers(player_user)
    (a, _), (b, _) = await asyncio.gather(
        open_chat(chat_avatar.slug, headers=headers), open_chat(chat_avatar.slug, headers=headers)
    )
    await receive(a), await receive(b)
    frame = {"type": "say", "text": "Twice?", "client_id": "tab-race"}
    await asyncio.gather(a.send_json_to(frame), b.send_json_to(frame))
    ack_a, ack_b = await receive(a), await receive(b)
    assert ack_a["type"] == ack_b["type"] == "ack"
    assert ack_a["message_id"] == ack_b["message_id"]
    await collect_turn(a, ack_a["message_id"])
    await collect_turn(b, ack_a["message_id"])
    assert await database_sync_to_async(Message.objects.filter(role="player").count)() == 1
    assert engine.requests == 1
    await a.disconnect()
    await b.disconnect()


async def test_say_is_busy_while_a_reply_is_being_generated(chat, engine):
    gate = engine.hold()
    engine.script("Slowly.")
    await chat.send_json_to({"type": "say", "text": "First", "client_id": "a"})
    ack = await receive(chat)
    await chat.send_json_to({"type": "say", "text": "Second", "client_id": "b"})
    busy = await receive(chat)
    assert (busy["type"], busy["code"], busy["client_id"]) == ("error", "busy", "b")
    gate.set()
    await collect_turn(chat, ack["message_id"])
    engine.script("Now yes.")
    await chat.send_json_to({"type": "say", "text": "Second", "client_id": "b"})
    assert (await receive(chat))["type"] == "ack"


async def test_two_sockets_saying_at_once_start_one_turn(player_user, chat_avatar, engine):
    gate = engine.hold()
    engine.script("Only one of you.")
    headers = await session_headers(player_user)
    (a, _), (b, _) = await asyncio.gather(
        open_chat(chat_avatar.slug, headers=headers), open_chat(chat_avatar.slug, headers=headers)
    )
    await receive(a), await receive(b)
    await asyncio.gather(
        a.send_json_to({"type": "say", "text": "Me first", "client_id": "a"}),
        b.send_json_to({"type": "say", "text": "No, me", "client_id": "b"}),
    )
    answers = sorted([await receive(a), await receive(b)], key=lambda f: f["type"])
    assert [f["type"] for f in answers] == ["ack", "error"]
    assert answers[1]["code"] == "busy"
    gate.set()
    await collect_turn(a, answers[0]["message_id"])
    await collect_turn(b, answers[0]["message_id"])
    assert await database_sync_to_async(Message.objects.filter(role="player").count)() == 1
    await a.disconnect()
    await b.disconnect()


async def test_say_is_rate_limited_per_player_with_retry_after(player_user, chat_avatar, engine):
    await database_sync_to_async(Hunt.objects.update)(chat_rate_per_minute=2, chat_burst=2)
    headers = await session_headers(player_user)
    ws, _ = await open_chat(chat_avatar.slug, headers=headers)
    await receive(ws)
    for n in range(2):
        engine.script("Fine.")
        await ws.send_json_to({"type": "say", "text": f"n{n}", "client_id": f"c{n}"})
        ack = await receive(ws)
        await collect_turn(ws, ack["message_id"])
    # The limit is the player's, not the socket's: a second socket shares it.
    other, _ = await open_chat(chat_avatar.slug, headers=headers)
    await receive(other)
    await other.send_json_to({"type": "say", "text": "more", "client_id": "c3"})
    error = await receive(other)
    assert (error["code"], error["client_id"]) == ("rate_limited", "c3")
    assert isinstance(error["retry_after"], int)
    assert 1 <= error["retry_after"] <= 30
    assert await database_sync_to_async(Message.objects.filter(role="player").count)() == 2
    await ws.disconnect()
    await other.disconnect()


async def test_outside_the_hunt_window_the_avatar_answers_with_a_notice(
    player_user, chat_avatar, engine
):
    now = timezone.now()
    await database_sync_to_async(Hunt.objects.update)(
        starts_at=now - timedelta(days=10), ends_at=now - timedelta(days=1)
    )
    ws, _ = await open_chat(chat_avatar.slug, headers=await session_headers(player_user))
    hello = await receive(ws)
    assert hello["hunt"]["status"] == "ended"
    engine.script("The hunt is over, friend.")
    await ws.send_json_to({"type": "say", "text": "Any words left?", "client_id": "late"})
    ack = await receive(ws)
    assert ack["type"] == "ack"
    notice = await receive(ws)
    assert (notice["type"], notice["code"]) == ("error", "hunt_not_live")
    assert "reply_to" not in notice
    _tokens, terminal = await collect_turn(ws, ack["message_id"])
    assert terminal["type"] == "reply"
    await ws.disconnect()


# rate ----------------------------------------------------------------------------------------


async def _replied_turn(chat, engine) -> dict:
    engine.script("A fine answer.")
    await chat.send_json_to({"type": "say", "text": "Tell me", "client_id": "t"})
    ack = await receive(chat)
    _tokens, terminal = await collect_turn(chat, ack["message_id"])
    return terminal


async def test_rate_stores_feedback_and_a_change_of_mind_updates_it(chat, engine):
    reply = await _replied_turn(chat, engine)
    await chat.send_json_to({"type": "rate", "message_id": reply["message_id"], "value": 1})
    assert await receive(chat) == {"type": "rated", "message_id": reply["message_id"]}
    await chat.send_json_to({"type": "rate", "message_id": reply["message_id"], "value": -1})
    assert (await receive(chat))["type"] == "rated"
    values = await database_sync_to_async(lambda: list(Feedback.objects.values_list("value")))()
    assert values == [(-1,)]


async def test_rating_a_message_not_an_avatar_reply_of_this_conversation_is_not_found(
    chat, engine, make_player, chat_avatar
):
    reply = await _replied_turn(chat, engine)
    stranger = await database_sync_to_async(make_player)("stranger")

    def foreign_reply() -> int:
        conversation = Conversation.objects.create(player=stranger, avatar=chat_avatar)
        return Message.objects.create(conversation=conversation, role="avatar", text="x").pk

    for message_id in (reply["reply_to"], await database_sync_to_async(foreign_reply)(), 10**9):
        await chat.send_json_to({"type": "rate", "message_id": message_id, "value": 1})
        error = await receive(chat)
        assert (error["type"], error["code"]) == ("error", "not_found")
    assert await database_sync_to_async(Feedback.objects.count)() == 0


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "rate", "message_id": 1, "value": 2},
        {"type": "rate", "message_id": 1, "value": 0},
        {"type": "rate", "message_id": 1, "value": True},
        {"type": "rate", "message_id": 1, "value": "1"},
        {"type": "rate", "message_id": "1", "value": 1},
        {"type": "rate", "value": 1},
        {"type": "rate", "message_id": 1},
    ],
)
async def test_a_malformed_rate_is_a_bad_request(chat, frame):
    await chat.send_json_to(frame)
    assert (await receive(chat))["code"] == "bad_request"


# ping and bad frames -------------------------------------------------------------------------


async def test_ping_is_answered_with_pong(chat):
    await chat.send_json_to({"type": "ping"})
    assert await receive(chat) == {"type": "pong"}


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "{",
        "[1, 2]",
        "42",
        '"say"',
        "null",
        '{"text": "no type"}',
        '{"type": "shout"}',
        '{"type": ["say"]}',
        '{"type": "say", "text": "' + "a" * 9000 + '"}',
    ],
)
async def test_a_malformed_frame_is_a_bad_request_and_the_connection_stays_open(chat, raw):
    await chat.send_to(text_data=raw)
    error = await receive(chat)
    assert (error["type"], error["code"]) == ("error", "bad_request")
    await chat.send_json_to({"type": "ping"})
    assert await receive(chat) == {"type": "pong"}


async def test_a_binary_frame_is_a_bad_request(chat):
    await chat.send_to(bytes_data=b"\x00\x01")
    assert (await receive(chat))["code"] == "bad_request"
    await chat.send_json_to({"type": "ping"})
    assert await receive(chat) == {"type": "pong"}


async def test_a_flood_of_bad_frames_closes_the_connection_with_4429(chat):
    for _ in range(30):
        await chat.send_to(text_data="garbage")
    frames = []
    while True:
        output = await chat.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
        frames.append(json.loads(output["text"]))
    assert output["code"] == 4429
    assert 20 <= len(frames) <= 21
    assert {f["code"] for f in frames} == {"bad_request"}


async def test_a_flood_of_valid_frames_closes_the_connection_too(chat):
    for _ in range(70):
        await chat.send_json_to({"type": "ping"})
    pongs = 0
    while True:
        output = await chat.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
        pongs += 1
    assert output["code"] == 4429
    assert pongs == 60


# Relayed turn events -------------------------------------------------------------------------


async def test_group_events_are_relayed_as_the_contracts_frames(chat, chat_hello):
    layer = get_channel_layer()
    group = f"chat.conversation.{chat_hello['conversation_id']}"
    events = [
        {"type": "chat.queued", "reply_to": 7, "position": 2},
        {"type": "chat.token", "reply_to": 7, "text": "Hel"},
        {"type": "chat.token", "reply_to": 7, "text": "lo"},
        {"type": "chat.discovery", "position": 3, "word": "agent", "hunt": "h", "first": True},
        {"type": "chat.reply", "reply_to": 7, "message_id": 8, "text": "Hello"},
        {"type": "chat.failed", "reply_to": 9, "detail": "The model stopped."},
    ]
    for event in events:
        await layer.group_send(group, event)
    assert [await receive(chat) for _ in events] == [
        {"type": "queued", "reply_to": 7, "position": 2},
        {"type": "token", "reply_to": 7, "text": "Hel"},
        {"type": "token", "reply_to": 7, "text": "lo"},
        {"type": "discovery", "position": 3, "word": "agent", "hunt": "h", "first": True},
        {"type": "reply", "reply_to": 7, "message_id": 8, "text": "Hello"},
        {
            "type": "error",
            "code": "generation_failed",
            "detail": "The model stopped.",
            "reply_to": 9,
        },
    ]


async def test_each_turn_gets_exactly_one_terminal_frame_per_connection(chat, chat_hello):
    layer = get_channel_layer()
    group = f"chat.conversation.{chat_hello['conversation_id']}"
    await layer.group_send(
        group, {"type": "chat.reply", "reply_to": 5, "message_id": 6, "text": "a"}
    )
    await layer.group_send(
        group, {"type": "chat.reply", "reply_to": 5, "message_id": 6, "text": "a"}
    )
    await layer.group_send(group, {"type": "chat.failed", "reply_to": 5})
    await layer.group_send(group, {"type": "chat.token", "reply_to": 5, "text": "late"})
    assert (await receive(chat))["type"] == "reply"
    await chat.send_json_to({"type": "ping"})
    assert await receive(chat) == {"type": "pong"}


async def test_events_of_a_turn_that_hello_shows_finished_are_dropped(player_user, chat_avatar):
    """The gap between joining the group and reading the thread: a reply stored in between is
    in hello's history, and its queued event must not be sent a second time."""

    def finished_turn() -> tuple[int, int, int]:
        conversation = Conversation.objects.create(player=player_user.player, avatar=chat_avatar)
        asked = Message.objects.create(conversation=conversation, role="player", text="q")
        reply = Message.objects.create(
            conversation=conversation, role="avatar", text="a", reply_to=asked
        )
        return conversation.pk, asked.pk, reply.pk

    conversation_id, asked, reply = await database_sync_to_async(finished_turn)()
    ws, _ = await open_chat(chat_avatar.slug, headers=await session_headers(player_user))
    hello = await receive(ws)
    assert hello["pending"] is None
    assert [m["id"] for m in hello["history"]] == [asked, reply]
    layer = get_channel_layer()
    group = f"chat.conversation.{conversation_id}"
    await layer.group_send(group, {"type": "chat.token", "reply_to": asked, "text": "a"})
    await layer.group_send(
        group, {"type": "chat.reply", "reply_to": asked, "message_id": reply, "text": "a"}
    )
    await ws.send_json_to({"type": "ping"})
    assert await receive(ws) == {"type": "pong"}
    await ws.disconnect()


# Reconnects and faults -----------------------------------------------------------------------


async def test_a_reconnecting_client_gets_the_rest_of_a_reply_in_flight(
    player_user, chat_avatar, engine
):
    headers = await session_headers(player_user)
    first, _ = await open_chat(chat_avatar.slug, headers=headers)
    await receive(first)
    gate = engine.hold(after=4)
    engine.script(
        "My grandmother ",
        "lit this lamp ",
        "every night for fifty years. ",
        "She never missed one. ",
        "Not even during ",
        "the great storm.",
    )
    await first.send_json_to({"type": "say", "text": "Tell a story", "client_id": "s"})
    ack = await receive(first)
    token = await receive(first)
    assert (token["type"], token["reply_to"]) == ("token", ack["message_id"])
    await first.disconnect()

    second, _ = await open_chat(chat_avatar.slug, headers=headers)
    hello = await receive(second)
    assert hello["pending"] == ack["message_id"]
    assert hello["history"][-1]["id"] == ack["message_id"]
    gate.set()
    tokens, terminal = await collect_turn(second, ack["message_id"])
    assert terminal["type"] == "reply"
    assert terminal["text"] == (
        "My grandmother lit this lamp every night for fifty years. "
        "She never missed one. Not even during the great storm."
    )
    # The rest of the stream reached the new connection, then the whole reply.
    assert tokens
    assert terminal["text"].endswith("".join(tokens))
    await second.disconnect()


async def test_a_failed_turn_ends_with_generation_failed_and_the_player_may_ask_again(chat, engine):
    engine.fail_next()
    await chat.send_json_to({"type": "say", "text": "Break", "client_id": "f"})
    ack = await receive(chat)
    _tokens, terminal = await collect_turn(chat, ack["message_id"])
    assert (terminal["type"], terminal["code"]) == ("error", "generation_failed")
    assert terminal["reply_to"] == ack["message_id"]
    assert (await stored(ack["message_id"])).status == "failed"
    engine.script("Better now.")
    await chat.send_json_to({"type": "say", "text": "Break", "client_id": "f2"})
    again = await receive(chat)
    assert again["type"] == "ack"
    assert (await collect_turn(chat, again["message_id"]))[1]["type"] == "reply"


async def test_a_turn_no_worker_finishes_ends_with_generation_failed(chat, chat_hello, settings):
    """A lost job (its queue emptied by a Redis restart, say) must not mean silence."""
    settings.GENERATION_QUEUE_TIMEOUT = 1

    def lost_turn() -> int:
        message = Message.objects.create(
            conversation_id=chat_hello["conversation_id"],
            role="player",
            text="Hello?",
            status="pending",
        )
        Message.objects.filter(pk=message.pk).update(
            created_at=timezone.now() - timedelta(seconds=5)
        )
        return message.pk

    message_id = await database_sync_to_async(lost_turn)()
    await chat.disconnect()
    ws, _ = await open_chat(chat_hello["avatar"]["slug"], headers=chat_hello["_headers"])
    hello = await receive(ws)
    assert hello["pending"] == message_id
    failed = await receive(ws, timeout=10)
    assert (failed["code"], failed["reply_to"]) == ("generation_failed", message_id)
    assert (await stored(message_id)).status == "failed"
    await ws.disconnect()
