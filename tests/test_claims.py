"""Claiming the wallet (contract §2 claim, §4): BIP39 checks, cooldowns, the window, one winner."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from hunt.claims import MAX_CLAIM_COOLDOWN_SECONDS, claim_wait
from hunt.models import ApiToken, Claim, Hunt, Player
from tests.conftest import require_postgres
from tests.hunt_helpers import (
    bearer,
    demo_phrase,
    discover,
    find_every_word,
    guarded_positions,
    run_together,
    wrong_phrase,
)

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def player(make_player, demo_hunt):
    return find_every_word(make_player("claimer"), demo_hunt)


def claim(client, hunt: Hunt, player: Player | None, words, **extra):
    if player:
        extra.update(bearer(ApiToken.issue(player.user)))
    return client.post(
        f"/api/v1/hunts/{hunt.slug}/claim",
        {"words": words},
        content_type="application/json",
        **extra,
    )


def age_claims(player: Player, seconds: float) -> None:
    """Moves the player's claims into the past instead of sleeping through a cooldown."""
    for c in Claim.objects.filter(player=player):
        Claim.objects.filter(pk=c.pk).update(created_at=c.created_at - timedelta(seconds=seconds))


@pytest.mark.django_db
def test_the_first_correct_claim_wins(client, demo_hunt, player):
    response = claim(client, demo_hunt, player, demo_phrase())
    assert response.status_code == 200
    assert response.json() == {"result": "winner"}
    demo_hunt.refresh_from_db()
    assert demo_hunt.winner == player and demo_hunt.won_at is not None
    assert Claim.objects.get(player=player).result == "winner"


@pytest.mark.django_db
def test_a_later_correct_claim_is_correct_but_does_not_win(client, demo_hunt, player, make_player):
    claim(client, demo_hunt, player, demo_phrase())
    late = find_every_word(make_player("late"), demo_hunt)
    response = claim(client, demo_hunt, late, [w.upper() for w in demo_phrase()])
    assert response.json() == {"result": "correct"}
    demo_hunt.refresh_from_db()
    assert demo_hunt.winner == player


@pytest.mark.django_db
def test_a_valid_phrase_of_another_wallet_is_wrong(client, demo_hunt, player):
    response = claim(client, demo_hunt, player, wrong_phrase())
    assert response.status_code == 200
    assert response.json() == {"result": "wrong"}
    assert Claim.objects.get(player=player).result == "wrong"
    demo_hunt.refresh_from_db()
    assert demo_hunt.winner is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mangle, detail",
    [
        (lambda w: w[:23], "Expected 24 words, got 23."),
        (lambda w: [*w, "zoo"], "Expected 24 words, got 25."),
        (lambda w: ["walletx", *w[1:]], "position 1."),
        (lambda w: [w[1], w[0], *w[2:]], "checksum"),
    ],
    ids=["too-short", "too-long", "not-bip39", "bad-checksum"],
)
def test_a_phrase_that_is_not_bip39_is_invalid(client, demo_hunt, player, mangle, detail):
    response = claim(client, demo_hunt, player, mangle(demo_phrase()))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_phrase"
    assert detail in response.json()["detail"]
    assert Claim.objects.get(player=player).result == "invalid"


@pytest.mark.django_db
def test_a_claim_body_that_is_not_a_list_of_strings_is_invalid(client, demo_hunt, player):
    response = claim(client, demo_hunt, player, " ".join(demo_phrase()))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "olive" not in response.content.decode()  # the candidate phrase is never echoed
    assert not Claim.objects.exists()


@pytest.mark.django_db
def test_claims_need_a_player(client, demo_hunt):
    response = claim(client, demo_hunt, None, demo_phrase())
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert not Claim.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("when", ["upcoming", "ended"])
def test_claims_outside_the_window_are_refused(client, demo_hunt, player, when):
    now = timezone.now()
    if when == "upcoming":
        Hunt.objects.filter(pk=demo_hunt.pk).update(starts_at=now + timedelta(hours=1))
    else:
        Hunt.objects.filter(pk=demo_hunt.pk).update(
            starts_at=now - timedelta(days=2), ends_at=now - timedelta(seconds=1)
        )
    response = claim(client, demo_hunt, player, demo_phrase())
    assert response.status_code == 409
    assert response.json()["error"] == "hunt_not_live"
    assert not Claim.objects.exists()
    demo_hunt.refresh_from_db()
    assert demo_hunt.winner is None


@pytest.mark.django_db
def test_the_cooldown_doubles_after_each_failed_claim(client, demo_hunt, player):
    Hunt.objects.filter(pk=demo_hunt.pk).update(claim_cooldown_seconds=60)
    demo_hunt.refresh_from_db()
    bad = ["zoo"] * 24
    assert claim(client, demo_hunt, player, bad).status_code == 400
    refused = claim(client, demo_hunt, player, demo_phrase())
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert 55 <= refused.json()["retry_after"] <= 60
    assert refused["Retry-After"] == str(refused.json()["retry_after"])

    age_claims(player, 61)
    assert claim(client, demo_hunt, player, wrong_phrase()).json() == {"result": "wrong"}
    second = claim(client, demo_hunt, player, demo_phrase())
    assert second.status_code == 429 and 115 <= second.json()["retry_after"] <= 120

    age_claims(player, 121)
    assert claim(client, demo_hunt, player, bad).status_code == 400
    assert 235 <= claim(client, demo_hunt, player, bad).json()["retry_after"] <= 240
    # Refused claims were not counted: three failed claims, three cooldowns.
    assert Claim.objects.filter(player=player).count() == 3
    demo_hunt.refresh_from_db()
    assert demo_hunt.winner is None


@pytest.mark.django_db
def test_the_cooldown_is_per_player_and_per_hunt(client, demo_hunt, player, make_player):
    claim(client, demo_hunt, player, ["zoo"] * 24)
    assert claim_wait(demo_hunt, player) is not None
    other = find_every_word(make_player("other"), demo_hunt)
    assert claim_wait(demo_hunt, other) is None
    assert claim(client, demo_hunt, other, demo_phrase()).json() == {"result": "winner"}


@pytest.mark.django_db
def test_the_cooldown_stops_growing_after_a_day(demo_hunt, player):
    Claim.objects.bulk_create(
        Claim(hunt=demo_hunt, player=player, result="wrong", created_at=timezone.now())
        for _ in range(40)
    )
    wait = claim_wait(demo_hunt, player)
    assert MAX_CLAIM_COOLDOWN_SECONDS - 5 < wait <= MAX_CLAIM_COOLDOWN_SECONDS


@pytest.mark.django_db
def test_a_correct_claim_starts_no_cooldown(client, demo_hunt, player):
    claim(client, demo_hunt, player, demo_phrase())
    assert claim_wait(demo_hunt, player) is None


def _words_in_database(words: list[str]) -> set[str]:
    out = io.StringIO()
    call_command("dumpdata", "hunt", "auth", "sessions", "avatars", stdout=out)
    dump = out.getvalue().lower()
    return {w for w in words if re.search(rf"(?<![a-z]){w}(?![a-z])", dump)}


@pytest.mark.django_db(transaction=True)
def test_the_claimed_phrase_is_never_stored(demo_hunt, player, client):
    claimed = wrong_phrase() + demo_phrase()
    before = _words_in_database(claimed)
    claim(client, demo_hunt, player, wrong_phrase())
    age_claims(player, 3600)
    claim(client, demo_hunt, player, demo_phrase())
    assert Claim.objects.count() == 2
    assert _words_in_database(claimed) == before


def _claim_in_threads(hunt: Hunt, players: list[Player], words: list[str]) -> list[str]:
    """Each player claims from its own thread (own database connection), all at once."""
    from hunt.claims import ClaimRefused, do_claim

    def claim_one(player: Player) -> str:
        try:
            return do_claim(hunt, player, words)
        except ClaimRefused as refused:
            return refused.code

    return sorted(run_together(claim_one, players))


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_correct_claims_make_one_winner(demo_hunt, make_player):
    players = [find_every_word(make_player(n), demo_hunt) for n in ("first", "second")]
    assert _claim_in_threads(demo_hunt, players, demo_phrase()) == ["correct", "winner"]
    assert Claim.objects.filter(result="winner").count() == 1
    demo_hunt.refresh_from_db()
    winning = Claim.objects.get(result="winner")
    assert demo_hunt.winner == winning.player


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_correct_claims_make_one_winner_on_postgresql(demo_hunt, make_player):
    require_postgres()
    players = [find_every_word(make_player(f"racer{i}"), demo_hunt) for i in range(4)]
    results = _claim_in_threads(demo_hunt, players, demo_phrase())
    assert results == ["correct", "correct", "correct", "winner"]
    assert Claim.objects.filter(result="winner").count() == 1


@pytest.mark.django_db(transaction=True)
def test_parallel_claims_of_one_player_cannot_skip_the_cooldown(demo_hunt, make_player):
    player = find_every_word(make_player("impatient"), demo_hunt)
    results = _claim_in_threads(demo_hunt, [player, player], wrong_phrase())
    assert results == ["rate_limited", "wrong"]
    assert Claim.objects.filter(player=player).count() == 1


# Claims need the game played -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_claim_needs_every_word_this_server_guards(client, demo_hunt, make_player):
    """Accounts are free: without this, the last missing words could be brute-forced through
    the checksum from many accounts."""
    almost = make_player("almost")
    for position in guarded_positions(demo_hunt)[:-1]:
        discover(almost, demo_hunt, position)
    response = claim(client, demo_hunt, almost, demo_phrase())
    assert response.status_code == 403
    body = response.json()
    total = len(guarded_positions(demo_hunt))
    assert body["error"] == "words_missing" and f"{total - 1} of {total} found" in body["detail"]
    assert not Claim.objects.exists()  # not judged, not recorded


@pytest.mark.django_db
def test_a_hunt_may_let_players_claim_before_finding_every_word(client, demo_hunt, make_player):
    Hunt.objects.filter(pk=demo_hunt.pk).update(claims_need_all_words=False)
    response = claim(client, demo_hunt, make_player("bold"), demo_phrase())
    assert response.json() == {"result": "winner"}


@pytest.mark.django_db
def test_staff_cannot_claim_even_with_every_word(client, demo_hunt, make_player):
    organizer = find_every_word(make_player("organizer", is_staff=True), demo_hunt)
    response = claim(client, demo_hunt, organizer, demo_phrase())
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    assert not Claim.objects.exists()


@pytest.mark.django_db
def test_claims_are_budgeted_per_client_address_whatever_the_account(
    client, demo_hunt, make_player
):
    Hunt.objects.filter(pk=demo_hunt.pk).update(claims_per_address_per_hour=3)
    accounts = [find_every_word(make_player(f"sock{i}"), demo_hunt) for i in range(4)]
    results = [claim(client, demo_hunt, p, wrong_phrase()) for p in accounts]
    assert [r.status_code for r in results] == [200, 200, 200, 429]
    assert results[-1].json()["error"] == "rate_limited" and results[-1].json()["retry_after"]
    # Another address still claims.
    other = claim(client, demo_hunt, find_every_word(make_player("elsewhere"), demo_hunt),
                  wrong_phrase(), REMOTE_ADDR="10.1.2.3")  # fmt: skip
    assert other.status_code == 200


@pytest.mark.django_db(transaction=True)  # no test-wide transaction around the claim
def test_the_phrase_hash_is_checked_outside_any_transaction(client, demo_hunt, player, monkeypatch):
    """A slow hash check inside the claim's transaction would hold the player's row lock (on
    SQLite, the database's write lock) for its whole duration."""
    from django.db import connection

    from hunt import claims

    real = claims.check_password
    during: list[bool] = []

    def spy(*args):
        during.append(connection.in_atomic_block)
        return real(*args)

    monkeypatch.setattr(claims, "check_password", spy)
    assert claim(client, demo_hunt, player, demo_phrase()).json() == {"result": "winner"}
    assert during == [False]
