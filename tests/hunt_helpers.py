"""Helpers for the gameplay tests (API, claims, leaderboard, pages)."""

from __future__ import annotations

from datetime import datetime, timedelta

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


def minutes_ago(n: float) -> datetime:
    return timezone.now() - timedelta(minutes=n)


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# Accounts made by tests hash their passwords with MD5: Django's PBKDF2 default costs ~0.3 s a
# user here. PBKDF2 stays listed, so the demo hunt's phrase hash is still checked for real.
FAST_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
