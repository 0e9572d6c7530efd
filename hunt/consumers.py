"""The live leaderboard socket, `/ws/hunts/<slug>/leaderboard/` (client contract §3.2).

No login: spectators watch too. The board is sent on connect and after each
`leaderboard.changed` event of the group `hunt.leaderboard.<hunt_id>`, at most once per
`MIN_INTERVAL`: a burst of discoveries becomes one frame carrying the latest board.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from hunt.accounts import AccountSocket
from hunt.leaderboard import group_name, leaderboard_frame, register_socket_loop
from hunt.models import Hunt
from lostwallet.connections import Places, socket_limits
from lostwallet.wire import CloseCode

MIN_INTERVAL = 1.0


@database_sync_to_async
def _hunt(slug: str) -> Hunt | None:
    return Hunt.objects.only("pk", "slug").filter(slug=slug).first()


@database_sync_to_async
def _frame(hunt_id: int) -> str:
    return leaderboard_frame(hunt_id)


class LeaderboardConsumer(AccountSocket, AsyncJsonWebsocketConsumer):
    hunt: Hunt | None = None
    places: Places | None = None
    group: str = ""
    _last_sent = float("-inf")
    _flush: asyncio.Task | None = None
    _dirty = False

    async def connect(self) -> None:
        self.hunt = await _hunt(self.scope["url_route"]["kwargs"]["slug"])
        if self.hunt is None:
            # Accept, then close: a close before accept() reaches the client as a bare HTTP
            # 403 and the code would be lost.
            await self.accept()
            await self.close(CloseCode.UNKNOWN.value)
            return
        # Spectators need no account, so only their address is capped.
        self.places = Places(self.channel_name, socket_limits(self.scope, per_user=False))
        if not await self.places.take():
            await self.accept()
            await self.close(CloseCode.TOO_MANY_SOCKETS.value)
            return
        register_socket_loop(asyncio.get_running_loop())
        self.group = group_name(self.hunt.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.join_account_group()
        await self.accept()
        await self._send_board()

    async def disconnect(self, code: int) -> None:
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.leave_account_group()
        if self.places is not None:
            await self.places.give_back()

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """A read-only socket: a ping is answered, anything else (even non-JSON) ignored."""
        try:
            content = json.loads(text_data or "")
        except ValueError:
            return
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def leaderboard_changed(self, event: dict) -> None:
        """Coalesces: marks the board dirty and lets one flush task per connection send it.

        The handler returns at once, so a burst of events becomes one frame; an event arriving
        while a frame is being built marks the board dirty again and gets its own frame.
        """
        self._dirty = True
        if self._flush is None or self._flush.done():
            self._flush = asyncio.ensure_future(self._flush_dirty())

    async def _flush_dirty(self) -> None:
        loop = asyncio.get_running_loop()
        while self._dirty:
            delay = self._last_sent + MIN_INTERVAL - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._dirty = False
            await self._send_board()

    async def _send_board(self) -> None:
        self._last_sent = asyncio.get_running_loop().time()
        await self.send(text_data=await _frame(self.hunt.pk))
