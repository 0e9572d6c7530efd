"""How the clue gate reads a question: its words, its kind, its wrappers and its anchors.

Pure functions over normalised text (hunt.leaks.normalize_message), driven by the word lists
of hunt/gate_data/lexicon.json (hunt/lexicon.py). The matcher (hunt/matcher.py) scores with
them; nothing here touches the database. The spelling fixer asks the encoder which words it
knows (hunt/encoder.py).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from hunt.encoder import known_words
from hunt.french import read_in_english
from hunt.leaks import normalize_message, words_of
from hunt.lexicon import load_lexicon

LEXICON = load_lexicon()
CONTRAST_INDEX = LEXICON.contrast_index()


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
# A form of address before the question: "big sven, which ...", "mr. finch, who ...".
_ADDRESS = re.compile(
    r"^((?:[^\W\d_]+\.? ){0,2}[^\W\d_]+)\s*,\s*(?=(?:who|whom|whose|what|what's|which|where|"
    r"when|why|how|is|are|do|does|did|can|could|would|will|have|has|tell)\b)"
)


def strip_wrappers(
    window: str, names: frozenset[str] = frozenset(), topic: frozenset[str] = frozenset()
) -> str:
    """The window without greetings, "tell me"-style lead-ins and vocatives (the avatar's
    name, "captain", any title and name before a comma that holds no word of the clues'
    `topic`), which say nothing about which question is asked."""
    vocatives = LEXICON.vocatives | names
    # A vocative is a name set off by a comma at either end: "marta, what ..." / "... , captain?"
    lead = re.match(r"^([^\W\d_]+(?: [^\W\d_]+)?)\s*,\s*", window)
    if lead and set(lead.group(1).split()) <= vocatives:
        window = window[lead.end() :]
    address = _ADDRESS.match(window)
    if address and not set(words_of(address.group(1))) & (LEXICON.function_words | topic):
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
    known = known_words()

    def fix(match: re.Match) -> str:
        token = match.group(0)
        if token in LEXICON.slang:
            return LEXICON.slang[token]
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
                if nxt in LEXICON.degree_words:
                    # "how high" and "how far" ask different measures: the measure is a kind
                    # too. "How many hours" and "how much time" ask "how long".
                    unit = tokens[i + 2].removesuffix("s") if i + 2 < len(tokens) else ""
                    measure = LEXICON.measures.get(nxt, nxt)
                    if measure == "many" and (
                        unit in LEXICON.time_nouns or unit in LEXICON.durations
                    ):
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
            if nxt in LEXICON.time_nouns:
                kinds.add(TIME)
            elif "number" in following[:2] or "count" in following[:2]:
                kinds.update((DEGREE, f"{DEGREE}:many"))  # "what's the number of" is "how many"
            elif nxt in ("length", "duration"):
                kinds.update((DEGREE, f"{DEGREE}:long"))  # "for what length of time"
            elif nxt in LEXICON.person_nouns:
                kinds.add(PERSON)
            elif nxt in LEXICON.place_nouns:
                kinds.add(PLACE)
            elif (
                nxt == "reason"
                or ("reason" in following[:3] and "the" in following[:2])
                or nxt in LEXICON.cause_verbs
                or (nxt in LEXICON.prevent_verbs and "from" in tokens[i + 2 : i + 8])
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


# "your <relative>" in place of "you" asks about someone else (see swaps_contrast).
_SOMEONE_ELSE = re.compile(
    r"\b(?:your|my|his|her|their|our|the|a)\s+(?:[^\W\d_]+\s+)?("
    + "|".join(sorted(LEXICON.other_people))
    + r")(?:'s|s|s')?\b"
)


def swaps_contrast(question: str, window: str) -> bool:
    """Whether the window uses a contrasting word in place of one of the question's."""
    q_words, w_words = set(words_of(question)), set(words_of(window))

    def groups(words: set[str], ci: int) -> set[int]:
        return {gi for w in words for c, gi in CONTRAST_INDEX.get(w, ()) if c == ci}

    for word in w_words - q_words:
        for ci, gi in CONTRAST_INDEX.get(word, ()):
            in_question = groups(q_words, ci)
            if in_question and gi not in in_question and not (in_question & groups(w_words, ci)):
                return True

    # Someone else in place of "you": "how long can your father hold his breath" is not "how
    # long can you hold your breath". Only "your/the <person>" counts: a title in an address
    # ("brother anselm, why ...") is no one else.
    def people(words: Iterable[str]) -> set[str]:
        return {LEXICON.kin.get(stem(w), stem(w)) for w in words}

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


def gate_text(text: str) -> str:
    """What the gate reads of a text: in English (hunt/french.py), normalised."""
    return normalize_message(read_in_english(text))


def vocabulary_of(clues: Iterable) -> frozenset[str]:
    """The words of the clues' right questions and keywords (ClueSpecs), in English as the
    gate reads them: what spelling is corrected toward."""
    words: set[str] = set()
    for clue in clues:
        for text in (*clue.questions, *clue.keywords):
            words.update(w for w in words_of(gate_text(text)) if len(w) >= 3)
    return frozenset(words)


# Words never left out of a right question to make an anchor (see anchors_of): question and
# function words, and (below) keywords, negations and contrast words, which carry the meaning.
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
            or following in LEXICON.kept_in_anchors
            or word in LEXICON.kept_in_anchors
            or word.endswith("n't")
            or word in CONTRAST_INDEX
            or stem(word) in keyword_stems
        ):
            continue
        anchors.append(" ".join(tokens[:i] + tokens[i + 1 :]))
    # Closing phrases: cut before a preposition that follows a content word, keeping four
    # words or more.
    for i in range(4, len(tokens)):
        if (
            tokens[i] in LEXICON.trailing_prepositions
            and bare[i - 1] not in LEXICON.kept_in_anchors
        ):
            anchors.append(" ".join(tokens[:i]).rstrip(",;:") + "?")
    return tuple(anchors)


_PRONOUN = re.compile(r"\b(?:it|its|they|them|he|him|she|her|that one|this one)\b")


def windows_of(sentences: Sequence[str], keyword_stems: frozenset[str] = frozenset()) -> list[str]:
    """Each sentence, then each pair of neighbouring sentences, then each sentence whose
    pronoun stands for a keyword of the sentence before it, with the keyword in its place
    ("I saw your scar. How did it happen?" -> "how did the scar happen?")."""
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
    resolved = [
        r for a, b in itertools.pairwise(sentences) if (r := resolve_pronoun(a, b, keyword_stems))
    ]
    return [*sentences, *pairs, *resolved]


# Words with which a message leans on the one before it ("what's its name?", "why is that?").
_LEANS = re.compile(r"\b(?:it|its|they|them|their|he|him|his|she|her|that|this|one)\b")


def leans_on_before(sentence: str) -> bool:
    return bool(_LEANS.search(sentence))


def resolve_pronoun(before: str, sentence: str, keyword_stems: frozenset[str]) -> str | None:
    """`sentence` with its pronoun replaced by the last keyword named in `before`, or None
    when it names a keyword itself or has no pronoun for one."""
    if {stem(w) for w in words_of(sentence)} & keyword_stems:
        return None  # names its topic itself
    named = [w for w in words_of(before) if stem(w) in keyword_stems]
    if named and _PRONOUN.search(sentence):
        return _PRONOUN.sub(f"the {named[-1]}", sentence, count=1)
    return None
