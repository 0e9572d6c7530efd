"""The chat socket, `/ws/chat/<avatar_slug>/` (client contract §3.1; docs/protocol.md).

Thin: it checks frames, calls the actions of avatars/chat.py through database_sync_to_async,
and relays the turn pipeline's group events (`chat.token`, `chat.reply`, `chat.discovery`,
`chat.failed`, `chat.queued`) as the contract's frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from avatars import chat, turns
from hunt.accounts import AccountSocket
from hunt.crypto import open_text
from hunt.models import Incident
from lostwallet import connections
from lostwallet.wire import (
    GENERATION_FAILED_DETAIL,
    CloseCode,
    ErrorCode,
    discovery_frame,
    error_frame,
    hunt_players_group,
    reply_frame,
    token_frame,
)

logger = logging.getLogger(__name__)

# A frame larger than this is refused unread: no say or rate comes near it.
MAX_FRAME_CHARS = 8192
MAX_CLIENT_ID = 64
# A sustained flood closes the connection with CloseCode.FLOOD: more than MAX_FRAMES frames,
# or more than MAX_REFUSALS refused ones, within FLOOD_WINDOW seconds. A well-behaved client
# (a ping every ~25 s, a say at most every few seconds) stays far below both.
FLOOD_WINDOW = 10.0
MAX_FRAMES = 60
MAX_REFUSALS = 20
# Details of the say refusals chat.say decides (TOO_LONG's names a setting: see say_refused).
SAY_REFUSALS = {
    ErrorCode.HUNT_NOT_LIVE: "The organizers have paused the hunt; the avatars listen again "
    "when it resumes.",
    ErrorCode.BUSY: "A reply is still being written.",
    ErrorCode.OVERLOADED: "The avatars have too many questions waiting; ask again shortly.",
    ErrorCode.RATE_LIMITED: "Too many messages; wait a little.",
}


def _db(func):
    """Runs ORM work off the event loop. Not thread-sensitive: each call may take any thread
    of the executor (each with its own database connection), so one socket's say does not
    queue behind every other socket's database round trips in a single shared thread."""
    return database_sync_to_async(func, thread_sensitive=False)


def say_refused(code: ErrorCode) -> str:
    """The detail of a say refused by chat.say."""
    if code == ErrorCode.TOO_LONG:
        return (
            f"At most {settings.CHAT_MAX_TOKENS} tokens: the avatar's model reads text in word "
            "pieces, and some scripts take several per character."
        )
    return SAY_REFUSALS[code]


class FloodMeter:
    """Counts frames and refusals of one connection in a sliding window."""

    def __init__(self) -> None:
        self.frames: deque[float] = deque()
        self.refusals: deque[float] = deque()

    @staticmethod
    def _count(events: deque[float], limit: int) -> bool:
        now = time.monotonic()
        events.append(now)
        while events and events[0] < now - FLOOD_WINDOW:
            events.popleft()
        return len(events) > limit

    def frame(self) -> bool:
        """Counts a received frame; True when the connection floods."""
        return self._count(self.frames, MAX_FRAMES)

    def refusal(self) -> bool:
        """Counts a refused frame; True when the connection floods."""
        return self._count(self.refusals, MAX_REFUSALS)


class ChatConsumer(AccountSocket, AsyncJsonWebsocketConsumer):
    session: chat.ChatSession | None = None
    closing = False

    async def connect(self) -> None:
        slug = self.scope["url_route"]["kwargs"]["avatar_slug"]
        code, session = await _db(chat.open_conversation)(
            self.scope["user"], slug, connections.address_of(self.scope)
        )
        if session is None:
            # Accept, then close: a close before accept() reaches the client as a bare HTTP
            # 403 and the contract's code would be lost.
            await self.accept()
            await self.close(code.value)
            return
        self.places = connections.Places(self.channel_name, connections.socket_limits(self.scope))
        if not await self.places.take():
            await self.accept()
            await self.close(CloseCode.TOO_MANY_SOCKETS.value)
            return
        self.session = session
        self.flood = FloodMeter()
        self.watchers: dict[int, asyncio.Task] = {}
        # Join the group before reading the thread. An event published in between waits in
        # this consumer's queue and is relayed after `hello`; one whose turn `hello` already
        # shows as finished is dropped (see `_settled`), so nothing is lost and nothing doubled.
        await self.channel_layer.group_add(session.group, self.channel_name)
        if session.hunt_id is not None:
            await self.channel_layer.group_add(
                hunt_players_group(session.hunt_id), self.channel_name
            )
        await self.join_account_group()
        hello = await _db(chat.hello_frame)(session.conversation_id)
        self._settled = {
            item["id"]
            for item in hello["history"]
            if item["role"] == "player" and item["status"] in ("done", "failed")
        }
        self._discovered = {d["position"] for d in hello["discoveries"]}
        await self.accept()
        await self.send_json(hello)
        if hello["pending"] is not None:
            self._watch(hello["pending"])

    async def disconnect(self, code: int) -> None:
        if self.session is None:
            return
        for watcher in self.watchers.values():
            watcher.cancel()
        await self.channel_layer.group_discard(self.session.group, self.channel_name)
        if self.session.hunt_id is not None:
            await self.channel_layer.group_discard(
                hunt_players_group(self.session.hunt_id), self.channel_name
            )
        await self.leave_account_group()
        await self.places.give_back()

    # Client frames -------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.session is None or self.closing:
            return  # a refused or flooding connection, closing
        if self.flood.frame():
            return await self._close_flood()
        if text_data is None:
            return await self._refuse(ErrorCode.BAD_REQUEST, "Frames are JSON text, not binary.")
        if len(text_data) > MAX_FRAME_CHARS:
            return await self._refuse(ErrorCode.BAD_REQUEST, "Frame too large.")
        try:
            content = json.loads(text_data)
        except ValueError:
            return await self._refuse(ErrorCode.BAD_REQUEST, "Frames must be JSON.")
        if not isinstance(content, dict):
            return await self._refuse(ErrorCode.BAD_REQUEST, "A frame is a JSON object.")
        kind = content.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return await self._refuse(ErrorCode.BAD_REQUEST, "Unknown frame type.")
        await handler(self, content)

    async def on_say(self, content: dict) -> None:
        session = self.session
        text, client_id = content.get("text"), content.get("client_id")
        if client_id is not None and (
            not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID
        ):
            return await self._refuse(
                ErrorCode.BAD_REQUEST, f"client_id is a string of 1 to {MAX_CLIENT_ID} characters."
            )
        extra = {"client_id": client_id} if client_id else {}
        if not isinstance(text, str):
            return await self._refuse(ErrorCode.BAD_REQUEST, "text must be a string.", **extra)
        text = text.strip()
        if not text:
            return await self._refuse(ErrorCode.BAD_REQUEST, "text is empty.", **extra)
        if len(text) > settings.CHAT_MAX_CHARS:
            return await self._refuse(
                ErrorCode.TOO_LONG, f"At most {settings.CHAT_MAX_CHARS} characters.", **extra
            )
        outcome = await _db(chat.say)(session, text, client_id)
        if outcome.refusal is not None:
            if outcome.retry_after is not None:
                extra["retry_after"] = outcome.retry_after
            return await self._refuse(outcome.refusal, say_refused(outcome.refusal), **extra)
        await self._ack(outcome.message_id, client_id)
        if outcome.created:
            self._watch(outcome.message_id)
            if not outcome.hunt_live:
                # A notice, not a refusal: the avatar answers, but no clue opens outside the
                # hunt's time window. It carries no reply_to because it ends no turn.
                await self._error(
                    ErrorCode.HUNT_NOT_LIVE, "The hunt is not running: no word can be found now."
                )

    async def on_rate(self, content: dict) -> None:
        message_id, value = content.get("message_id"), content.get("value")
        # type() rather than isinstance(): JSON true/false are not ratings nor ids.
        if type(message_id) is not int or type(value) is not int or value not in (1, -1):
            return await self._refuse(
                ErrorCode.BAD_REQUEST, "rate needs message_id and value 1 or -1."
            )
        session = self.session
        stored = await _db(chat.do_rate)(
            session.conversation_id, session.player_id, message_id, value
        )
        if not stored:
            return await self._refuse(ErrorCode.NOT_FOUND, "No such reply in this conversation.")
        await self.send_json({"type": "rated", "message_id": message_id})

    async def on_ping(self, content: dict) -> None:
        await self.send_json({"type": "pong"})

    _handlers = {"say": on_say, "rate": on_rate, "ping": on_ping}

    # Turn events from the conversation's group ---------------------------------------------

    async def chat_queued(self, event: dict) -> None:
        if event["reply_to"] not in self._settled:
            await self.send_json(
                {"type": "queued", "reply_to": event["reply_to"], "position": event["position"]}
            )

    async def chat_token(self, event: dict) -> None:
        if event["reply_to"] not in self._settled:
            await self.send_json(token_frame(event["reply_to"], open_text(event["text"])))

    async def chat_reply(self, event: dict) -> None:
        if self._settle(event["reply_to"]):
            text = open_text(event["text"])
            await self.send_json(reply_frame(event["reply_to"], event["message_id"], text))

    async def chat_discovery(self, event: dict) -> None:
        # The group holds only this player's sockets: the conversation is (player, avatar).
        if event["position"] in self._discovered:
            return
        self._discovered.add(event["position"])
        await self.send_json(
            discovery_frame(
                event["position"], open_text(event["word"]), event["hunt"], event["first"]
            )
        )

    async def chat_failed(self, event: dict) -> None:
        if self._settle(event["reply_to"]):
            await self._error(
                ErrorCode.GENERATION_FAILED,
                event.get("detail") or GENERATION_FAILED_DETAIL,
                reply_to=event["reply_to"],
            )

    async def hunt_announcement(self, event: dict) -> None:
        await self.send_json(event["frame"])

    # Helpers -------------------------------------------------------------------------------

    def _settle(self, reply_to: int) -> bool:
        """Marks a turn finished on this connection; False when it already was, so each
        acknowledged say gets exactly one terminal frame here."""
        if reply_to in self._settled:
            return False
        self._settled.add(reply_to)
        watcher = self.watchers.pop(reply_to, None)
        if watcher is not None:
            watcher.cancel()
        return True

    def _watch(self, message_id: int) -> None:
        """Makes sure this turn ends: past its deadline a turn no worker finished is failed
        (and the failure published to the group), so a lost job never means silence."""
        if message_id not in self.watchers:
            self.watchers[message_id] = asyncio.ensure_future(self._expire(message_id))

    async def _expire(self, message_id: int) -> None:
        try:
            while (wait := await _db(turns.expire_stuck_turn)(message_id)) is not None:
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The next connection's hello starts a new watch; nothing to tell this client yet.
            logger.exception("watching turn %s failed", message_id)
        finally:
            self.watchers.pop(message_id, None)

    async def _ack(self, message_id: int, client_id: str | None) -> None:
        await self.send_json({"type": "ack", "message_id": message_id, "client_id": client_id})

    async def _error(self, code: ErrorCode, detail: str, **fields) -> None:
        await self.send_json(error_frame(code, detail, **fields))

    async def _refuse(self, code: ErrorCode, detail: str, **fields) -> None:
        await self._error(code, detail, **fields)
        if self.flood.refusal():
            await self._close_flood()

    async def _close_flood(self) -> None:
        logger.info("closing flooding chat socket of player %s", self.session.player_id)
        self.closing = True
        await self.close(CloseCode.FLOOD.value)
        await _db(chat.note_incident)(self.session, Incident.Kind.FLOOD)
