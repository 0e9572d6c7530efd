"""The clue gate: a guarded word opens for the right question, and never otherwise.

A model leaks whatever sits in its context, so a locked word is never put there: for each
player message to an avatar that guards words, this deterministic gate decides, before any
generation, whether the message asks one of the avatar's clues' right questions (the matcher,
hunt/matcher.py). Only then does the turn's prompt get the word (a reveal instruction), and the
reply guard (hunt.leaks.ReplyGuard) makes sure the word is in the reply, and that no other
locked word is.

This module is the gate's action: which clues are candidates for this player, prerequisites,
recording the discovery (race-safe), and the near-miss budget. Near misses (close but under,
or passing but blocked by a check or by prerequisites) count against the player's budget
(Hunt.gate_attempts); past it nothing opens for Hunt.gate_cooldown_seconds. A near miss has the
avatar nudge the player in character in the same reply, from the clue's public hint.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from django.core.cache import cache as django_cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from hunt import leaderboard
from hunt.french import read_in_english
from hunt.leaks import normalize_message, words_of
from hunt.matcher import ClueSpec, analyse, decide, default_params, match, vocabulary_of
from hunt.models import Activity, Clue, Discovery, NearMiss
from hunt.verifiers import Verdict, configured_verifier

HINT_AFTER = 1  # near misses before the avatar nudges (hunt.models.Clue.nudge) in its reply


@dataclass(frozen=True)
class Reveal:
    """A word this message unlocked. `reveal_line` holds the word: it goes into this turn's
    prompt and, when the model leaves the word out, at the end of the reply."""

    position: int
    word: str
    reveal_line: str
    first: bool
    discovery_id: int


@dataclass(frozen=True)
class GateOutcome:
    reveals: tuple[Reveal, ...] = ()
    hint: str | None = None


def _budget_keys(hunt_id: int, player_id: int) -> tuple[str, str]:
    return f"gate:near:{hunt_id}:{player_id}", f"gate:cooldown:{hunt_id}:{player_id}"


def cooling_down(hunt, player) -> bool:
    return django_cache.get(_budget_keys(hunt.pk, player.pk)[1]) is not None


def count_near_miss(hunt, player) -> int:
    """Counts a near miss; the hunt's `gate_attempts`-th one within a cooldown period starts a
    cooldown. Returns the count so far (the cooldown resets it).

    add() then incr() are each atomic in the cache (Redis in production), so two turns of one
    player at once both count.
    """
    count_key, cooldown_key = _budget_keys(hunt.pk, player.pk)
    window = max(int(hunt.gate_cooldown_seconds), 1)
    django_cache.add(count_key, 0, timeout=window)
    try:
        count = django_cache.incr(count_key)
    except ValueError:  # expired between add and incr
        django_cache.set(count_key, 1, timeout=window)
        count = 1
    if count >= max(int(hunt.gate_attempts), 1):
        django_cache.set(cooldown_key, 1, timeout=window)
        django_cache.delete(count_key)
    return count


def note_near_miss(hunt, clue, player, message, score: float, count: int) -> None:
    """Records a near miss for the organizers' console (its stuck questions, its cooldowns in
    force): the `count`-th of the player's budget, which started a cooldown when it spent it
    (count_near_miss)."""
    started = count >= max(int(hunt.gate_attempts), 1)
    until = timezone.now() + timedelta(seconds=hunt.gate_cooldown_seconds) if started else None
    NearMiss.objects.create(
        hunt=hunt, clue=clue, player=player, message=message, score=score, cooldown_until=until
    )


def _reveal(discovery, clue, word: str) -> Reveal:
    return Reveal(
        position=discovery.word.position,
        word=word,
        reveal_line=clue.reveal_text(word) if clue else word,
        first=discovery.first,
        discovery_id=discovery.pk,
    )


def record_discovery(player, clue, message):
    """Creates the player's discovery of the clue's word; None when this player already has it.

    One transaction. Races, each closed by a unique constraint of Discovery:
    - two players finding the same word at once: both try `first=True`, the partial unique
      constraint on (word) where first lets one in; the other's insert fails inside its
      savepoint and is retried with first=False;
    - one player sending two right questions at once (two turns in flight): the unique
      (player, word) constraint lets one in; the other turn gets None and reveals nothing
      (the first turn reveals the word).
    The leaderboard is told after commit, so no reader sees a board the database does not.
    """
    hunt_id = clue.word.hunt_id
    with transaction.atomic():
        discovery = None
        for first in (True, False):
            if first and Discovery.objects.filter(word=clue.word, first=True).exists():
                continue
            try:
                with transaction.atomic():  # a savepoint: a refused insert keeps the outer one
                    discovery = Discovery.objects.create(
                        player=player, word=clue.word, clue=clue, message=message, first=first
                    )
                break
            except IntegrityError:
                if Discovery.objects.filter(player=player, word=clue.word).exists():
                    return None
        if discovery is None:
            return None
        Activity.bump(hunt_id, discoveries=1)
        transaction.on_commit(lambda: leaderboard.announce_leaderboard_change(hunt_id))
    return discovery


def reshow_discovery(discovery, clue, message) -> GateOutcome:
    """Reveals an earlier discovery again in this turn, which then owns it (so a redelivery of
    this turn reveals it too, and a later question does not).

    Race: two turns of the player asking again at once; the conditional update lets one of
    them take the discovery over, the other reveals nothing.
    """
    moved = Discovery.objects.filter(pk=discovery.pk, message_id=discovery.message_id).update(
        message=message
    )
    if not moved:
        return GateOutcome()
    return GateOutcome(reveals=(_reveal(discovery, clue, clue.word.reveal_word()),))


def open_clues(message) -> GateOutcome:
    """The gate for one player message: which words it unlocks, and a hint when the player
    keeps nearly asking. Call once per turn, before the prompt is built.

    A redelivered turn (its worker died) gets the reveals its message already earned, so the
    reply still says the word. A word whose turn failed is revealed again when the player asks
    its clue again (see reshow_discovery).
    """
    conversation = message.conversation
    player = conversation.player
    avatar = conversation.avatar
    hunt = avatar.hunt
    earlier = list(
        Discovery.objects.filter(message=message, player=player).select_related("word", "clue")
    )
    if earlier:
        return GateOutcome(reveals=tuple(_reveal(d, d.clue, d.word.reveal_word()) for d in earlier))
    # Staff (organizers, creators) discover nothing and count no near miss: they may know the
    # right questions, and their own tries must not be a way to probe the gate either.
    if hunt is None or message.role != "player" or not hunt.is_live() or not player.plays:
        return GateOutcome()
    clues = list(Clue.objects.filter(avatar=avatar).select_related("word"))
    mine = Discovery.objects.of(hunt, player=player).select_related("word", "message")
    found = {d.word_id: d for d in mine}
    # A word found in a turn whose reply then failed never reached the player in chat (the
    # `discovery` frame goes out with the reply): asking its clue again shows it again.
    unseen = {
        d.clue_id: d
        for d in found.values()
        if d.clue_id and d.message is not None and d.message.status == d.message.Status.FAILED
    }
    candidates = [
        c for c in clues if c.word.has_word and (c.word_id not in found or c.pk in unseen)
    ]
    # No model is loaded for avatars without locked words (most turns of a seasoned player).
    if not candidates or cooling_down(hunt, player):
        return GateOutcome()
    specs = [ClueSpec.of(c) for c in candidates]
    vocabulary = vocabulary_of(ClueSpec.of(c) for c in clues)
    names = frozenset(words_of(normalize_message(avatar.name)))
    earlier_text = (
        conversation.messages.filter(role=message.role, pk__lt=message.pk)
        .order_by("-pk")
        .values_list("text", flat=True)
        .first()
    )
    decision = match(
        message.text,
        specs,
        vocabulary,
        names=names,
        verifier=configured_verifier(),
        context=earlier_text or "",
    )
    by_key = {c.pk: c for c in candidates}
    opened = by_key.get(decision.opened)
    found_positions = {d.word.position for d in found.values()}
    if opened is not None and not set(opened.requires) <= found_positions:
        # Right question, but the player has not earned it yet: a near miss, and the hint.
        decision.near.insert(0, opened.pk)
        opened = None
    if opened is not None and opened.pk in unseen:
        return reshow_discovery(unseen[opened.pk], opened, message)
    if opened is not None:
        discovery = record_discovery(player, opened, message)
        if discovery is None:
            return GateOutcome()
        return GateOutcome(reveals=(_reveal(discovery, opened, opened.word.reveal_word()),))
    near = [key for key in decision.near if key not in unseen]  # a found word needs no hint
    if not near:
        return GateOutcome()
    count = count_near_miss(hunt, player)
    near_clue = by_key[near[0]]
    note_near_miss(hunt, near_clue, player, message, decision.best.get(near_clue.pk, 0.0), count)
    return GateOutcome(hint=near_clue.nudge(count) if count >= HINT_AFTER else None)


# Operating points -------------------------------------------------------------------------------


def calibrate_clues(avatar_id) -> list[Clue]:
    """Calibrates the operating point of every clue of an avatar from its questions, examples
    and counterexamples (hunt.gate_eval.calibrate), with the configured verifier. Run after any
    of them changes, for all the avatar's clues: one clue's anchors change what the others'
    examples open. Clues whose threshold is set by hand keep it; their calibration is still
    recorded, to show in the admin."""
    from hunt.gate_eval import calibrate

    clues = list(Clue.objects.filter(avatar=avatar_id).select_related("avatar"))
    if not clues:
        return []
    names = frozenset(words_of(normalize_message(clues[0].avatar.name)))
    verifier = configured_verifier()
    for clue in clues:
        if not clue.examples and not clue.counterexamples:
            clue.calibrated_threshold, clue.calibration = None, {}
        else:
            clue.calibration = calibrate(clue, clues, names, verifier)
            clue.calibrated_threshold = clue.calibration["threshold"]
        # An update, not save(): organizers' edits to other fields made meanwhile are kept.
        Clue.objects.filter(pk=clue.pk).update(
            calibrated_threshold=clue.calibrated_threshold, calibration=clue.calibration
        )
    return clues


PHRASINGS = ("examples", "counterexamples")  # a clue's lists of phrasings that must (not) open


def add_phrasing(clue_id: int, text: str, kind: str) -> Clue:
    """Adds `text` to the clue's `kind` list of phrasings (PHRASINGS), unless it is there, and
    drops it from the other list: a phrasing cannot both open and not open. Once committed, the
    avatar's clues are calibrated again, since new anchors move every clue's operating point."""
    if kind not in PHRASINGS:
        raise ValueError(f"kind is one of {PHRASINGS}, not {kind!r}")
    text = text.strip()
    with transaction.atomic():
        # Race: two organizers adding phrasings to one clue at once; without the lock one
        # append would overwrite the other's.
        clue = Clue.objects.select_for_update().get(pk=clue_id)
        (other,) = set(PHRASINGS) - {kind}
        if not text or text in getattr(clue, kind):
            return clue
        setattr(clue, kind, [*getattr(clue, kind), text])
        setattr(clue, other, [t for t in getattr(clue, other) if t != text])
        clue.save(update_fields=list(PHRASINGS))
        avatar_id = clue.avatar_id
        transaction.on_commit(lambda: calibrate_clues(avatar_id))
    return clue


# The organizers' playground ---------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorScore:
    text: str  # a right question or an example
    score: float  # the message's best window against it, first stage
    blocked: str | None  # the check that keeps this anchor shut in that window


@dataclass(frozen=True)
class Trial:
    """How the gate decides one message for one clue, for the organizers' playground. Nothing
    is recorded: no discovery, no near miss, no budget."""

    clue_id: int
    opened: bool  # this clue opens
    opened_other: int | None  # the pk of another clue of the avatar that opens instead
    reason: str  # the check that refused the message or its windows, when nothing opens
    score: float  # the clue's best first-stage score
    threshold: float  # the clue's operating point
    band: tuple[float, float]  # the scores a verifier decides
    blocked: str | None  # the check that blocked the clue's best window
    verdict: Verdict | None  # the second stage's, when the message was a close call
    verifier: str  # the configured verifier's name, "" when none
    near: bool  # a near miss (it would count against a player's budget and nudge)
    anchors: tuple[AnchorScore, ...]
    read_as: str = ""  # the English gloss the gate read, when the message reads as French


def try_message(clue: Clue, text: str, context: str = "") -> Trial:
    """The gate's decision on `text` sent to the clue's avatar, as a player with every word
    still to find would get it, explained. `context` is the message before it, if any."""
    clues = list(Clue.objects.filter(avatar=clue.avatar_id))
    specs = [ClueSpec.of(c) for c in clues]
    spec = next(s for s in specs if s.key == clue.pk)
    vocabulary = vocabulary_of(specs)
    names = frozenset(words_of(normalize_message(clue.avatar.name)))
    verifier = configured_verifier()
    params = default_params()
    analysis = analyse(text, specs, vocabulary, params, names, context)
    decision = decide(analysis, specs, params, verifier)
    windows = [row[clue.pk] for row in analysis.scores if clue.pk in row]
    best = max(windows, key=lambda s: (s.blocked is None, s.score), default=None)
    anchors = []
    for anchor in spec.questions:
        alone = analyse(text, [replace(spec, questions=(anchor,))], vocabulary, params, names,
                        context)  # fmt: skip
        scores = [row[clue.pk] for row in alone.scores if clue.pk in row]
        top = max(scores, key=lambda s: s.score, default=None)
        anchors.append(
            AnchorScore(anchor, round(top.score, 4) if top else 0.0, top.blocked if top else None)
        )
    threshold = params.threshold_of(spec)
    english = read_in_english(text)
    return Trial(
        clue_id=clue.pk,
        opened=decision.opened == clue.pk,
        opened_other=decision.opened if decision.opened not in (None, clue.pk) else None,
        reason=analysis.stuffed or decision.reason or "",
        score=round(decision.best.get(clue.pk, 0.0), 4),
        threshold=threshold,
        band=(
            round(threshold - params.verify_below, 3),
            round(threshold + params.verify_above, 3),
        ),
        blocked=best.blocked if best else None,
        verdict=decision.verdicts.get(clue.pk),
        verifier=verifier.name if verifier else "",
        near=clue.pk in decision.near,
        anchors=tuple(sorted(anchors, key=lambda a: -a.score)),
        read_as=english if english != text else "",
    )
