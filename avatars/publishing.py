"""Channel-layer events sent from worker threads: a turn's frames reach its conversation's group.

A generation job runs in a thread (a Celery worker's, or the in-process pool's), while the
channel layer is asyncio code; `Publisher` hands each event to the right event loop and waits
for it, which keeps a reply's frames in order.
"""

from __future__ import annotations

import asyncio
import threading

from asgiref.sync import SyncToAsync
from channels.layers import get_channel_layer

PUBLISH_TIMEOUT = 10


class Publisher:
    """Sends channel-layer events from a worker thread, in order, on one event loop.

    In-process (no Redis) the loop is the ASGI server's own: the in-memory channel layer's
    queues belong to it, and touching them from another loop or thread is not safe. With Redis
    the loop is a background thread of this process, so that channels_redis keeps one
    connection pool instead of opening one per event loop. Each send waits for the previous one
    to be delivered, which keeps a reply's frames in order.
    """

    _own_loop: asyncio.AbstractEventLoop | None = None
    _lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or self._background_loop()
        self.layer = get_channel_layer()

    @classmethod
    def _background_loop(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._own_loop is None or cls._own_loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="channel-publisher", daemon=True
                ).start()
                cls._own_loop = loop
            return cls._own_loop

    def send(self, group: str, event: dict) -> None:
        sending = self.layer.group_send(group, event)
        try:
            future = asyncio.run_coroutine_threadsafe(sending, self.loop)
        except RuntimeError:  # the server's loop is closed: it is shutting down
            sending.close()
            raise
        future.result(timeout=PUBLISH_TIMEOUT)


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's event loop when called from one of its sync_to_async threads (where
    asgiref records it: it is how async_to_sync finds its way back to that loop)."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None
