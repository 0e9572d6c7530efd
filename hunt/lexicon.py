"""The clue gate's word lists, kept as data (hunt/gate_data/lexicon.json) and checked on load.

A rule tweak that only adds a word ("'hiya' is a greeting", "'amber' contrasts with 'green'")
is an edit of that file, measured with `python manage.py tune_gate`; the code that reads
questions with these lists is hunt/questions.py.

Loading refuses a file that would make the gate misbehave silently: a missing or unknown list,
a word that is not lower case, or a word in two opposite groups of one contrast (it would then
contrast with itself, and a question could block its own paraphrases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

LEXICON_FILE = Path(__file__).resolve().parent / "gate_data" / "lexicon.json"


class LexiconError(ValueError):
    """The lexicon file is malformed; the message names the list and the word."""


@dataclass(frozen=True)
class Lexicon:
    slang: dict[str, str]  # chat spellings mapped before matching ("wat r u")
    vocatives: frozenset[str]  # forms of address that say nothing about the question
    function_words: frozenset[str]  # words that make a phrase before a comma no address
    degree_words: frozenset[str]  # "how <word>" asks a measure (how far, how old)
    measures: dict[str, str]  # measures asked the same way ("how tall" is "how high")
    durations: frozenset[str]  # "how many <unit>" asks how long
    time_nouns: frozenset[str]  # "what <noun>" asks when
    place_nouns: frozenset[str]  # "what <noun>" asks where
    cause_verbs: frozenset[str]  # "what <verb> you ..." asks why
    prevent_verbs: frozenset[str]  # "what <verb> you from ..." asks why
    person_nouns: frozenset[str]  # "what <noun>" asks who
    # Sets of opposite groups: a question that swaps a word for one of another group of the
    # same set asks something else ("the red rose" is not "the blue rose").
    contrasts: tuple[tuple[frozenset[str], ...], ...]
    other_people: frozenset[str]  # "your father" in place of "you" asks about someone else
    kin: dict[str, str]  # spellings of one relative ("mum" is "mother")
    kept_in_anchors: frozenset[str]  # words never left out of a right question's anchors
    trailing_prepositions: frozenset[str]  # where a closing phrase of a question may begin

    def contrast_index(self) -> dict[str, list[tuple[int, int]]]:
        """word -> [(set, group)] for every contrast group that holds the word."""
        index: dict[str, list[tuple[int, int]]] = {}
        for ci, groups in enumerate(self.contrasts):
            for gi, group in enumerate(groups):
                for word in group:
                    index.setdefault(word, []).append((ci, gi))
        return index


_MAPPINGS = frozenset(["slang", "measures", "kin"])


def _words(name: str, value) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(w, str) and w for w in value):
        raise LexiconError(f"{name}: must be a list of words")
    for word in value:
        if word != word.casefold() or word != word.strip():
            raise LexiconError(f"{name}: {word!r} must be lower case, without spaces around")
    return frozenset(value)


def _mapping(name: str, value) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise LexiconError(f"{name}: must map words to words")
    _words(name, [*value, *value.values()])
    return dict(value)


def _contrasts(value) -> tuple[tuple[frozenset[str], ...], ...]:
    if not isinstance(value, list) or not all(isinstance(s, list) for s in value):
        raise LexiconError("contrasts: must be a list of sets of opposite groups")
    sets = []
    for ci, groups in enumerate(value):
        read = tuple(_words(f"contrasts[{ci}][{gi}]", g) for gi, g in enumerate(groups))
        if len(read) < 2:
            raise LexiconError(f"contrasts[{ci}]: needs two groups or more")
        seen: dict[str, int] = {}
        for gi, group in enumerate(read):
            for word in sorted(group):
                if word in seen:
                    raise LexiconError(
                        f"contrasts[{ci}]: {word!r} is in opposite groups {seen[word]} and {gi}"
                    )
                seen[word] = gi
        sets.append(read)
    return tuple(sets)


def parse_lexicon(data: dict) -> Lexicon:
    """The lexicon of a decoded lexicon.json; raises LexiconError when it is malformed."""
    names = {f.name for f in fields(Lexicon)}
    given = {k for k in data if not k.startswith("_")}  # "_doc" and the like are comments
    if given != names:
        missing, unknown = sorted(names - given), sorted(given - names)
        raise LexiconError(f"lists missing: {missing}, unknown: {unknown}")
    values = {}
    for name in names:
        if name == "contrasts":
            values[name] = _contrasts(data[name])
        elif name in _MAPPINGS:
            values[name] = _mapping(name, data[name])
        else:
            values[name] = _words(name, data[name])
    return Lexicon(**values)


def load_lexicon(path: Path = LEXICON_FILE) -> Lexicon:
    return parse_lexicon(json.loads(path.read_text()))
