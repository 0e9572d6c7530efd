"""The rolling summary: what older turns leave behind once they no longer fit the prompt.

Extractive and deterministic: facts the visitor stated about themselves ("my name is…", "I'm
from…") are pinned, and each folded exchange becomes one line quoting the first sentence of the
question and of the answer. The summary is capped at SUMMARY_MAX_TOKENS; past that, the oldest
exchange lines go first. Measured against asking the model for a summary: this costs well under
a millisecond per fold, a model-made summary costs a full prefill and decode (seconds on CPU) and
a 135M model's summaries drop the facts that matter.

Folding has hysteresis: nothing happens while the stored turns fit the prompt; when they no
longer fit, the oldest are folded until the rest fill at most FOLD_TARGET of the room. The prompt
then stays the same prefix for a few turns (the engine reuses its key/values) while its size
stays within a narrow band, whatever the length of the conversation.

Guarded words: a summary is built only from stored messages of its own conversation. Avatar
messages are replies that passed the gate's guard for this player, and player messages are the
player's own words, so a summary never holds a guarded word this player has not unlocked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from avatars.engine.prompts import (
    MESSAGE_RESERVE,
    SUMMARY_MAX_TOKENS,
    PromptParts,
    Turn,
    build_prompt,
    count_tokens,
)

FOLD_TARGET = 0.7
QUOTE_WORDS = 16
MAX_FACTS = 3

FACT = re.compile(
    r"\b(?:my name is|call me|i am called|i'm called|i come from|i'm from|i am from|"
    r"i live in|i'm looking for|i am looking for|i'm searching for|i am searching for)\b[^.!?\n]*",
    re.IGNORECASE,
)
FIRST_SENTENCE = re.compile(r"^.*?[.!?…](?=\s|$)", re.DOTALL)


def _quote(text: str) -> str:
    text = " ".join(text.split())
    match = FIRST_SENTENCE.match(text)
    sentence = match.group() if match else text
    words = sentence.split()
    if len(words) > QUOTE_WORDS:
        sentence = " ".join(words[:QUOTE_WORDS]) + "…"
    return sentence


def _split(summary: str) -> tuple[list[str], list[str]]:
    facts, lines = [], []
    for line in summary.splitlines():
        if line.startswith("Visitor: "):
            facts.append(line)
        elif line.strip():
            lines.append(line)
    return facts, lines


def fold(summary: str, turns: Sequence[Turn], tokenizer, max_tokens: int = SUMMARY_MAX_TOKENS):
    """The summary after adding `turns` (oldest first) to it."""
    facts, lines = _split(summary)
    pending_question: str | None = None
    for turn in turns:
        if turn.role == "player":
            for match in FACT.finditer(turn.text):
                fact = "Visitor: " + " ".join(match.group().split()).rstrip(",;:")
                if fact.casefold() not in {f.casefold() for f in facts}:
                    facts.append(fact)
            if pending_question is not None:
                lines.append(f"- They said: {pending_question}")
            pending_question = _quote(turn.text)
        else:
            answer = _quote(turn.text)
            if pending_question is not None:
                lines.append(f"- They said: {pending_question} You answered: {answer}")
            else:
                lines.append(f"- You said: {answer}")
            pending_question = None
    if pending_question is not None:
        lines.append(f"- They said: {pending_question}")
    facts = facts[-MAX_FACTS:]
    while lines and count_tokens(tokenizer, "\n".join(facts + lines)) > max_tokens:
        lines.pop(0)
    while facts and count_tokens(tokenizer, "\n".join(facts + lines)) > max_tokens:
        facts.pop(0)
    return "\n".join(facts + lines)


def plan_fold(tokenizer, parts: PromptParts, budget: int) -> tuple[str, int]:
    """(new summary, how many of the oldest `parts.turns` it now covers); (summary, 0) while
    every turn still fits. `parts.message` is ignored: the room is what a message of
    MESSAGE_RESERVE tokens leaves."""
    probe = replace(parts, message="")
    prompt = build_prompt(tokenizer, probe, budget)
    if not prompt.dropped:
        return parts.summary, 0
    turns = list(parts.turns)
    folded = len(prompt.dropped)
    # Fold until the remaining turns take at most FOLD_TARGET of the room they had.
    target = FOLD_TARGET * sum(count_tokens(tokenizer, t.text) for t in turns[folded:])
    while folded < len(turns):
        rest = turns[folded:]
        too_big = sum(count_tokens(tokenizer, t.text) for t in rest) > target
        # Start the kept window on a player turn, so no answer is left without its question.
        if too_big or rest[0].role != "player":
            folded += 1
            continue
        summary = fold(parts.summary, turns[:folded], tokenizer)
        # The longer summary takes room too: fold more if the rest no longer fits beside it.
        if not build_prompt(
            tokenizer, replace(probe, summary=summary, turns=tuple(rest)), budget
        ).dropped:
            return summary, folded
        folded += 1
    return fold(parts.summary, turns, tokenizer), len(turns)


__all__ = ["FOLD_TARGET", "MESSAGE_RESERVE", "fold", "plan_fold"]
