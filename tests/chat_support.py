"""Helpers and fixtures for the chat-socket tests (imported by tests/test_chat_*.py).

`ScriptedEngine` stands in for the model only, below the task layer: the consumer, the chat
actions, the turn pipeline, the gate and the channel layer all run for real.

Test modules load it as a plugin (`pytest_plugins`) for its fixtures and import its helpers;
it is imported before pytest could rewrite its asserts, hence PYTEST_DONT_REWRITE.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from functools import lru_cache
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from avatars.models import Avatar, Message
from hunt.models import ApiToken
from lostwallet.asgi import application

TURN_TIMEOUT = 30


class ChatClient(WebsocketCommunicator):
    """A communicator that keeps frames it peeked at (the first frame after the handshake)."""

    def __init__(self, path: str, headers: list):
        super().__init__(application, path, headers=headers)
        self.buffer: deque[dict] = deque()

    async def next_frame(self, timeout: float = TURN_TIMEOUT) -> dict:
        if self.buffer:
            return self.buffer.popleft()
        output = await self.receive_output(timeout)
        if output["type"] == "websocket.close":
            raise AssertionError(f"socket closed with {output.get('code')}")
        return json.loads(output["text"])


async def open_chat(slug: str, headers: list) -> tuple[ChatClient, int | str | None]:
    """Opens /ws/chat/<slug>/. Returns (client, None) when it stays open, (client, close code)
    when the server accepted and closed at once, (client, "refused") for an HTTP refusal."""
    client = ChatClient(f"/ws/chat/{slug}/", headers)
    connected, _ = await client.connect(timeout=TURN_TIMEOUT)
    if not connected:
        return client, "refused"
    output = await client.receive_output(TURN_TIMEOUT)
    if output["type"] == "websocket.close":
        return client, output.get("code")
    client.buffer.append(json.loads(output["text"]))
    return client, None


async def receive(client: ChatClient, timeout: float = TURN_TIMEOUT) -> dict:
    return await client.next_frame(timeout)


async def collect_turn(
    client: ChatClient, reply_to: int, others: list | None = None
) -> tuple[list[str], dict]:
    """Frames of one turn up to its terminal frame: (token texts, `reply` or `error` frame).

    Frames of the turn that are neither (discovery, queued) go to `others` when given.
    """
    tokens: list[str] = []
    while True:
        frame = await receive(client)
        if frame["type"] == "token" and frame["reply_to"] == reply_to:
            tokens.append(frame["text"])
        elif frame["type"] in ("reply", "error") and frame.get("reply_to") == reply_to:
            return tokens, frame
        elif others is not None:
            others.append(frame)
        elif frame["type"] not in ("queued", "discovery"):
            raise AssertionError(f"unexpected frame during turn {reply_to}: {frame}")


@database_sync_to_async
def session_headers(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    return [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


@database_sync_to_async
def bearer_headers(user) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {ApiToken.issue(user)}".encode())]


@database_sync_to_async
def stored(message_id: int) -> Message:
    return Message.objects.get(pk=message_id)


@lru_cache(maxsize=1)
def real_tokenizer():
    """The default model's tokenizer: prompts and summaries are built with the real one."""
    from transformers import AutoTokenizer

    from avatars.engine.loading import tokenizer_folder

    return AutoTokenizer.from_pretrained(tokenizer_folder(), local_files_only=True)


class ScriptedStream:
    """A Stream (avatars/engine/engine.py) whose text chunks come from a script."""

    # Like a model, it takes a moment per chunk: the pipeline flushes token frames every
    # ~50 ms, so each chunk here becomes its own frame.
    PACE = 0.06

    def __init__(self, chunks: list[str], hold: tuple[int, threading.Event] | None, fail: bool):
        self.chunks, self.hold, self.fail = chunks, hold, fail
        self.cancelled = False
        self.finish_reason: str | None = None

    def __iter__(self):
        for n, chunk in enumerate(self.chunks):
            if self.hold and n == self.hold[0]:
                self.hold[1].wait(TURN_TIMEOUT)
            time.sleep(self.PACE)
            yield chunk
        if self.hold and self.hold[0] >= len(self.chunks):
            self.hold[1].wait(TURN_TIMEOUT)
        if self.fail:
            from avatars.engine.engine import EngineError

            self.finish_reason = "error"
            raise EngineError("scripted model failure")
        self.finish_reason = "stop"

    def cancel(self) -> None:
        self.cancelled = True

    def result(self, timeout: float | None = None):
        return SimpleNamespace(finish_reason=self.finish_reason, text="".join(self.chunks))


class ScriptedEngine:
    """The model's stand-in (what `avatars.engine.get_engine()` returns): each request streams
    the next scripted chunks.

    `hold(after=n)` pauses the next stream after n chunks until the returned event is set;
    `fail_next()` makes the next stream raise, like a model crashing mid-turn.
    """

    def __init__(self) -> None:
        self.tokenizer = real_tokenizer()
        self.scripts: deque[list[str]] = deque()
        self.holds: deque[tuple[int, threading.Event]] = deque()
        self.failures = 0
        self.requests = 0
        self.last_request = None
        self._lock = threading.Lock()

    def script(self, *chunks: str) -> None:
        self.scripts.append(list(chunks))

    def hold(self, after: int = 0) -> threading.Event:
        event = threading.Event()
        self.holds.append((after, event))
        return event

    def fail_next(self) -> None:
        self.failures += 1

    def submit(self, request) -> ScriptedStream:
        with self._lock:
            self.requests += 1
            self.last_request = request
            fail = self.failures > 0
            self.failures -= fail
            chunks = self.scripts.popleft() if self.scripts and not fail else []
            hold = self.holds.popleft() if self.holds else None
        return ScriptedStream(chunks, hold, fail)

    def warm(self, prompt_ids) -> None:
        """Prefix warming has nothing to do without a model."""


@pytest.fixture
def engine(monkeypatch) -> ScriptedEngine:
    scripted = ScriptedEngine()
    monkeypatch.setattr("avatars.engine.get_engine", lambda model=None: scripted)
    return scripted


@pytest.fixture
def player_user(make_player):
    return make_player("player").user


@pytest.fixture
def chat_avatar(demo_hunt) -> Avatar:
    """An avatar of the live demo hunt that guards no word: turns skip the gate's model."""
    return Avatar.objects.create(
        hunt=demo_hunt,
        slug="lamp-keeper",
        name="The Lamp Keeper",
        persona="A calm keeper of an old harbour lamp. Answers briefly and kindly.",
        greeting="Mind the step, the lamp is hot.",
    )


@pytest.fixture
async def chat_pair(player_user, chat_avatar):
    """(An open chat of `player_user` with `chat_avatar`, its hello frame)."""
    headers = await session_headers(player_user)
    client, close = await open_chat(chat_avatar.slug, headers=headers)
    assert close is None, close
    hello = await receive(client)
    hello["_headers"] = headers
    yield client, hello
    await client.disconnect()


@pytest.fixture
def chat(chat_pair) -> ChatClient:
    return chat_pair[0]


@pytest.fixture
def chat_hello(chat_pair) -> dict:
    return chat_pair[1]


class LiveChat:
    """A real WebSocket client (the `websockets` package) for tests against a running server."""

    def __init__(self, host: str, slug: str, token: str, timeout: float = 60):
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(
                f"ws://{host}/ws/chat/{slug}/",
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=timeout,
            )
        )

    def __enter__(self) -> LiveChat:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def next(self, timeout: float = TURN_TIMEOUT) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def send(self, frame: dict) -> None:
        self.ws.send(json.dumps(frame))

    def say(self, text: str, client_id: str, timeout: float = TURN_TIMEOUT) -> dict:
        """Sends a say and returns its ack (frames before it are not expected)."""
        self.send({"type": "say", "text": text, "client_id": client_id})
        frame = self.next(timeout)
        assert frame["type"] == "ack", frame
        return frame

    def turn(
        self, reply_to: int, others: list | None = None, timeout: float = 120
    ) -> tuple[list[str], dict]:
        """Like collect_turn: (token texts, terminal frame) of one turn."""
        tokens: list[str] = []
        while True:
            frame = self.next(timeout)
            if frame["type"] == "token" and frame["reply_to"] == reply_to:
                tokens.append(frame["text"])
            elif frame["type"] in ("reply", "error") and frame.get("reply_to") == reply_to:
                return tokens, frame
            elif others is not None:
                others.append(frame)
