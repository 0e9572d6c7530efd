"""The clue gate's matcher: does a message ask one of these clues' right questions?

Pure: no database; shared by the gate (hunt/gate.py), `tune_gate` and `eval_gate`.

1. A message that reads as French is glossed into English (hunt/french.py: the encoder and
   the verifier read English only), as are French right questions, examples and
   counterexamples. The message is normalised (hunt.leaks.normalize_message: NFKC, invisible
   characters dropped, look-alikes mapped, casefolded, spaced letters collapsed, capped),
   misspellings are corrected toward the words of the avatar's clues, and it is split into
   sentences. Windows are
   single sentences, pairs of neighbouring ones ("I saw your lamp. What keeps it burning?") and
   sentences whose pronoun stands for the keyword of the one before (hunt/questions.py); and,
   when it leans on the player's previous message, that message's last sentence with its own.
2. Each window is embedded (hunt/encoder.py) and compared by cosine with every anchor of every
   right question of every candidate clue, and of the clue's `examples` (more phrasings the
   organizer says must open it).
3. The checks (CHECKS, below) refuse a whole message, skip a window, block a question or a
   clue in a window, or refuse a window or message in which several clues pass. A window's
   score must then reach the clue's operating point (set by hand, calibrated, or the default
   of hunt/gate_data/params.json); close calls, near it on either side, are decided by a
   verifier when one is given (hunt/verifiers.py). So at most one clue opens per message.

Each check is a small named object, so that one can be switched off (`Params.without`) and
what it earns measured: `python manage.py tune_gate --without each`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np

from hunt.encoder import embed
from hunt.leaks import split_sentences, words_of
from hunt.questions import (
    anchors_of,
    asks_yes_or_no,
    correct_spelling,
    gate_text,
    has_keyword,
    kind_relation,
    leans_on_before,
    question_kinds,
    resolve_pronoun,
    stem,
    stems_of,
    strip_wrappers,
    swaps_contrast,
    vocabulary_of,
    windows_of,
)
from hunt.verifiers import Verdict, Verifier

DATA_DIR = Path(__file__).resolve().parent / "gate_data"
PARAMS_FILE = DATA_DIR / "params.json"

MAX_SENTENCES = 6  # a message longer than this is a wall of text: it opens nothing
MAX_QUESTIONS = 3  # more questions than this in one message (marks or asking sentences): stuffing
MAX_WINDOW_WORDS = 40  # longer windows dilute any question: skipped
MAX_LIST_SEPARATORS = 3  # a window with more commas/semicolons/slashes/"or" is a list
MAX_WH_WORDS = 3  # a window with more question words is a list of questions
KEYWORD_SHARE = 0.5  # a window whose words are mostly keywords is a keyword list
NEAR_BAND = 0.1  # a score this close under the threshold is a near miss
COPY_SIMILARITY = 0.9  # a window this similar to a counterexample is a copy of it (typos, case)


# Parameters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    threshold: float
    type_penalty: float
    drop_penalty: float = 0.0
    # The close calls a verifier (hunt/verifiers.py) decides: scores from threshold - below to
    # threshold + above. Outside it, the first stage decides alone.
    verify_below: float = 0.0
    verify_above: float = 0.0
    # Checks whose block a verifier may overrule on a close call, when it is this sure (0-1).
    overridable: frozenset[str] = frozenset()
    override_at: float = 1.0
    # A longer message is decided by the first stage alone: players ask in a few words, and
    # the verifier learnt from questions, not from pages of instructions (0: no limit).
    verify_max_words: int = 0
    without: frozenset[str] = frozenset()  # names of checks switched off (for measuring them)

    def threshold_of(self, clue: ClueSpec) -> float:
        """The clue's operating point: its own threshold (set by hand or calibrated), else
        the default."""
        return clue.threshold if clue.threshold is not None else self.threshold

    def checks(self, stage: type[Check]) -> list:
        return [c for c in CHECKS if isinstance(c, stage) and c.name not in self.without]

    def on(self, name: str) -> bool:
        return name not in self.without


@cache
def default_params() -> Params:
    """The tuned parameters (hunt/gate_data/params.json, written by `tune_gate --write`)."""
    data = json.loads(PARAMS_FILE.read_text())
    return Params(
        threshold=float(data["threshold"]),
        type_penalty=float(data["type_penalty"]),
        drop_penalty=float(data["drop_penalty"]),
        verify_below=float(data["verify_below"]),
        verify_above=float(data["verify_above"]),
        overridable=frozenset(data["overridable"]),
        override_at=float(data["override_at"]),
        verify_max_words=int(data["verify_max_words"]),
    )


# What is matched --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClueSpec:
    """What the matcher needs of a clue (a Clue row, or an item of the tuning data)."""

    key: object
    questions: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    threshold: float | None = None
    counterexamples: tuple[str, ...] = ()  # phrasings that must not open it (Counterexample)

    @classmethod
    def of(cls, clue, leave_out: str | None = None) -> ClueSpec:
        """The clue's right questions plus its `examples` (phrasings the organizer says must
        open it: more anchors, better recall), and its counterexamples. `leave_out` drops one
        example or counterexample, so that each is measured against the others only."""
        anchors = [*clue.questions, *(e for e in clue.examples if e != leave_out)]
        return cls(
            key=clue.pk,
            questions=tuple(dict.fromkeys(q for q in anchors if q.strip())),
            keywords=tuple(k for k in clue.keywords if k.strip()),
            counterexamples=tuple(
                c for c in dict.fromkeys(clue.counterexamples) if c.strip() and c != leave_out
            ),
            # Set by hand, else calibrated from the clue's examples (hunt.gate.calibrate_clues).
            threshold=clue.threshold if clue.threshold is not None else clue.calibrated_threshold,
        )


@dataclass(frozen=True)
class Window:
    """One window of a message as the checks see it."""

    text: str
    tokens: list[str]
    kinds: set[str]  # the kinds of question it asks (hunt.questions.question_kinds)
    yes_no: bool  # a yes/no question ("is the lamp hot?")
    keyword_stems: frozenset[str]  # the stems of every candidate clue's keywords
    vector: np.ndarray | None = None  # its sentence embedding, once it is not skipped


@dataclass(frozen=True)
class Question:
    """One normalised right question (or example) of a clue."""

    text: str
    kinds: set[str]


@dataclass
class WindowScore:
    """A clue's best score in one window; `blocked` names the check that keeps it shut."""

    score: float
    blocked: str | None = None
    question: str = ""  # the right question (or example) that scored it


@dataclass
class Analysis:
    """A message scored against clues, before thresholds are applied."""

    text: str
    stuffed: str | None = None  # the check that refused the whole message
    windows: list[str] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # window index -> the check
    scores: list[dict[object, WindowScore]] = field(default_factory=list)
    # A follow-up window (the earlier message's sentence with this one's) asks what this
    # one's sentence asks: window -> that sentence, whose kind of question the checks read.
    asking: dict[str, str] = field(default_factory=dict)


@dataclass
class Decision:
    opened: object | None = None  # the key of the clue that opens
    score: float = 0.0
    near: list[object] = field(default_factory=list)  # keys of clues nearly matched
    reason: str = ""
    best: dict[object, float] = field(default_factory=dict)  # each clue's best window score
    verdicts: dict[object, Verdict] = field(default_factory=dict)  # the second stage's, by clue


# Checks -----------------------------------------------------------------------------------------


class Check:
    """A rule of the matcher. `name` switches it off (Params.without) and labels what it
    refused (Analysis.stuffed / skipped, WindowScore.blocked, Decision.reason)."""

    name = ""


class MessageCheck(Check):
    """Refuses a whole message: it opens nothing, whatever it scores."""

    def refuses(self, normalized: str, sentences: list[str]) -> bool:
        raise NotImplementedError


class WindowCheck(Check):
    """Skips a window: it is scored against no clue."""

    def skips(self, window: Window) -> bool:
        raise NotImplementedError


class QuestionCheck(Check):
    """Blocks one right question in a window, or costs its score a penalty."""

    def blocks(self, question: Question, window: Window) -> bool:
        return False

    def penalty(self, question: Question, window: Window, params: Params) -> float:
        return 0.0


class ClueCheck(Check):
    """Blocks a clue in a window, whatever its questions score."""

    def blocks(self, clue: ClueSpec, window: Window) -> bool:
        raise NotImplementedError


class OneClueCheck(Check):
    """Refuses a scope (a window, or the whole message) in which more than one clue passes."""

    scope = ""


class TooManySentences(MessageCheck):
    name = "sentences"

    def refuses(self, normalized, sentences):
        return len(sentences) > MAX_SENTENCES


class TooManyQuestions(MessageCheck):
    """Many guesses in one message: question marks, or sentences that ask something whatever
    they end with ("who lit the lamp. what feeds your lamp at night. where is the flame.")."""

    name = "questions"

    def refuses(self, normalized, sentences):
        asking = sum(1 for s in sentences if s.endswith("?") or _asks(s))
        return max(normalized.count("?"), asking) > MAX_QUESTIONS


def _asks(sentence: str) -> bool:
    kinds = question_kinds(sentence)
    return bool(kinds) or asks_yes_or_no(sentence, kinds)


class LongWindow(WindowCheck):
    name = "long_window"

    def skips(self, window):
        return len(window.tokens) > MAX_WINDOW_WORDS


class ListWindow(WindowCheck):
    name = "list"

    def skips(self, window):
        text = window.text
        separators = len(re.findall(r"[,;/|]", text)) + len(re.findall(r"\bor\b", text))
        return separators > MAX_LIST_SEPARATORS


class QuestionWords(WindowCheck):
    """A window with many question words is a list of questions."""

    name = "question_words"

    def skips(self, window):
        wh = ("who", "what", "where", "when", "why", "how", "which")
        return sum(t in wh for t in window.tokens) > MAX_WH_WORDS


class KeywordList(WindowCheck):
    """A window that is mostly keywords asks nothing."""

    name = "keyword_list"

    def skips(self, window):
        count = sum(stem(t) in window.keyword_stems for t in window.tokens)
        return count >= 3 and count > KEYWORD_SHARE * len(window.tokens)


class QuestionKind(QuestionCheck):
    """Another kind of question (who for where) asks for another answer; a looser one (what
    for why) costs Params.type_penalty."""

    name = "kind"

    def blocks(self, question, window):
        return kind_relation(question.kinds, window.kinds) == "other"

    def penalty(self, question, window, params):
        loose = kind_relation(question.kinds, window.kinds) == "loose"
        return params.type_penalty if loose else 0.0


class YesOrNo(QuestionCheck):
    """A yes/no question asks whether, not who/what/where."""

    name = "yes_no"

    def blocks(self, question, window):
        return window.yes_no and bool(question.kinds)


class Contrast(QuestionCheck):
    """A contrasting word in place of the question's (red for blue), or someone else in place
    of "you", asks something else."""

    name = "contrast"

    def blocks(self, question, window):
        return swaps_contrast(question.text, window.text)


class Keyword(ClueCheck):
    """A clue with keywords opens only for a window holding one of them."""

    name = "keyword"

    def blocks(self, clue, window):
        return not has_keyword(window.text, clue.keywords)


class Counterexample(ClueCheck):
    """A window that is all but a copy of one of the clue's counterexamples (COPY_SIMILARITY),
    and closer to it than to any right question or example, asks what the organizer said must
    not open the clue. Only near copies: a counterexample one word away from the right question
    is about as close to every paraphrase as the question is."""

    name = "counterexample"

    def blocks(self, clue, window):
        if not clue.counterexamples or window.vector is None:
            return False

        def nearest(texts) -> float:
            return max(float(np.dot(window.vector, embed(gate_text(t)))) for t in texts)

        against = nearest(clue.counterexamples)
        return against >= COPY_SIMILARITY and against >= nearest(clue.questions)


class OneClueAWindow(OneClueCheck):
    """One sentence passing for two clues is a list, or a vague question."""

    name = "ambiguous"
    scope = "window"


class OneClueAMessage(OneClueCheck):
    name = "several"
    scope = "message"


CHECKS: list[Check] = [
    TooManySentences(),
    TooManyQuestions(),
    LongWindow(),
    ListWindow(),
    QuestionWords(),
    KeywordList(),
    QuestionKind(),
    YesOrNo(),
    Contrast(),
    Keyword(),
    Counterexample(),
    OneClueAWindow(),
    OneClueAMessage(),
]


# Matching ---------------------------------------------------------------------------------------


def _question_score(
    vector: np.ndarray,
    clue: ClueSpec,
    question: Question,
    window: Window,
    params: Params,
    checks: list[QuestionCheck],
) -> WindowScore:
    """The window's score against one right question (its best anchor), or why it is blocked.
    A blocked score keeps its unpenalised value: it still tells a near miss."""
    whole, *shorter = anchors_of(question.text, clue.keywords)
    score = max(
        [
            float(np.dot(vector, embed(whole))),
            *(float(np.dot(vector, embed(a))) - params.drop_penalty for a in shorter),
        ]
    )
    for check in checks:
        if check.blocks(question, window):
            return WindowScore(score, check.name, question.text)
    penalty = sum(c.penalty(question, window, params) for c in checks)
    return WindowScore(score - penalty, question=question.text)


def analyse(
    text: str,
    clues: Sequence[ClueSpec],
    vocabulary: frozenset[str] | None = None,
    params: Params | None = None,
    names: frozenset[str] = frozenset(),
    context: str = "",
) -> Analysis:
    """Scores a message against clues (see module doc); thresholds are applied by `decide`.

    `context` is the player's message before this one: its last sentence may tell what this
    one's pronoun stands for ("I saw your lamp up there." then "what keeps it going?"). When
    this message's first sentence leans on it (a pronoun), two windows are added: the pronoun
    read as the earlier keyword, and the two sentences together. The earlier message is never
    scored alone, and the checks on a whole message look at this message only."""
    params = params or default_params()
    vocabulary = vocabulary if vocabulary is not None else vocabulary_of(clues)
    normalized = gate_text(text)
    analysis = Analysis(text=normalized)
    if not clues or not normalized:
        return analysis
    sentences = split_sentences(correct_spelling(normalized, vocabulary))
    for check in params.checks(MessageCheck):
        if check.refuses(normalized, sentences):
            analysis.stuffed = check.name
            return analysis  # opens nothing, whatever it scores
    keyword_stems = stems_of(k for c in clues for k in c.keywords)
    analysis.windows = windows_of(sentences[: MAX_SENTENCES + 1], keyword_stems)
    before = split_sentences(correct_spelling(gate_text(context), vocabulary))
    if before and sentences and leans_on_before(sentences[0]):
        resolved = resolve_pronoun(before[-1], sentences[0], keyword_stems)
        for follow_up in (resolved, f"{before[-1]} {sentences[0]}"):
            if follow_up and follow_up not in analysis.windows:
                analysis.windows.append(follow_up)
                analysis.asking[follow_up] = sentences[0]
    # What does not depend on the window, once per message rather than once per window.
    window_checks, clue_checks = params.checks(WindowCheck), params.checks(ClueCheck)
    question_checks = params.checks(QuestionCheck)
    questions = {
        clue.key: [Question(q, question_kinds(q)) for q in map(gate_text, clue.questions)]
        for clue in clues
    }
    for i, text_ in enumerate(analysis.windows):
        asks = analysis.asking.get(text_, text_)
        kinds = question_kinds(asks)
        window = Window(text_, words_of(text_), kinds, asks_yes_or_no(asks, kinds), keyword_stems)
        skipped = next((c.name for c in window_checks if c.skips(window)), None)
        if skipped:
            analysis.skipped[i] = skipped
            analysis.scores.append({})
            continue
        vector = embed(strip_wrappers(text_, names, vocabulary))
        window = replace(window, vector=vector)
        row = {}
        for clue in clues:
            best: WindowScore | None = None
            for question in questions[clue.key]:
                candidate = _question_score(vector, clue, question, window, params, question_checks)
                if best is None or (candidate.blocked is None, candidate.score) > (
                    best.blocked is None,
                    best.score,
                ):
                    best = candidate
            if best is not None and best.blocked is None:
                best.blocked = next((c.name for c in clue_checks if c.blocks(clue, window)), None)
            if best is not None:
                row[clue.key] = best
        analysis.scores.append(row)
    return analysis


def decide(
    analysis: Analysis,
    clues: Sequence[ClueSpec],
    params: Params | None = None,
    verifier: Verifier | None = None,
) -> Decision:
    """Applies thresholds, the verifier on close calls, and the one-clue checks: at most one
    clue opens per message, and none when several would."""
    params = params or default_params()
    by_key = {c.key: c for c in clues}
    thresholds = {c.key: params.threshold_of(c) for c in clues}
    one_clue = {c.scope: c.name for c in params.checks(OneClueCheck)}
    passing: list[tuple[float, object]] = []
    near: set[object] = set()
    best: dict[object, float] = {}
    verdicts: dict[object, Verdict] = {}
    if params.verify_max_words and len(words_of(analysis.text)) > params.verify_max_words:
        verifier = None
    refused = ""
    for window, row in zip(analysis.windows, analysis.scores, strict=True):
        for key, s in row.items():
            best[key] = max(best.get(key, 0.0), s.score)
            if s.score >= thresholds[key] - NEAR_BAND:
                near.add(key)
        here = []
        for key, s in row.items():
            threshold = thresholds[key]
            close = threshold - params.verify_below <= s.score < threshold + params.verify_above
            if s.blocked is not None and (s.blocked not in params.overridable or not close):
                continue
            if verifier is None or not close:
                opens = s.blocked is None and s.score >= threshold
            else:
                verdict = verifier.verify(window, by_key[key].questions)
                if key not in verdicts or verdict.score > verdicts[key].score:
                    verdicts[key] = verdict
                if s.blocked is not None:
                    opens = verdict.score >= params.override_at
                else:
                    opens = verdict.answer == "yes" or (
                        verdict.answer == "unsure" and s.score >= threshold
                    )
            if opens:
                here.append((s.score, key))
        if len(here) > 1 and "window" in one_clue:
            refused = one_clue["window"]
            continue
        passing.extend(here)
    several = len({key for _score, key in passing}) > 1 and "message" in one_clue
    if analysis.stuffed or several or not passing:
        reason = analysis.stuffed or (one_clue["message"] if several else refused)
        return Decision(near=sorted(near, key=str), reason=reason, best=best, verdicts=verdicts)
    score, key = max(passing, key=lambda p: (p[0], str(p[1])))
    return Decision(
        opened=key,
        score=score,
        near=sorted(near - {key}, key=str),
        best=best,
        verdicts=verdicts,
    )


def match(
    text: str,
    clues: Sequence[ClueSpec],
    vocabulary: frozenset[str] | None = None,
    params: Params | None = None,
    names: frozenset[str] = frozenset(),
    verifier: Verifier | None = None,
    context: str = "",
) -> Decision:
    analysis = analyse(text, clues, vocabulary, params, names, context)
    return decide(analysis, clues, params, verifier)
