"""The live leaderboard socket (contract §3.2) on the real `lostwallet.asgi.application`."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from hunt import consumers
from hunt.leaderboard import announce_leaderboard_change, group_name, invalidate_leaderboard
from lostwallet.asgi import application
from tests.hunt_helpers import discover, guarded_positions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_hashing")]


async def connect(slug: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, f"/ws/hunts/{slug}/leaderboard/")
    connected, _code = await ws.connect(timeout=5)
    assert connected
    return ws


async def test_it_sends_the_board_on_connect_without_login(demo_hunt, make_player):
    ann = await database_sync_to_async(make_player)("ann")
    position = (await database_sync_to_async(guarded_positions)(demo_hunt))[0]
    await database_sync_to_async(discover)(ann, demo_hunt, position)
    ws = await connect(demo_hunt.slug)
    frame = await ws.receive_json_from(timeout=5)
    assert frame["type"] == "leaderboard"
    assert [(r["rank"], r["player"], r["words_found"]) for r in frame["rows"]] == [(1, "ann", 1)]
    assert frame["updated_at"].endswith("Z")
    await ws.disconnect()


async def test_the_frame_rows_are_those_of_the_rest_answer(demo_hunt, make_player, client):
    ann = await database_sync_to_async(make_player)("ann")
    position = (await database_sync_to_async(guarded_positions)(demo_hunt))[0]
    await database_sync_to_async(discover)(ann, demo_hunt, position)
    ws = await connect(demo_hunt.slug)
    frame = await ws.receive_json_from(timeout=5)
    rest = await sync_to_async(client.get)(f"/api/v1/hunts/{demo_hunt.slug}/leaderboard")
    assert frame["rows"] == rest.json()["rows"]
    assert frame["updated_at"] == rest.json()["updated_at"]
    await ws.disconnect()


async def test_an_unknown_hunt_is_closed_with_4404(db):
    ws = WebsocketCommunicator(application, "/ws/hunts/no-such-hunt/leaderboard/")
    connected, _ = await ws.connect(timeout=5)
    assert connected
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}


async def test_it_pushes_the_new_board_after_a_discovery(demo_hunt, make_player):
    ws = await connect(demo_hunt.slug)
    assert (await ws.receive_json_from(timeout=5))["rows"] == []
    ann = await database_sync_to_async(make_player)("ann")
    position = (await database_sync_to_async(guarded_positions)(demo_hunt))[0]
    await database_sync_to_async(discover)(ann, demo_hunt, position)
    # What the gate does after its transaction commits.
    await database_sync_to_async(announce_leaderboard_change)(demo_hunt.pk)
    frame = await ws.receive_json_from(timeout=5)
    assert [r["player"] for r in frame["rows"]] == ["ann"]
    await ws.disconnect()


async def test_a_change_announced_from_a_job_thread_reaches_the_socket(demo_hunt, make_player):
    """In-process generation jobs run in a plain thread pool, outside asgiref's threads: the
    event must still reach the in-memory layer on the sockets' loop, at once."""
    ws = await connect(demo_hunt.slug)
    await ws.receive_json_from(timeout=5)
    ann = await database_sync_to_async(make_player)("ann")
    position = (await database_sync_to_async(guarded_positions)(demo_hunt))[0]
    await database_sync_to_async(discover)(ann, demo_hunt, position)
    await asyncio.to_thread(announce_leaderboard_change, demo_hunt.pk)
    frame = await ws.receive_json_from(timeout=2)
    assert [r["player"] for r in frame["rows"]] == ["ann"]
    await ws.disconnect()


async def test_a_burst_of_changes_becomes_one_frame(demo_hunt, make_player, monkeypatch):
    monkeypatch.setattr(consumers, "MIN_INTERVAL", 0.5)
    ws = await connect(demo_hunt.slug)
    await ws.receive_json_from(timeout=5)
    layer = get_channel_layer()
    group = group_name(demo_hunt.pk)
    players = [await database_sync_to_async(make_player)(f"p{i}") for i in range(5)]
    position = (await database_sync_to_async(guarded_positions)(demo_hunt))[0]
    for player in players:
        await database_sync_to_async(discover)(player, demo_hunt, position)
    await database_sync_to_async(invalidate_leaderboard)(demo_hunt.pk)
    await layer.group_send(group, {"type": "leaderboard.changed"})
    assert len((await ws.receive_json_from(timeout=5))["rows"]) == 5
    # Right after that frame, four more changes are announced within the interval...
    for _ in range(4):
        await layer.group_send(group, {"type": "leaderboard.changed"})
    # ...and make one frame, not four, once the interval is over.
    assert (await ws.receive_json_from(timeout=5))["type"] == "leaderboard"
    assert await ws.receive_nothing(timeout=0.8)
    # A later change is still sent.
    await layer.group_send(group, {"type": "leaderboard.changed"})
    assert (await ws.receive_json_from(timeout=5))["type"] == "leaderboard"
    await ws.disconnect()


async def test_it_answers_pings_and_ignores_other_frames(demo_hunt):
    ws = await connect(demo_hunt.slug)
    await ws.receive_json_from(timeout=5)
    await ws.send_to(text_data="not json either")
    await ws.send_json_to({"type": "say", "text": "hi"})
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    await ws.disconnect()
