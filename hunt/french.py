"""French messages read in English: a word-for-word gloss for the English-only clue gate.

The packaged encoder and the verifier read English only, so a French ask ("tu brûles quoi
dans ta lampe ?") scored nothing against its English right question, however right it was. A
message that reads as French (more French function words than English ones) is glossed with
hunt/gate_data/fr_en.json before the gate reads it ("you burn what in your lamp ?"): set
phrases first, the longest match first, then single words; a word the glossary lacks is kept
as typed (names, and cognates whose subwords the encoder knows). The glossary is general
French, written by two helpers who saw neither the matcher nor the evaluation sets.

A gloss is only English words for French ones: the gate's checks read it as they read any
English message, so it opens nothing that the same words typed in English would not.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hunt.leaks import drop_accents

GLOSSARY_FILE = Path(__file__).resolve().parent / "gate_data" / "fr_en.json"

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "ʼ": "'"})
# Words with inner hyphens or apostrophes ("qu'est-ce", "aujourd'hui"), or one other sign.
_TOKEN = re.compile(r"[^\W_]+(?:['-][^\W_]+)*'?|[^\w\s]")
_ELISION = re.compile(r"^(jusqu|lorsqu|puisqu|quoiqu|qu|[cdjlmnst])'(.+)$")


@dataclass(frozen=True)
class Glossary:
    words: dict[str, str]  # as written, accents and all
    folded: dict[str, str]  # accents dropped; an unaccented entry wins ("ou": or, not where)
    phrases: dict[tuple[str, ...], str]  # token sequences, accents dropped
    longest: int
    french: frozenset[str]  # function words that mark a French sentence
    english: frozenset[str]  # and an English one

    def split(self, text: str) -> list[str]:
        """Tokens, with elided articles and pronouns ("l'", "qu'") and hyphenated inversions
        ("as-tu") apart, unless the whole form is a word of its own ("aujourd'hui")."""
        tokens = []
        for token in _TOKEN.findall(text.translate(_APOSTROPHES)):
            tokens.extend(self._pieces(token))
        return tokens

    def _pieces(self, token: str) -> list[str]:
        if self.lookup(token) is not None or not token[0].isalpha():
            return [token]
        elided = _ELISION.match(token)
        if elided:
            return [f"{elided.group(1)}'", *self._pieces(elided.group(2))]
        if "-" in token:
            return [piece for part in token.split("-") for piece in self._pieces(part)]
        return [token]

    def lookup(self, word: str) -> str | None:
        found = self.words.get(word)
        return found if found is not None else self.folded.get(drop_accents(word))

    def reads_as_french(self, tokens: list[str]) -> bool:
        folded = [drop_accents(t) for t in tokens]
        french = sum(1 for t in folded if t in self.french)
        return french >= 2 and french > sum(1 for t in folded if t in self.english)

    def gloss(self, tokens: list[str]) -> str:
        out, i = [], 0
        folded = [drop_accents(t) for t in tokens]
        while i < len(tokens):
            for n in range(min(self.longest, len(tokens) - i), 1, -1):
                english = self.phrases.get(tuple(folded[i : i + n]))
                if english is not None:
                    out.append(english)
                    i += n
                    break
            else:
                english = self.lookup(tokens[i])
                out.append(tokens[i] if english is None else english)
                i += 1
        return " ".join(part for part in out if part)


@cache
def glossary() -> Glossary:
    data = json.loads(GLOSSARY_FILE.read_text())
    words = {k.translate(_APOSTROPHES): v for k, v in data["words"].items()}
    folded: dict[str, str] = {}
    for word, english in sorted(words.items(), key=lambda item: drop_accents(item[0]) != item[0]):
        folded.setdefault(drop_accents(word), english)
    bare = Glossary(words, folded, {}, 1, frozenset(), frozenset())
    phrases = {
        tuple(map(drop_accents, bare.split(key.casefold()))): english
        for key, english in data["phrases"].items()
    }
    return Glossary(
        words=words,
        folded=folded,
        phrases=phrases,
        longest=max(map(len, phrases), default=1),
        french=frozenset(map(drop_accents, data["markers"]["french"])),
        english=frozenset(data["markers"]["english"]),
    )


def _tokens(text: str) -> list[str]:
    return glossary().split(unicodedata.normalize("NFKC", text).casefold())


def reads_as_french(text: str) -> bool:
    return glossary().reads_as_french(_tokens(text))


def read_in_english(text: str) -> str:
    """`text` glossed into English when it reads as French; otherwise `text` unchanged."""
    tokens = _tokens(text)
    words = glossary()
    return words.gloss(tokens) if words.reads_as_french(tokens) else text
