"""Helpers for the gameplay tests (API, claims, gate, leaderboard, pages)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

from hunt.models import Clue, Discovery, Hunt, Player, SeedWord
from tests.conftest import ROOT


def demo_phrase() -> list[str]:
    """The winning phrase of the demo hunt, as demo/README.md documents it for testers."""
    text = (ROOT / "demo" / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if len(ln.split()) == 24 and ln.startswith("    "))
    return line.split()


def wrong_phrase() -> list[str]:
    """A valid BIP39 phrase (checksum included) that is not the demo wallet's."""
    from mnemonic import Mnemonic

    return Mnemonic("english").to_mnemonic(bytes(range(32))).split()


def guarded_positions(hunt: Hunt) -> list[int]:
    return sorted(
        SeedWord.objects.filter(hunt=hunt)
        .exclude(word_encrypted="")
        .values_list("position", flat=True)
    )


def discover(player: Player, hunt: Hunt, position: int, at: datetime | None = None) -> Discovery:
    """Records a discovery as the gate does (the first finder of a word is `first`)."""
    word = SeedWord.objects.get(hunt=hunt, position=position)
    return Discovery.objects.create(
        player=player,
        word=word,
        clue=Clue.objects.filter(word=word).first(),
        first=not Discovery.objects.filter(word=word).exists(),
        found_at=at or timezone.now(),
    )


def find_every_word(player: Player, hunt: Hunt) -> Player:
    """Discovers, for `player`, every word this server guards in `hunt`: what a claim needs."""
    found = set(Discovery.objects.of(hunt, player=player).values_list("word__position", flat=True))
    for position in set(guarded_positions(hunt)) - found:
        discover(player, hunt, position)
    return player


def minutes_ago(n: float) -> datetime:
    return timezone.now() - timedelta(minutes=n)


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def run_together(fn: Callable, inputs: Iterable) -> list:
    """Calls fn(x) for each input in its own thread (so on its own database connection), all
    released at once; returns the results in input order and re-raises a thread's exception."""
    inputs = list(inputs)
    barrier = threading.Barrier(len(inputs))
    results: list = [None] * len(inputs)
    errors: list[Exception] = []

    def run(index: int, x) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = fn(x)
        except Exception as exc:  # re-raised in the test's thread below
            errors.append(exc)
        finally:
            # Each thread opened its own connection; left open, it would outlive the test.
            connection.close()

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(inputs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results
