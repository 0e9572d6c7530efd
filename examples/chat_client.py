#!/usr/bin/env python3
"""Chat with a Lost Wallet avatar from the terminal: a small example for AR/3D integrators.

It does what any client of the chat socket does (docs/protocol.md):
1. gets a bearer token with `POST /api/v1/auth/token` (or takes one with --token);
2. opens `/ws/chat/<avatar>/` with `Authorization: Bearer <token>`;
3. prints `hello` (the thread so far and the words found here), then streams each reply as its
   `token` frames arrive; `reply` ends a turn, `discovery` announces a word;
4. sends every message with a fresh `client_id`, and after a lost connection reconnects with
   backoff and sends the unacknowledged message again with the same `client_id`, so it is
   stored once whatever happened to the first attempt.

Needs Python 3.11+ and the `websockets` package (pinned in requirements.txt).

    python examples/chat_client.py --server http://127.0.0.1:8000 --username demo old-marta
    python examples/chat_client.py --token "$TOKEN" old-marta --say "Good evening!"

In the conversation: `/up` or `/down` rates the last reply, `/quit` leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import random
import sys
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

# Close codes after which reconnecting cannot help.
FINAL_CLOSES = {
    4401: "not authenticated (bad or revoked token)",
    4403: "this avatar is not open to you",
    4404: "no avatar with that name",
}


class ChatError(Exception):
    pass


def get_token(server: str, username: str, password: str) -> str:
    """POST /api/v1/auth/token -> the bearer token."""
    request = urllib.request.Request(
        server.rstrip("/") + "/api/v1/auth/token",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["token"]
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
        raise ChatError(f"login refused ({error.code}): {body.get('error', body)}") from None


def socket_url(server: str, avatar: str) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, f"/ws/chat/{avatar}/", "", ""))


class Terminal:
    """Everything the chat prints, in one place."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.avatar = "avatar"
        self.streaming: int | None = None

    def line(self, text: str = "") -> None:
        self.end_stream()
        print(text, file=self.out, flush=True)

    def stream(self, reply_to: int, text: str) -> None:
        if self.streaming != reply_to:
            self.end_stream()
            self.out.write(f"{self.avatar}: ")
            self.streaming = reply_to
        self.out.write(text)
        self.out.flush()

    def end_stream(self) -> None:
        if self.streaming is not None:
            self.out.write("\n")
            self.out.flush()
            self.streaming = None


class ChatSession:
    """One conversation that survives reconnects."""

    def __init__(self, url: str, token: str, terminal: Terminal):
        self.url = url
        self.token = token
        self.term = terminal
        self.ws = None
        self.unacked: dict | None = None  # the say not acknowledged yet
        self.in_flight: int | None = None  # player message whose reply is coming
        self.last_reply: int | None = None
        self.seen: set[int] = set()
        self.turn_over = asyncio.Event()
        self.turn_over.set()
        self.connected = asyncio.Event()
        self.closed_for_good: str | None = None
        self.resend: asyncio.Future | None = None

    async def run(self) -> None:
        """Keeps the connection up until a final close, reconnecting with backoff."""
        attempt = 0
        while self.closed_for_good is None:
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=20,
                    ping_interval=25,
                ) as ws:
                    self.ws = ws
                    attempt = 0
                    async for raw in ws:
                        self.handle(json.loads(raw))
                    code = ws.close_code
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            except (OSError, InvalidStatus, TimeoutError) as error:
                code = None
                self.term.line(f"[connection failed: {error}]")
            self.ws = None
            self.connected.clear()
            if code in FINAL_CLOSES:
                self.closed_for_good = FINAL_CLOSES[code]
                self.term.line(f"[closed: {self.closed_for_good}]")
                self.turn_over.set()
                return
            delay = min(30, 2**attempt) * (0.5 + random.random() / 2)
            attempt += 1
            self.term.line(f"[connection lost ({code}); reconnecting in {delay:.1f} s]")
            await asyncio.sleep(delay)

    def handle(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "hello":
            self.on_hello(frame)
        elif kind == "ack":
            if self.unacked and frame["client_id"] == self.unacked["client_id"]:
                self.unacked = None
            if frame["message_id"] not in self.seen:
                self.in_flight = frame["message_id"]
        elif kind == "token" and frame["reply_to"] == self.in_flight:
            self.term.stream(frame["reply_to"], frame["text"])
        elif kind == "reply":
            if self.term.streaming is None:
                # Joined mid-reply or missed the chunks: the reply carries the whole text.
                self.term.line(f"{self.term.avatar}: {frame['text']}")
            self.term.end_stream()
            self.last_reply = frame["message_id"]
            self.end_turn(frame["reply_to"])
        elif kind == "discovery":
            first = " You are the first to find it!" if frame["first"] else ""
            self.term.line(f"*** You found word #{frame['position']}: {frame['word']}.{first}")
        elif kind == "rated":
            self.term.line("[thanks for the feedback]")
        elif kind == "error":
            self.on_error(frame)

    def on_hello(self, frame: dict) -> None:
        self.term.avatar = frame["avatar"]["name"]
        if not self.seen:
            self.term.line(f"— {frame['avatar']['name']} —")
            if frame["avatar"]["greeting"]:
                self.term.line(f"{self.term.avatar}: {frame['avatar']['greeting']}")
            for item in frame["history"][-10:]:
                who = "you" if item["role"] == "player" else self.term.avatar
                self.term.line(f"{who}: {item['text']}")
            for word in frame["discoveries"]:
                self.term.line(f"(word #{word['position']} found here: {word['word']})")
            if frame.get("hunt") and frame["hunt"]["status"] != "live":
                self.term.line(f"[the hunt is {frame['hunt']['status']}: no word can be found]")
        for item in frame["history"]:
            if item["role"] == "avatar":
                self.seen.add(item["reply_to"])
                self.last_reply = item["id"]
            elif item.get("status") == "failed":
                self.seen.add(item["id"])
        if self.in_flight in self.seen:
            # The reply was stored while we were away: it is in the history.
            reply = next(i for i in frame["history"] if i.get("reply_to") == self.in_flight)
            self.term.line(f"{self.term.avatar}: {reply['text']}")
            self.end_turn(self.in_flight)
        self.in_flight = frame["pending"] if frame["pending"] is not None else self.in_flight
        self.connected.set()
        if self.unacked:
            # The same client_id: stored once, whether or not the first send got through.
            self.resend = asyncio.ensure_future(self.send(self.unacked))

    def on_error(self, frame: dict) -> None:
        code = frame["code"]
        if code == "generation_failed":
            self.term.line(f"[{self.term.avatar} could not answer; ask again]")
            self.end_turn(frame["reply_to"])
        elif code == "hunt_not_live":
            self.term.line("[the hunt is not running: the avatar talks, but no word opens]")
        else:
            wait = f" (retry in {frame['retry_after']} s)" if "retry_after" in frame else ""
            self.term.line(f"[{code}: {frame['detail']}{wait}]")
            if self.unacked and frame.get("client_id") == self.unacked["client_id"]:
                self.unacked = None
                self.turn_over.set()

    def end_turn(self, reply_to: int) -> None:
        self.seen.add(reply_to)
        if self.in_flight == reply_to:
            self.in_flight = None
        self.turn_over.set()

    async def send(self, frame: dict) -> None:
        await self.connected.wait()
        # A send lost with the connection goes out again after the next hello.
        with contextlib.suppress(ConnectionClosed, AttributeError):
            await self.ws.send(json.dumps(frame))

    async def say(self, text: str) -> None:
        """Sends one message and waits for the end of its turn."""
        self.turn_over.clear()
        self.unacked = {"type": "say", "text": text, "client_id": uuid.uuid4().hex}
        await self.send(self.unacked)
        await self.turn_over.wait()

    async def rate(self, value: int) -> None:
        if self.last_reply is None:
            self.term.line("[no reply to rate yet]")
            return
        await self.send({"type": "rate", "message_id": self.last_reply, "value": value})


async def chat(args, token: str) -> int:
    term = Terminal()
    session = ChatSession(socket_url(args.server, args.avatar), token, term)
    runner = asyncio.ensure_future(session.run())
    try:
        await asyncio.wait(
            [runner, asyncio.ensure_future(session.connected.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if args.say:
            for text in args.say:
                if session.closed_for_good:
                    break
                term.line(f"you: {text}")
                await session.say(text)
            return 1 if session.closed_for_good else 0
        while session.closed_for_good is None:
            line = await asyncio.to_thread(sys.stdin.readline)
            text = line.strip()
            if not line or text == "/quit":  # end of input, or asked to leave
                break
            if text == "/up":
                await session.rate(1)
            elif text == "/down":
                await session.rate(-1)
            elif text:
                await session.say(text)
        return 1 if session.closed_for_good else 0
    finally:
        runner.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat with a Lost Wallet avatar.")
    parser.add_argument("avatar", help="the avatar's slug, e.g. old-marta")
    parser.add_argument("--server", default="http://127.0.0.1:8000", help="the site's base URL")
    parser.add_argument("--username", help="log in with this account (asks for the password)")
    parser.add_argument("--password", default=os.environ.get("LOSTWALLET_PASSWORD"))
    parser.add_argument("--token", default=os.environ.get("LOSTWALLET_TOKEN"))
    parser.add_argument(
        "--say", action="append", help="send this message, print the reply, and exit (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        if args.token:
            token = args.token
        elif args.username:
            password = args.password or getpass.getpass(f"Password for {args.username}: ")
            token = get_token(args.server, args.username, password)
        else:
            parser.error("give --username (to log in) or --token")
        return asyncio.run(chat(args, token))
    except ChatError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
