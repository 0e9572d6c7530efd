"""`python manage.py bench_ws`: many concurrent chat sockets against one server.

Without --url it starts one Daphne process itself (the fast stand-in model `tiny-random`, and
a Celery worker too when REDIS_URL is set), creates bench players with bearer tokens and a
bench avatar that guards nothing, opens --connections sockets, lets --chatters of them talk
for --duration seconds within the per-player rate limit, and reports: connections held,
`ack` latency p50/p95, reply times, error codes, and the server's memory (RSS).

Goal (issue 5): 1,000 connections on one Daphne process, ack p95 <= 100 ms with 50 chatting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from avatars.chat import chat_limits
from avatars.models import Avatar
from hunt.models import ApiToken, Player
from lostwallet.wire import ErrorCode

BENCH_AVATAR = "bench-lamp"
USER_PREFIX = "bench-ws-"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit(wanted: int) -> int:
    """Lifts this process's open-file limit (children inherit it) as far as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Results:
    connect_s: list[float] = field(default_factory=list)
    ack_s: list[float] = field(default_factory=list)
    reply_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    connect_failures: Counter = field(default_factory=Counter)
    held: int = 0
    dropped: int = 0


class Bench:
    def __init__(self, url: str, tokens: list[str], chatters: int, duration: float):
        self.url = url
        self.tokens = tokens
        self.chatters = chatters
        self.duration = duration
        self.results = Results()
        self.sockets: list = []
        self.stop = asyncio.Event()

    async def open_one(self, token: str, gate: asyncio.Semaphore):
        from websockets.asyncio.client import connect

        async with gate:
            started = time.perf_counter()
            try:
                ws = await connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {token}"},
                    compression=None,
                    ping_interval=None,
                    open_timeout=60,
                    max_queue=None,
                )
                hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
            except Exception as error:  # each failure is counted by kind, not fatal
                self.results.connect_failures[type(error).__name__] += 1
                return None
            if hello.get("type") != "hello":
                self.results.connect_failures["no-hello"] += 1
                await ws.close()
                return None
            self.results.connect_s.append(time.perf_counter() - started)
            return ws

    async def idle(self, ws) -> None:
        """A connected client that only listens, as most event-day players do."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for _frame in ws:
                pass
        except ConnectionClosed:
            pass
        if not self.stop.is_set():
            self.results.dropped += 1

    async def chat(self, ws, n: int, interval: float) -> None:
        """Says something, times the ack and the reply, waits its turn, again until the end."""
        from websockets.exceptions import ConnectionClosed

        # Players do not all press Enter in the same instant: spread the first says.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), random.uniform(0, interval))
        try:
            while not self.stop.is_set():
                client_id = uuid.uuid4().hex
                sent = time.perf_counter()
                await ws.send(
                    json.dumps(
                        {"type": "say", "text": f"Hello lamp keeper {n}", "client_id": client_id}
                    )
                )
                message_id = None
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "ack" and frame["client_id"] == client_id:
                        self.results.ack_s.append(time.perf_counter() - sent)
                        message_id = frame["message_id"]
                    elif frame["type"] == "error" and frame.get("client_id") == client_id:
                        self.results.errors[frame["code"]] += 1
                        break
                    elif frame["type"] == "reply" and frame["reply_to"] == message_id:
                        self.results.reply_s.append(time.perf_counter() - sent)
                        break
                    elif frame["type"] == "error" and frame.get("reply_to") == message_id:
                        self.results.errors[frame["code"]] += 1
                        break
                # Pace within the per-player rate limit, so every say is a real turn.
                wait = interval - (time.perf_counter() - sent)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), wait)
        except ConnectionClosed:
            if not self.stop.is_set():
                self.results.dropped += 1

    async def warm_up(self, ws) -> None:
        await ws.send(json.dumps({"type": "say", "text": "Good evening.", "client_id": "warm"}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 300))
            if frame["type"] == "reply" or frame.get("code") == ErrorCode.GENERATION_FAILED:
                return

    async def run(self, server_pid: int | None, interval: float, log) -> dict:
        # Handshakes in flight at once: a reconnect storm, but not all clients in one instant.
        gate = asyncio.Semaphore(50)
        memory = {"baseline_mb": rss_mb(server_pid) if server_pid else None}
        started = time.perf_counter()
        opened = await asyncio.gather(*(self.open_one(t, gate) for t in self.tokens))
        self.sockets = [ws for ws in opened if ws is not None]
        connect_time = time.perf_counter() - started
        log(f"{len(self.sockets)} of {len(self.tokens)} connected in {connect_time:.1f} s")
        memory["connected_mb"] = rss_mb(server_pid) if server_pid else None
        if self.sockets:
            # One turn before measuring: the model loads on first use, and that one-off cost
            # is not what this benchmark is about.
            warmup = time.perf_counter()
            await self.warm_up(self.sockets[-1])
            log(f"warm-up turn took {time.perf_counter() - warmup:.1f} s")
        peak = memory["connected_mb"] or 0.0
        tasks = [
            asyncio.ensure_future(
                self.chat(ws, n, interval) if n < self.chatters else self.idle(ws)
            )
            for n, ws in enumerate(self.sockets)
        ]
        deadline = time.perf_counter() + self.duration
        while time.perf_counter() < deadline:
            await asyncio.sleep(1)
            if server_pid:
                peak = max(peak, rss_mb(server_pid) or 0.0)
        self.results.held = sum(1 for ws in self.sockets if ws.state.name == "OPEN")
        memory["peak_mb"] = peak or None
        self.stop.set()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        return memory


class Command(BaseCommand):
    help = "Benchmark the chat socket with many concurrent clients (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--url", help="ws://host:port of a running server (default: start one)")
        parser.add_argument("--connections", type=int, default=1000)
        parser.add_argument("--chatters", type=int, default=50)
        parser.add_argument("--duration", type=float, default=60.0, help="seconds of chatting")
        parser.add_argument(
            "--model", default="tiny-random", help="AVATAR_MODEL of the server this starts"
        )
        parser.add_argument(
            "--max-new-tokens",
            type=int,
            default=16,
            help="AVATAR_MAX_NEW_TOKENS of the server this starts (short replies, fast turns)",
        )
        parser.add_argument("--json", dest="json_path", help="also write the results here")
        parser.add_argument("--keep-data", action="store_true", help="keep bench players")

    def handle(self, *args, **opts):
        if opts["chatters"] > opts["connections"]:
            raise CommandError("--chatters cannot exceed --connections")
        limit = raise_fd_limit(opts["connections"] * 2 + 1024)
        if limit < opts["connections"] + 256:
            raise CommandError(f"open-file limit {limit} is too low; raise `ulimit -n`")
        tokens = self.prepare(opts["connections"])
        processes: list[subprocess.Popen] = []
        try:
            if opts["url"]:
                base, server_pid = opts["url"].rstrip("/"), None
            else:
                base, server_pid = self.start_server(
                    opts["model"], opts["max_new_tokens"], processes
                )
            # The bench avatar has no hunt, so the default chat limits apply; each chatter
            # paces itself just under them and every say is a real turn.
            rate, _burst = chat_limits(None)
            interval = 60.0 / rate + 0.5
            bench = Bench(
                f"{base}/ws/chat/{BENCH_AVATAR}/", tokens, opts["chatters"], opts["duration"]
            )
            memory = asyncio.run(bench.run(server_pid, interval, self.stdout.write))
        finally:
            for process in reversed(processes):
                self.stop_process(process)
            if not opts["keep_data"]:
                self.cleanup()
        report = self.report(opts, bench.results, memory, limit)
        if opts["json_path"]:
            Path(opts["json_path"]).write_text(json.dumps(report, indent=2) + "\n")

    # Setup -------------------------------------------------------------------------------

    def prepare(self, count: int) -> list[str]:
        """Bench players (hidden from leaderboards) with one token each, and the avatar."""
        Avatar.objects.update_or_create(
            slug=BENCH_AVATAR,
            defaults={
                "hunt": None,
                "name": "Bench Lamp Keeper",
                "persona": "A calm keeper of a harbour lamp who answers in one short sentence.",
                "greeting": "Evening.",
                "published": True,
            },
        )
        self.cleanup()
        users = get_user_model()
        tokens = []
        with transaction.atomic():
            created = users.objects.bulk_create(
                [
                    # No password: nobody can sign in as a bench player.
                    users(username=f"{USER_PREFIX}{n:05d}", password="!")
                    for n in range(count)
                ]
            )
            Player.objects.bulk_create([Player(user=u, hidden=True) for u in created])
            for user in created:
                tokens.append(ApiToken.issue(user))
        self.stdout.write(f"prepared {count} bench players with tokens")
        return tokens

    def cleanup(self) -> None:
        get_user_model().objects.filter(username__startswith=USER_PREFIX).delete()

    def start_server(self, model: str, max_new_tokens: int, processes: list) -> tuple[str, int]:
        env = dict(
            os.environ,
            AVATAR_MODEL=model,
            AVATAR_MAX_NEW_TOKENS=str(max_new_tokens),
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
        )
        port = free_port()
        log_dir = Path(settings.VAR_DIR) / "bench_ws"
        log_dir.mkdir(parents=True, exist_ok=True)
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "lostwallet.asgi:application"],
            env=env,
            stdout=(log_dir / "daphne.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        processes.append(daphne)
        if settings.REDIS_URL:
            # Lowest CPU priority: in production generation runs on other (GPU) hosts, and
            # on this one machine it must not take the web tier's CPU being measured.
            worker = subprocess.Popen(
                ["nice", "-n", "19", sys.executable, "-m", "celery", "-A", "lostwallet",
                 "worker", "-Q", "generation", "--pool", "threads", "--concurrency", "16",
                 "--loglevel", "WARNING", "--without-mingle", "--without-gossip"],
                env=env,
                stdout=(log_dir / "celery.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            processes.append(worker)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                self.stdout.write(f"daphne pid {daphne.pid} on port {port} (logs in {log_dir})")
                return f"ws://127.0.0.1:{port}", daphne.pid
            except OSError:
                if daphne.poll() is not None:
                    break
                time.sleep(0.2)
        raise CommandError(f"daphne did not start; see {log_dir / 'daphne.log'}")

    @staticmethod
    def stop_process(process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # Report ------------------------------------------------------------------------------

    def report(self, opts, results: Results, memory: dict, fd_limit: int) -> dict:
        def ms(values, q):
            value = percentile(values, q)
            return None if value is None else round(value * 1000, 1)

        report = {
            "connections": opts["connections"],
            "connections_held": results.held,
            "connect_failures": dict(results.connect_failures),
            "dropped": results.dropped,
            "chatters": opts["chatters"],
            "duration_s": opts["duration"],
            "connect_p50_ms": ms(results.connect_s, 50),
            "connect_p95_ms": ms(results.connect_s, 95),
            "acks": len(results.ack_s),
            "ack_p50_ms": ms(results.ack_s, 50),
            "ack_p95_ms": ms(results.ack_s, 95),
            "ack_p99_ms": ms(results.ack_s, 99),
            "ack_max_ms": ms(results.ack_s, 100),
            "replies": len(results.reply_s),
            "reply_p50_ms": ms(results.reply_s, 50),
            "reply_p95_ms": ms(results.reply_s, 95),
            "errors": dict(results.errors),
            "server_rss_baseline_mb": memory.get("baseline_mb"),
            "server_rss_connected_mb": memory.get("connected_mb"),
            "server_rss_peak_mb": memory.get("peak_mb"),
            "model": None if opts["url"] else opts["model"],
            "fd_limit": fd_limit,
            "mean_ack_ms": round(statistics.fmean(results.ack_s) * 1000, 1)
            if results.ack_s
            else None,
        }
        width = max(len(k) for k in report)
        for key, value in report.items():
            self.stdout.write(f"{key:<{width}}  {value}")
        return report
