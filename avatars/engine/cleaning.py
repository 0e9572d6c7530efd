"""Reply clean-up while it streams: no markup, no echo of the instructions, no invented next
turn, a bounded length, and an end at a sentence boundary.

`ReplyCleaner` sits between the engine's raw text and the player. It holds back the last few
words of the stream (about half a second of tokens at CPU speed), because that is where an echo
or a runaway sentence is recognised, and text already sent cannot be taken back. Its contract:
the concatenation of everything `feed` and `finish` return is exactly the reply to store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ECHO_WORDS = 6  # this many consecutive words copied from the instructions make an echo
HOLD_WORDS = ECHO_WORDS + 1  # words held back: the whole of a possible echo is still unsent
SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s|$)""")
ENDS_SENTENCE = re.compile(r"""[.!?…]+["'”’)\]]*$""")
# Chat markup a small model may spell out as plain text, or a turn it invents for the player.
TURN_MARKER = re.compile(
    r"<\|[^|>]{0,20}\|?>?|\n\s*(?:user|assistant|system|player|visitor|human)\s*[:\n]",
    re.IGNORECASE,
)
WORD = re.compile(r"\S+")
ELLIPSIS = "…"


def _norm(word: str) -> str:
    return "".join(ch for ch in word.casefold() if ch.isalnum())


SECOND_PERSON = frozenset({"you", "your", "yours", "yourself"})


def echo_grams(texts: Iterable[str], addressed_only: bool = True) -> frozenset[tuple[str, ...]]:
    """Runs of ECHO_WORDS normalised words of the instruction texts. With `addressed_only`,
    only runs that speak to the model ("you are...", "your cat"): a character restating its
    persona in the first person ("I am the keeper of a lighthouse on a windy cliff") is in
    character, reciting the instructions ("You are Old Marta, the keeper...") is not."""
    grams = set()
    for text in texts:
        words = [w for w in (_norm(m.group()) for m in WORD.finditer(text)) if w]
        for i in range(len(words) - ECHO_WORDS + 1):
            gram = tuple(words[i : i + ECHO_WORDS])
            if not addressed_only or SECOND_PERSON.intersection(gram):
                grams.add(gram)
    return frozenset(grams)


class ReplyCleaner:
    """Streaming clean-up of one reply (see module doc).

    `echo_sources`: texts the reply must not recite where they address the model (persona,
    hunt context, summary; not the greeting or a reveal line, which the avatar is meant to
    say); `instructions`: texts it must not recite at all (the answering rules). `names`: speaker
    labels to drop at the start ("Old Marta: ..."). After `soft_chars` the reply ends at the
    next sentence end; `max_chars` is the hard cap. `stop` turns true once the cleaner needs no
    more text: the caller should then cancel generation.
    """

    def __init__(
        self,
        echo_sources: Iterable[str] = (),
        instructions: Iterable[str] = (),
        names: Iterable[str] = (),
        soft_chars: int = 360,
        max_chars: int = 600,
    ):
        self.grams = echo_grams(echo_sources) | echo_grams(instructions, addressed_only=False)
        self.labels = [n.strip().casefold() for n in names if n.strip()]
        self.soft_chars = soft_chars
        self.max_chars = max_chars
        self.raw = ""
        self.sent = 0  # raw[:sent] has been returned
        self.stop = False
        self.ended_cleanly = False  # the text was cut at a sentence end by the cleaner
        self.cut = False  # the text was cut (echo, invented turn, length)
        self._started = False

    def feed(self, chunk: str) -> str:
        if self.stop or not chunk:
            return ""
        self.raw += chunk
        if not self._started and not self._strip_opening():
            return ""
        self._check()
        if self.stop:
            return ""
        return self._release(self._hold_boundary())

    def finish(self, complete: bool = False) -> str:
        """The rest of the reply once the stream ended. `complete`: the model ended its turn by
        itself (and the cleaner cut nothing), so the text stands as written; otherwise it is
        cut back to its last sentence end not yet sent, or marked with an ellipsis."""
        self.stop = True
        if not self._started:
            self._strip_opening(final=True)
        text = self.raw
        tail = text[self.sent :].rstrip()
        full = text[: self.sent] + tail
        whole = (complete and not self.cut) or self.ended_cleanly
        if not whole and full.strip() and not ENDS_SENTENCE.search(full):
            ends = [m.end() for m in SENTENCE_END.finditer(full) if m.end() > self.sent]
            tail = full[self.sent : ends[-1]] if ends else tail + ELLIPSIS
        if not (text[: self.sent] + tail).strip():
            tail = ELLIPSIS
        self.sent = len(text)
        return tail

    # Internals -----------------------------------------------------------------------------

    def _strip_opening(self, final: bool = False) -> bool:
        """Drops leading whitespace and a speaker label; False while too little text has
        arrived to decide."""
        stripped = self.raw.lstrip()
        lowered = stripped.casefold()
        for label in self.labels:
            if lowered.startswith(label + ":"):
                stripped = stripped[len(label) + 1 :].lstrip()
                break
            if label.startswith(lowered) and not final:
                return False  # could still become "Name:"
        if not stripped and not final:
            return False
        self.raw = stripped
        self._started = True
        return True

    def _check(self) -> None:
        """Finds where the reply must end: invented turns and markup, recited instructions,
        the soft and hard length limits."""
        cut = None
        marker = TURN_MARKER.search(self.raw, max(0, self.sent - 20))
        if marker:
            cut = marker.start()
        if self.grams:
            words = list(WORD.finditer(self.raw))
            normed = [_norm(m.group()) for m in words]
            for i in range(len(words) - ECHO_WORDS + 1):
                if tuple(normed[i : i + ECHO_WORDS]) in self.grams:
                    cut = words[i].start() if cut is None else min(cut, words[i].start())
                    break
        if cut is not None:
            self.raw = self.raw[: max(cut, self.sent)]
            self.stop = self.cut = True
            return
        if len(self.raw) > self.soft_chars:
            for match in SENTENCE_END.finditer(self.raw, max(self.sent, self.soft_chars - 1)):
                # The lookahead needs the character after the punctuation to be known.
                if match.end() < len(self.raw):
                    self.raw = self.raw[: match.end()]
                    self.stop = self.ended_cleanly = True
                    return
        if len(self.raw) >= self.max_chars:
            self.raw = self.raw[: self.max_chars]
            self.stop = self.cut = True

    def _hold_boundary(self) -> int:
        """End of the last word that has HOLD_WORDS words after it."""
        words = list(WORD.finditer(self.raw))
        if len(words) <= HOLD_WORDS:
            return self.sent
        return words[-HOLD_WORDS - 1].end()

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out, self.sent = self.raw[self.sent : upto], upto
        return out


# Fixed markers of a reply out of character: the model speaking as what it is (an AI, a
# language model, an assistant) instead of as the character. Certification counts them on its
# probe questions; fine-tuning data takes stored replies holding them as examples of what not
# to say (avatars/certification.py, avatars/tuning.py).
OUT_OF_CHARACTER = re.compile(
    r"\bas an? (?:ai|artificial|language model|assistant|virtual|digital|chatbot|bot)\b"
    r"|\blanguage model\b|\bartificial intelligence\b|\bchat ?gpt\b|\bopen ?ai\b|\bllm\b"
    r"|\bi(?:'m| am) (?:just |only |merely )?an? (?:ai|assistant|chatbot|bot|computer program"
    r"|program|machine)\b"
    r"|\bi(?: do not|'m not able to| cannot|can't| don't) (?:have (?:personal|feelings|a body"
    r"|access to (?:the internet|real-time))|browse)"
    r"|\b(?:trained|developed|created) by (?:openai|hugging ?face|google|meta|anthropic)\b"
    r"|\bhugging ?face\b|\bsmollm\b|```",
    re.IGNORECASE,
)


def out_of_character(reply: str) -> bool:
    """Whether `reply` holds one of the fixed out-of-character markers."""
    return bool(OUT_OF_CHARACTER.search(reply))


def looks_cut(reply: str, min_chars: int = 200) -> bool:
    """A long reply that stops mid-sentence: the token limit or the time limit cut it."""
    reply = reply.strip()
    return len(reply) >= min_chars and not ENDS_SENTENCE.search(reply)
