"""Claiming the wallet: a player submits the 24 words; the first correct claim wins.

The claimed phrase is compared with the hunt's stored hash and then forgotten: it is never
stored, logged or echoed, since a correct one is the key of the prize wallet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.hashers import check_password
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone
from django.utils.translation import gettext as _

from hunt.bip39 import bip39_checksum_ok, bip39_words, phrase_of
from hunt.leaderboard import announce_leaderboard_change
from hunt.models import PHRASE_LENGTH, Claim, Discovery, Hunt, Player
from lostwallet import ratelimit
from lostwallet.wire import ErrorCode

# The escalating cooldown doubles after each failed claim; past a day it stops growing, so a
# player who mistyped many times is slowed, not locked out of the game for good.
MAX_CLAIM_COOLDOWN_SECONDS = 24 * 3600
FAILED = (Claim.Result.WRONG, Claim.Result.INVALID)


@dataclass(eq=False)
class ClaimRefused(Exception):
    """A claim that was not judged. `code` and `status` are the API's error code and HTTP status."""

    code: ErrorCode
    status: int
    detail: str = ""
    retry_after: float | None = None


def phrase_problem(words: list[str]) -> str | None:
    """Why `words` is not a BIP39 English phrase of 24 words with a valid checksum, or None."""
    if len(words) != PHRASE_LENGTH:
        return _("Expected %(expected)d words, got %(count)d.") % {
            "expected": PHRASE_LENGTH,
            "count": len(words),
        }
    normalized = [w.strip().lower() for w in words]
    wordlist = bip39_words()
    # Positions only, never the words: the answer goes back to the player, but positions are
    # all they need to fix a typo, and nothing of the phrase ends up in logs through it.
    unknown = [str(i) for i, w in enumerate(normalized, start=1) if w not in wordlist]
    if unknown:
        return _("Not in the BIP39 English word list: position %(positions)s.") % {
            "positions": ", ".join(unknown)
        }
    if not bip39_checksum_ok(normalized):
        return _("The checksum of these 24 words is not valid: at least one word is wrong.")
    return None


def claim_wait(hunt: Hunt, player: Player) -> float | None:
    """Seconds this player must still wait before claiming again, or None.

    After the n-th failed claim (wrong or invalid) the cooldown is
    `claim_cooldown_seconds × 2^(n-1)`, counted from the latest failed claim.
    """
    failed = Claim.objects.filter(hunt=hunt, player=player, result__in=FAILED).aggregate(
        n=Count("id"), last=Max("created_at")
    )
    if not failed["n"]:
        return None
    wait = (cooling_until(hunt, failed["n"], failed["last"]) - timezone.now()).total_seconds()
    return wait if wait > 0 else None


def cooling_until(hunt: Hunt, failed: int, last):
    """When the cooldown after `failed` failed claims, the latest at `last`, ends."""
    cooldown = min(
        hunt.claim_cooldown_seconds * 2 ** min(failed - 1, 32), MAX_CLAIM_COOLDOWN_SECONDS
    )
    return last + timedelta(seconds=cooldown)


def do_claim(hunt: Hunt, player: Player, words: list[str], address: str = "unknown") -> str:
    """Judges a claim and records it; returns "winner", "correct" or "wrong".

    Raises ClaimRefused: `hunt_not_live` (409) outside the hunt's window, `forbidden` (403)
    for staff, `words_missing` (403) before the player has found every word this server guards
    (when the hunt asks for it), `rate_limited` (429) during the player's cooldown or past the
    client address's hourly budget, `invalid_phrase` (400) for a phrase that is not BIP39
    (recorded, so it counts towards the cooldown like a wrong one).
    """
    refuse_unjudged(hunt, player)
    budget = hunt.claims_per_address_per_hour
    wait = claim_wait(hunt, player) or ratelimit.hit(
        f"claim:{hunt.pk}:addr:{address}", budget, burst=budget, per_seconds=3600
    )
    if wait is not None:
        raise _cooling_down(wait)
    problem = phrase_problem(words)
    # The hash is deliberately slow (PBKDF2): a leaked database must not give the phrase away.
    # So it is checked before any lock is taken: held under the player's row lock (on SQLite,
    # the database's write lock) it would stall every other write meanwhile.
    correct = problem is None and check_password(phrase_of(words), hunt.phrase_hash)
    with transaction.atomic():
        # Race: one player's parallel claims all pass the cooldown check above before any of
        # them is recorded. Locking the player's row and checking again makes each claim see
        # the ones before it; a claim refused here is not judged, whatever its hash said.
        Player.objects.select_for_update().filter(pk=player.pk).exists()
        wait = claim_wait(hunt, player)
        if wait is not None:
            raise _cooling_down(wait)
        if problem is not None:
            Claim.objects.create(hunt=hunt, player=player, result=Claim.Result.INVALID)
            result = Claim.Result.INVALID
        elif not correct:
            Claim.objects.create(hunt=hunt, player=player, result=Claim.Result.WRONG)
            result = Claim.Result.WRONG
        else:
            result = _record_correct(hunt, player)
            if result == Claim.Result.WINNER:
                # The board announces the winner; spectators hear of it once it is committed.
                transaction.on_commit(lambda: announce_leaderboard_change(hunt.pk))
    if result == Claim.Result.INVALID:
        raise ClaimRefused(ErrorCode.INVALID_PHRASE, 400, problem or "")
    return str(result)


def refuse_unjudged(hunt: Hunt, player: Player) -> None:
    """Raises ClaimRefused when this player may not claim in this hunt now, whatever the
    phrase: the window, staff, and (when the hunt asks) the words not all found yet."""
    if not hunt.is_live():
        raise ClaimRefused(
            ErrorCode.HUNT_NOT_LIVE, 409, _("The hunt is not live: claims are closed.")
        )
    if not player.plays:
        raise ClaimRefused(
            ErrorCode.FORBIDDEN, 403, _("Staff accounts run the hunt; they cannot claim.")
        )
    if not hunt.claims_need_all_words:
        return
    found, total = Discovery.objects.of(hunt, player=player).count(), hunt.guarded_count()
    if found < total:
        raise ClaimRefused(
            ErrorCode.WORDS_MISSING,
            403,
            _("Find every word guarded here before claiming: %(found)d of %(total)d found.")
            % {"found": found, "total": total},
        )


def _cooling_down(wait: float) -> ClaimRefused:
    return ClaimRefused(
        ErrorCode.RATE_LIMITED, 429, _("Wrong claims slow you down: wait before the next."), wait
    )


def _record_correct(hunt: Hunt, player: Player) -> Claim.Result:
    """Race: two correct claims at once. The conditional update lets exactly one of them set
    the winner (the other's UPDATE waits for the row, re-reads `winner IS NULL` and matches
    nothing); the `claim_one_winner` unique constraint backs it at the claims table."""
    now = timezone.now()
    won = Hunt.objects.filter(pk=hunt.pk, winner__isnull=True).update(winner=player, won_at=now)
    result = Claim.Result.WINNER if won else Claim.Result.CORRECT
    Claim.objects.create(hunt=hunt, player=player, result=result, created_at=now)
    return result
