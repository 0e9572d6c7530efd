"""Shared fixtures: actors, the demo hunt, and the real services of the integration group.

The unit suite always runs embedded (in-memory channel layer, local cache, in-process jobs): the
Makefile clears REDIS_URL for the test process and hands the real Redis to integration tests as
TEST_REDIS_URL. Integration tests start real Daphne and Celery processes against it and against
the test database, which is PostgreSQL in CI. Locally they skip when a service is missing; with
CI=true they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from avatars.hunt_files import import_hunt_file
from hunt.models import Hunt, Player

ROOT = Path(__file__).resolve().parent.parent
DEMO_HUNT = ROOT / "demo" / "lost-wallet.json"
SHARED = ROOT.parent / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing_service(reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where every service must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: integration tests may not skip)")
    pytest.skip(reason)


def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"


def require_redis() -> str:
    import redis

    url = redis_url()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        missing_service(f"Redis at {url} is not reachable: {exc}")
    return url


def require_postgres() -> None:
    if connection.vendor != "postgresql":
        missing_service("the test database is not PostgreSQL (set DATABASE_URL)")


def test_database_url() -> str:
    """A DATABASE_URL for child processes that points at this run's test database."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"])
    host = s["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{s['PORT'] or 5432}/{s['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_env(redis: bool = True, **extra: str) -> dict[str, str]:
    """Environment for a real Daphne or Celery process sharing this test's data.

    With redis=False the process runs embedded (in-memory layer, in-process jobs), which is
    enough for a browser test against one Daphne process.
    """
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": require_redis() if redis else "",
            "DJANGO_SETTINGS_MODULE": "lostwallet.settings",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
        }
    )
    env.update(extra)
    return env


class Service:
    """A child process started for a test and always stopped after it."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not seen; process output:\n{self.output()[-4000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


@pytest.fixture
def start_service(tmp_path):
    """start_service(name, args, **env) -> Service; every one is stopped after the test."""
    started: list[Service] = []

    def start(name: str, args: list[str], redis: bool = True, **extra_env: str) -> Service:
        service = Service(args, service_env(redis, **extra_env), tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        service.stop()


@pytest.fixture
def celery_worker_process(start_service):
    """A real Celery worker process consuming the generation queue, or `queues` (tiny model by
    default)."""

    def start(queues: str = "generation", **extra_env: str) -> Service:
        extra_env.setdefault("AVATAR_MODEL", "tiny-random")
        worker = start_service(
            "celery",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "lostwallet",
                "worker",
                "-Q",
                queues,
                "--pool",
                "threads",
                "--concurrency",
                "4",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
                "--hostname",
                f"test{free_port()}@%h",
            ],
            **extra_env,
        )
        worker.wait_for_output("ready.")
        return worker

    return start


@pytest.fixture
def daphne_process(start_service):
    """A real Daphne server on a free port; returns (service, base_url)."""

    def start(**extra_env: str) -> tuple[Service, str]:
        port = free_port()
        server = start_service(
            "daphne",
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "lostwallet.asgi:application",
            ],
            **extra_env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return server, f"127.0.0.1:{port}"
            except OSError:
                if server.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise AssertionError(f"daphne did not start:\n{server.output()[-4000:]}")

    return start


@pytest.fixture(autouse=True, scope="session")
def _no_heartbeat_thread():
    """The in-process generation pool starts its process's worker heartbeat (tasks.py): in
    the test process, a thread that wrote to the test database between and after tests, from
    a connection of its own (and logged errors once the session ended). Beats are tested
    through `tasks.beat` and real worker processes."""
    with mock.patch("avatars.tasks.start_beating"):
        yield


@pytest.fixture(autouse=True)
def _fresh_limits():
    """Rate limits, socket places and cached boards must not leak from one test into the
    next."""
    from lostwallet import connections, ratelimit

    cache.clear()
    ratelimit.reset_local()
    connections.reset_local()
    yield
    cache.clear()


@pytest.fixture
def fast_hashing(settings):
    """The test's accounts hash their passwords with MD5: Django's PBKDF2 default costs ~0.3 s
    a user here. PBKDF2 stays listed, so the demo hunt's phrase hash is still checked for real."""
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


@pytest.fixture
def make_user(db):
    counter = iter(range(1, 1_000_000))

    def make(username: str | None = None, password: str = "correct-horse-battery", **extra):
        username = username or f"user{next(counter)}"
        return get_user_model().objects.create_user(username=username, password=password, **extra)

    return make


@pytest.fixture
def make_player(make_user):
    def make(username: str | None = None, **extra) -> Player:
        return Player.for_user(make_user(username, **extra))

    return make


@pytest.fixture
def demo_hunt(db) -> Hunt:
    """The demo hunt, imported through the real importer and made live now."""
    hunt = import_hunt_file(DEMO_HUNT)
    Hunt.objects.filter(pk=hunt.pk).update(
        starts_at=timezone.now() - timedelta(days=1), ends_at=timezone.now() + timedelta(days=30)
    )
    hunt.refresh_from_db()
    return hunt


CHROMIUM = "/usr/bin/chromium"
# Without these Chromium keeps dialing out, and this machine's closed network refuses it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# The password of the browser tests' accounts: the sign-in form is filled in, not bypassed.
BROWSER_PASSWORD = "a-long-unusual-passphrase-42"


def sign_in(page, base: str, username: str, next_path: str) -> None:
    """Signs `username` in through the sign-in page and waits for `next_path`."""
    page.goto(f"{base}/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(BROWSER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{next_path}")


@pytest.fixture
def browser_page():
    """A Playwright page in Debian's headless Chromium (no browser download)."""
    if not Path(CHROMIUM).exists():
        missing_service(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()
