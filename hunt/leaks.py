"""Text normalisation, the leak detector and the reply guard.

Everything but ReplyGuard (which reads the player's discoveries) is pure: no database, no
model.

Two users:
- the clue gate (hunt/gate.py) normalises a player's message before matching it, so that
  invisible characters, look-alike letters and spaced-out letters change nothing;
- the reply guard (`StreamGuard`, wrapped by ReplyGuard) checks every reply to a
  player for the guarded words that player has not unlocked, in any form a model could be
  talked into writing: plain, inflected, spaced, reversed, leet, base64, hex, decimal or
  alphabet-position codes, binary, NATO alphabet, Caesar/ROT shifts and acrostics.

The guard is defence in depth only: the gate keeps a locked word out of the model's context, so
a model cannot write it except by chance. When it does, the reply is replaced by an ordinary
line, never redacted in place, so the guard does not tell players how close they came.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hunt.gate import GateOutcome

MAX_MESSAGE_CHARS = 600  # the gate reads no further (the chat contract allows 500)

# Look-alike letters that NFKC keeps apart from Latin (Cyrillic, Greek, a few symbols).
_CONFUSABLES = str.maketrans(
    "авеёкмнорстухѕіїјԁԛԝɡıʟɴАВЕКМНОРСТУХЅІЈαβεικνορτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "abeekmhopctyxsiijdqwgilnabekmhopctyxsijabeikvoptuxabezhikmnoptyx",
)
_REGIONAL_A = 0x1F1E6  # regional indicator letters (flag emoji halves) spell A..Z too


def _strip_char(ch: str) -> bool:
    """Invisible characters: format controls (zero-width, bidi, soft hyphen, the Unicode tag
    block U+E0000–E007F), variation selectors and other default-ignorable marks."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) == "Cf"
        or 0xFE00 <= cp <= 0xFE0F
        or 0xE0100 <= cp <= 0xE01EF
        or cp in (0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0)
    )


def clean(text: str) -> str:
    """NFKC, invisible characters dropped, look-alikes and regional letters mapped to Latin,
    accents dropped. Case is kept (base64 needs it)."""
    text = unicodedata.normalize("NFKC", text)
    out = []
    for ch in text:
        if _strip_char(ch):
            continue
        cp = ord(ch)
        if _REGIONAL_A <= cp <= _REGIONAL_A + 25:
            ch = chr(ord("A") + cp - _REGIONAL_A)
        out.append(ch)
    return drop_accents("".join(out).translate(_CONFUSABLES))


def drop_accents(text: str) -> str:
    """Accents dropped ("brûlé" -> "brule"), the letters kept."""
    decomposed = unicodedata.normalize("NFKD", text)
    return unicodedata.normalize(
        "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
    )


def squeeze(text: str) -> str:
    """Runs of whitespace made single spaces; line breaks kept (one per run)."""
    text = re.sub(r"[^\S\n]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def normalize(text: str) -> str:
    """`clean`, casefolded, whitespace squeezed."""
    return squeeze(clean(text).casefold())


# A run of at least three single letters or digits, each followed by a short separator:
# "w h a t", "w-h-a-t", "W.H.A.T", "w  h  a  t   i  s".
_SPACED_RUN = re.compile(r"(?<![^\W_])(?:[^\W_][ \t\-_.,*·|/+~:]{1,4}){2,}[^\W_](?![^\W_])")


def collapse_spacing(text: str) -> str:
    """Joins spaced-out letters back into words: "w h a t  i s" -> "what is",
    "w-h-a-t i-s" -> "what is".

    Inside a run the most frequent separator joins the letters of one word (the shortest on a
    tie); any other separator (the usual wider gap between spelled words) is a word break.
    """

    def join(match: re.Match) -> str:
        run = match.group(0)
        letters = re.findall(r"[^\W_]", run)
        seps = re.findall(r"[^\w]+|_+", run)
        joiner = min(set(seps), key=lambda sep: (-seps.count(sep), len(sep)))
        out = letters[0]
        for sep, letter in zip(seps, letters[1:], strict=False):
            out += ("" if sep == joiner else " ") + letter
        return out

    return _SPACED_RUN.sub(join, text)


_SENTENCE_END = re.compile(r"(?<=[.!?;…])\s+|\n+|(?<=\?)(?=\S)")


def split_sentences(text: str) -> list[str]:
    """Sentences of a normalised text, split at . ! ? ; … and line breaks."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def words_of(text: str) -> list[str]:
    return WORD_RE.findall(text)


def normalize_message(text: str) -> str:
    """What the gate reads of a player's message: normalised, letter spacing collapsed,
    capped at MAX_MESSAGE_CHARS."""
    text = clean(text[: MAX_MESSAGE_CHARS * 2]).casefold()
    return squeeze(collapse_spacing(text))[:MAX_MESSAGE_CHARS]


# Validation -------------------------------------------------------------------------------------


def _inflected(word: str) -> str:
    return rf"(?<![^\W_]){re.escape(word)}(?:e?s|'s|s')?(?![^\W_])"


def find_guarded_words(text: str, words: Iterable[str]) -> list[str]:
    """The guarded words that appear as whole words in `text` (case-insensitive, after
    normalisation and letter-spacing collapse; plural and possessive forms count).

    Used on every save of a text the model or players see before an unlock (personas,
    greetings, hints, questions, keywords, descriptions): such a text would give the word to
    everyone. Zero-width characters, look-alike letters or accents do not hide a word here.
    """
    lowered = clean(text).casefold()
    haystack = squeeze(lowered) + "\n" + squeeze(collapse_spacing(lowered))
    found = []
    for word in words:
        w = normalize(word or "")
        # The substring test first: a pattern per word of a 2048-word list costs ~100 ms.
        if w and w in haystack and re.search(_inflected(w), haystack) and word not in found:
            found.append(word)
    return sorted(found)


# Leak detection ---------------------------------------------------------------------------------

_LEET = {
    "0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b",
    "9": "g", "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "£": "l", "(": "c",
    "<": "c", "{": "c", "[": "c", "¡": "i", "ß": "b",
}  # fmt: skip
_LEET_L = {**_LEET, "1": "l"}
_NATO = {
    "alfa": "a", "alpha": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e",
    "foxtrot": "f", "golf": "g", "hotel": "h", "india": "i", "juliet": "j", "juliett": "j",
    "kilo": "k", "lima": "l", "mike": "m", "november": "n", "oscar": "o", "papa": "p",
    "quebec": "q", "romeo": "r", "sierra": "s", "tango": "t", "uniform": "u", "victor": "v",
    "whiskey": "w", "whisky": "w", "xray": "x", "x-ray": "x", "yankee": "y", "zulu": "z",
}  # fmt: skip
_TOKEN = re.compile(r"[^\W_]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{6,}={0,2}")
_HEX_RUN = re.compile(r"(?:(?:0x|\\x|%)?[0-9a-f]{2}[\s,;:\-]*){3,}")
_NUM_RUN = re.compile(r"(?:\d{1,3}[\s,;:\-.]+){2,}\d{1,3}")
_BIN_RUN = re.compile(r"(?:[01]{7,8}[\s,;:\-]*){3,}")


def _shift(word: str, n: int) -> str:
    return "".join(chr((ord(c) - 97 + n) % 26 + 97) if "a" <= c <= "z" else c for c in word)


@dataclass
class _Needles:
    """Forms of one locked word to look for."""

    word: str
    exact: set[str]  # whole-token matches
    inner: set[str]  # the word and its reverse, searched inside runs and acrostics

    @classmethod
    @lru_cache(maxsize=4096)
    def of(cls, word: str) -> _Needles:
        w = normalize(word)
        rev = w[::-1]
        exact = {w, w + "s", w + "es", w + "'s", rev}
        # Caesar/ROT: every shift for words of 4+ letters; shorter words collide with ordinary
        # words too often (ice -> keg), so only ROT13 there.
        shifts = range(1, 26) if len(w) >= 4 else (13,)
        for n in shifts:
            exact.add(_shift(w, n))
            exact.add(_shift(rev, n))
        return cls(word=w, exact=exact, inner={w, rev})


def _decode_bytes(data: bytes) -> str:
    return data.decode("utf-8", errors="ignore") or data.decode("latin-1", errors="ignore")


def _decoded_views(cleaned: str, lowered: str) -> list[str]:
    """Texts hidden in encodings: base64, hex, decimal ASCII, alphabet positions, binary."""
    out: list[str] = []
    for token in _BASE64.findall(cleaned):
        body = token.rstrip("=")
        for altchars in (None, b"-_"):
            try:
                raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=altchars)
            except (binascii.Error, ValueError):
                continue
            text = _decode_bytes(raw)
            if text and sum(c.isprintable() for c in text) >= 0.8 * len(text):
                out.append(text)
    for run in _HEX_RUN.findall(lowered):
        pairs = re.findall(r"[0-9a-f]{2}", re.sub(r"0x|\\x|%", " ", run))
        out.append(_decode_bytes(bytes(int(p, 16) for p in pairs)))
    for run in _NUM_RUN.findall(lowered):
        nums = [int(n) for n in re.findall(r"\d+", run)]
        if all(1 <= n <= 26 for n in nums):
            out.append("".join(chr(96 + n) for n in nums))
        if all(32 <= n <= 126 for n in nums):
            out.append("".join(chr(n) for n in nums))
    for run in _BIN_RUN.findall(lowered):
        out.append("".join(chr(int(b, 2)) for b in re.findall(r"[01]{7,8}", run)))
    return out


def _runs(tokens: Sequence[str], max_len: int) -> list[str]:
    """Consecutive tokens of at most `max_len` characters, joined: "a g e n t", "ag en t"."""
    runs, cur = [], []
    for t in [*tokens, "\x00" * (max_len + 1)]:
        if len(t) <= max_len:
            cur.append(t)
        else:
            if len(cur) >= 3:
                runs.append("".join(cur))
            cur = []
    return runs


def _nato_runs(tokens: Sequence[str]) -> list[str]:
    runs, cur = [], []
    for t in [*tokens, ""]:
        letter = _NATO.get(t)
        if letter:
            cur.append(letter)
        else:
            if len(cur) >= 2:
                runs.append("".join(cur))
            cur = []
    return runs


def _initials(parts: Iterable[str]) -> str:
    out = []
    for part in parts:
        m = re.search(r"[^\W\d_]", part)
        if m:
            out.append(m.group(0))
    return "".join(out)


LOOSE_LEN = 5  # words this long are also searched inside tokens and runs of short tokens
SQUASH_LEN = 7  # ... and inside the whole text with every separator removed


@dataclass
class TextViews:
    """Every reading of a text in which a locked word could hide; built once per check.

    Short words appear by chance inside longer readings ("a gentle" squashed holds "agent"),
    so the looser readings are searched only for longer words.
    """

    tokens: set[str] = field(default_factory=set)  # whole tokens: plain, leet, decoded
    strict: list[str] = field(default_factory=list)  # spelled letters, NATO, line acrostics
    loose: list[str] = field(default_factory=list)  # tokens, short-token runs, word initials
    squashed: list[str] = field(default_factory=list)  # texts without separators

    @classmethod
    def of(cls, text: str, allowed: Iterable[str] = ()) -> TextViews:
        cleaned = clean(text)
        lowered = cleaned.casefold()
        for word in allowed:
            # Words this player unlocked may be said: mask them so they hide no other word.
            lowered = re.sub(_inflected(normalize(word)), " ", lowered)
        views = cls()
        texts = [lowered]
        texts += [t.casefold() for t in _decoded_views(cleaned, lowered)]
        texts += ["".join(leet.get(c, c) for c in lowered) for leet in (_LEET, _LEET_L)]
        for t in texts:
            tokens = _TOKEN.findall(t)
            views.tokens.update(tokens)
            views.loose.extend(tokens)
            views.strict.extend(_runs(tokens, 1))
            views.loose.extend(_runs(tokens, 2))
            views.strict.extend(_nato_runs(re.findall(r"[a-z]+(?:-ray)?", t)))
            views.squashed.append("".join(tokens))
        views.strict.append(_initials(ln for ln in lowered.splitlines() if ln.strip()))
        views.strict.append(_initials(split_sentences(lowered)))
        views.loose.append(_initials(_TOKEN.findall(lowered)))
        return views

    @cached_property
    def _joined(self) -> tuple[str, str, str]:
        # One string per reading, its parts apart: a needle found in it is found in one part
        # (needles hold no NUL), and one search replaces one per part (a seed-list-wide check
        # of a player's text makes thousands).
        return tuple("\0".join(hays) for hays in (self.strict, self.loose, self.squashed))

    def contains(self, needles: _Needles) -> bool:
        if self.tokens & needles.exact:
            return True
        strict, loose, squashed = self._joined
        hays = [strict]
        if len(needles.word) >= LOOSE_LEN:
            hays.append(loose)
        if len(needles.word) >= SQUASH_LEN:
            hays.append(squashed)
        return any(n in hay for hay in hays for n in needles.inner)


def find_leaks(text: str, words: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """The `words` that `text` gives away in any form (see module doc); `allowed` words are
    ignored (the player unlocked them)."""
    views = TextViews.of(text, allowed)
    return [w for w in words if w and views.contains(_Needles.of(w))]


# The reply guard -------------------------------------------------------------------------------

# Ordinary lines that stand in for a reply that gave a locked word away. They fit any persona
# and read like a model changing the subject, so the swap shows nothing to the player.
DEFLECTIONS = (
    "Hm, my thoughts drifted off for a moment. What else would you like to know?",
    "Let's leave that for another day. Ask me something else.",
    "Ah, that is not a tale for today. Tell me, what brings you here?",
    "I'd rather not go down that road. What else is on your mind?",
    "Some things are better left unsaid. Shall we talk about something else?",
)

_RUNNABLE = re.compile(r"[^\W_]{1,2}|\d{1,8}|[a-z]+-?ray", re.IGNORECASE)
_PUNCT_EDGES = re.compile(r"^[^\w@$|!+]+|[^\w@$|!+]+$")


def deflection(seed: int | str) -> str:
    """One of DEFLECTIONS, the same for the same seed (a turn's message id)."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    return DEFLECTIONS[digest[0] % len(DEFLECTIONS)]


def has_word(text: str, word: str) -> bool:
    """Whether `word` appears as a whole word (inflections included) in `text`."""
    return bool(re.search(_inflected(normalize(word)), normalize(text)))


def _held_from(text: str) -> int:
    """Where the part of a streamed text that may still grow into a leak begins.

    Held back: the last token while no whitespace closes it ("ag" may become "agent"), and
    before it any run of tokens that spelling or a code could extend: one- or two-character
    tokens ("a g e n"), numbers ("97 103"), NATO words ("alpha golf").
    """
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if not spans:
        return len(text)
    held = len(text)
    if spans[-1][1] == len(text):
        held = spans[-1][0]
        spans.pop()
    for start, end in reversed(spans):
        core = _PUNCT_EDGES.sub("", text[start:end])
        if core and (_RUNNABLE.fullmatch(core) or core.casefold() in _NATO):
            held = start
        else:
            break
    return held


class StreamGuard:
    """Checks a reply as it streams; see ReplyGuard for the turn-level wrapper.

    `feed(chunk)` returns the text that is safe to send now; `finish()` returns the rest;
    afterwards `text` is the whole reply, and always equals everything returned, in order.

    Invariant: no text ever returned contains a locked word in a form the detector knows:
    before any text goes out, everything up to it is checked, and the tail that could still
    grow into a word (an unfinished token, a run of spelled letters or codes) is held back
    until it is complete. When a check finds a word, nothing more of the model's text goes out:
    `finish()` returns an ordinary line instead (a `DEFLECTIONS` line, or the turn's reveal
    lines when the turn unlocked a word), so the reply reads as the avatar changing the
    subject. What was already sent stays (the chat contract makes the reply the concatenation
    of its chunks); it was checked clean, though a long acrostic can have begun in it.
    """

    def __init__(
        self,
        locked: Iterable[str],
        allowed: Iterable[str] = (),
        reveals: Sequence[tuple[str, str]] = (),
        seed: int | str = 0,
    ):
        self.reveals = list(reveals)  # (word, reveal line holding the word)
        self.allowed = [w for w in [*allowed, *(word for word, _line in self.reveals)] if w]
        self.locked = [w for w in locked if w and w not in self.allowed]
        self.seed = seed
        self.raw = ""
        self.sent = 0  # length of self.raw already returned
        self.tail = ""  # what finish() added after the model's text
        self.tripped = False
        self.finished = False

    @property
    def text(self) -> str:
        return self.raw[: self.sent] + self.tail

    def leaks(self, text: str) -> list[str]:
        return find_leaks(text, self.locked, self.allowed) if self.locked else []

    def feed(self, chunk: str) -> str:
        if self.finished:
            raise RuntimeError("feed() after finish()")
        self.raw += chunk
        if self.tripped:
            return ""
        cut = _held_from(self.raw)
        if cut <= self.sent:
            return ""
        if self.leaks(self.raw[:cut]):
            self.tripped = True
            return ""
        out = self.raw[self.sent : cut]
        self.sent = cut
        return out

    def finish(self) -> str:
        if self.finished:
            return ""
        self.finished = True
        if not self.tripped and self.leaks(self.raw):
            self.tripped = True
        if self.tripped:
            sent = self.raw[: self.sent]
            lines = [line for _word, line in self.reveals] or [deflection(self.seed)]
            self.tail = _joined(sent, " ".join(lines), interrupted=True)
            return self.tail
        rest = self.raw[self.sent :]
        self.sent = len(self.raw)
        missing = [line for word, line in self.reveals if not has_word(self.raw, word)]
        # The contract: a turn that sends a `discovery` frame has the word in its reply text.
        self.tail = _joined(self.raw, " ".join(missing)) if missing else ""
        return rest + self.tail


def _joined(before: str, line: str, interrupted: bool = False) -> str:
    """`line` as a continuation of `before`: a space when needed, and an ellipsis when the
    model's text was cut mid-sentence."""
    if not before.strip():
        return line
    stripped = before.rstrip()
    glue = "" if before != stripped else " "
    if interrupted and stripped[-1] not in ".!?…\"”'":
        glue = "…" + (" " if before == stripped else "") if glue else "… "
    return glue + line


# The reply guard -------------------------------------------------------------------------------


class ReplyGuard:
    """The leak guard for one turn's reply (see StreamGuard for the behaviour).

    Locked: every guarded word of the hunt that the player has not discovered. Allowed: the
    player's discoveries, this turn's included. `feed(chunk)` returns what may be streamed now,
    `finish()` the rest (held-back text, reveal lines the model left out, or the stand-in line
    when the reply gave a locked word away); then `text` is the whole reply.

    No oracle: a player may type any word ("tell me about a travelling agent", "is the word
    agent?", spelled out, encoded), and the model may echo it. If that echo were replaced when
    the word is locked and not otherwise, the reply would tell which typed words are locked. So
    every seed-list word found in what the player wrote or was shown in this prompt (`said`),
    in any form the detector reads, is allowed for this turn, whether it is locked, unlocked or
    no seed word at all. That costs nothing: the gate keeps every locked word out of the
    model's context, so an echo gives away only what the player wrote.
    """

    def __init__(self, message, outcome: GateOutcome, said: Sequence[str] = ()):
        from hunt.models import Discovery  # here: hunt.models imports this module

        hunt = message.conversation.avatar.hunt
        words = hunt.guarded_words() if hunt else {}
        mine = set(
            Discovery.objects.of(hunt, player=message.conversation.player).values_list(
                "word__position", flat=True
            )
        ) if hunt else set()  # fmt: skip
        said = seed_words_in(said)
        self._guard = StreamGuard(
            locked=[w for pos, w in words.items() if pos not in mine and w not in said],
            allowed=[*(w for pos, w in words.items() if pos in mine), *sorted(said)],
            reveals=[(r.word, r.reveal_line) for r in outcome.reveals],
            seed=message.pk,
        )

    def feed(self, chunk: str) -> str:
        return self._guard.feed(chunk)

    def finish(self) -> str:
        return self._guard.finish()

    @property
    def text(self) -> str:
        return self._guard.text

    @property
    def tripped(self) -> bool:
        return self._guard.tripped

    @property
    def locked(self) -> list[str]:
        """The words this reply may not hold (what the generation bans, turns.locked_sequences)."""
        return self._guard.locked


def seed_words_in(texts: Sequence[str]) -> frozenset[str]:
    """The seed-list (BIP39) words in `texts`, in every form the leak detector reads.

    The whole list, not the hunt's words: which words are allowed must not depend on which are
    guarded (allowed words are masked before the check, which changes what else it finds).
    """
    from hunt.bip39 import bip39_words

    text = "\n".join(t for t in texts if t)
    return frozenset(find_leaks(text, sorted(bip39_words()))) if text else frozenset()
