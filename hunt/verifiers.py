"""The clue gate's second stage: a verifier for the close calls.

The matcher (hunt/matcher.py) scores a player's sentence against a clue's right questions with
sentence vectors; where that score is close to the clue's threshold (Params.verify_below under
it to Params.verify_above over it), a verifier reads the sentence with each right question and
says whether they ask the same thing: yes, no, or unsure (the first stage then decides alone).
A verifier sees the sentence and the questions, never the word.

`GATE_VERIFIER` chooses one:
- "cross" (default): the gate's cross-encoder (hunt/crossencoder.py), trained by
  `manage.py train_gate_verifier`; CPU, tens of milliseconds per close call;
- "judge": the avatar model asked a yes/no question (avatars/judge.py), for workers running a
  capable model on a GPU;
- "none": the first stage alone;
- or the dotted path of a Verifier class.
Both apps may ask for a verifier; the judge lives in the chat app, which owns the avatar model,
so it is named here by its path (the game never imports the chat app).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

REMEMBERED = 4096  # verdicts a verifier keeps

VERIFIERS = {
    "cross": "hunt.verifiers.CrossEncoderVerifier",
    "judge": "avatars.judge.JudgeVerifier",
}


@dataclass(frozen=True)
class Verdict:
    answer: str  # "yes", "no" or "unsure"
    score: float  # the verifier's confidence that the sentence asks the question, 0 to 1
    question: str = ""  # the right question (or example) it was surest about


class Verifier:
    """Reads a player's sentence with right questions. Subclasses give `name` and `scores`."""

    name = ""
    yes_at = 0.5  # a score from here up is a yes
    no_under = 0.5  # a score under this is a no; between the two, unsure

    def __init__(self):
        self._remembered: dict[tuple[str, tuple[str, ...]], Verdict] = {}

    def scores(self, sentence: str, questions: Sequence[str]) -> list[float]:
        """For each question, the confidence (0 to 1) that `sentence` asks the same thing."""
        raise NotImplementedError

    def verify(self, sentence: str, questions: Sequence[str]) -> Verdict:
        """The verdict on the question the sentence is closest to. Kept (up to REMEMBERED):
        a clue's calibration asks the same close calls at every threshold it tries."""
        if not questions:
            return Verdict("no", 0.0)
        key = (sentence, tuple(questions))
        if key not in self._remembered:
            if len(self._remembered) >= REMEMBERED:
                self._remembered.clear()
            self._remembered[key] = self._verify(sentence, questions)
        return self._remembered[key]

    def _verify(self, sentence: str, questions: Sequence[str]) -> Verdict:
        score, question = max(zip(self.scores(sentence, questions), questions, strict=True))
        if score >= self.yes_at:
            answer = "yes"
        elif score < self.no_under:
            answer = "no"
        else:
            answer = "unsure"
        return Verdict(answer, round(float(score), 4), question)


class CrossEncoderVerifier(Verifier):
    """Never unsure: its probability decides the whole band. Chosen on holdout2.json with the
    attack corpora (hunt/gate_data/params.json): an unsure middle left to the first stage cost
    false unlocks and earned little recall."""

    name = "cross"
    yes_at = no_under = 0.7

    def scores(self, sentence, questions):
        from hunt import crossencoder

        return crossencoder.probabilities(sentence, questions)


@cache
def configured_verifier() -> Verifier | None:
    """The verifier `GATE_VERIFIER` names, loaded once per process; None for "none", or when the
    cross-encoder has not been trained here (the first stage then decides alone, and a warning
    is logged)."""
    return verifier_named(settings.GATE_VERIFIER)


def verifier_named(name: str) -> Verifier | None:
    if name == "none":
        return None
    if name == "cross":
        from hunt import crossencoder

        if not crossencoder.available():
            logger.warning("The gate's cross-encoder is not trained: run train_gate_verifier.")
            return None
    return import_string(VERIFIERS.get(name, name))()
