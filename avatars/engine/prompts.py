"""Prompts: an avatar's persona, what it may say this turn, and as much recent conversation as
fits a fixed token budget (`AVATAR_PROMPT_BUDGET`), through the model's chat template.

Layout (a system message, the turns, this turn's note, the new message):

    system: persona (always first, never cut) · greeting · example dialogues · how to answer
            · public hunt context · summary of older turns
    user/assistant: the most recent stored turns that fit, oldest first
    system: this turn's reveal and hint instructions (from the gate), only when it has some
    user: the player's new message

This turn's instructions come after the history so that everything before them is the same
prompt prefix from one turn to the next, with or without a hint: the engine reuses its
key/values (and conversation affinity sends the turn to the worker that holds them). A chat
template that refuses or drops a system message after the first turns gets them at the end of
the first system message instead (`_layout`).

Guarded words: a prompt holds one only when the gate supplies a reveal for this player in this
turn (`PromptParts.reveals`). Everything else comes from public texts (persona, greeting, hunt
description: checked for guarded words on every save) and from stored messages of this
conversation, whose avatar replies already passed the gate's guard (see summary.py).

The budget keeps the cost of a turn flat however long the conversation runs; older turns live on
in the rolling summary. It holds for any message: the chat socket refuses one over
CHAT_MAX_TOKENS (counted by `message_tokens`, as the model counts), and `build_prompt` drops
history, then cuts the message's end, so the engine never sees more than the budget. Budget
reservations below make `check_persona_fits` refuse, when the avatar is saved, a persona that
would leave no room for the conversation itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ValidationError

# Room kept free in every prompt, in tokens. 500 characters of English (CHAT_MAX_CHARS) are about
# 125 tokens; a longer message (CHAT_MAX_TOKENS allows MESSAGE_RESERVE + MIN_TURNS_ROOM) pushes
# out older turns.
MESSAGE_RESERVE = 128
SUMMARY_MAX_TOKENS = 96
INSTRUCTION_RESERVE = 64  # this turn's reveal and hint lines
MIN_TURNS_ROOM = 128  # at least a few recent exchanges
HUNT_CONTEXT_MAX_CHARS = 400
# Example dialogues in a prompt: whole exchanges, in the order written, up to this many
# characters (about 150 tokens) and within the room left (`fit_examples`). An avatar may have
# many more: all of them are fine-tuning data (avatars/tuning.py).
EXAMPLES_MAX_CHARS = 600
# An exchange starts at a <START> line (character cards) or after a blank line.
EXCHANGE_BREAK = re.compile(r"^\s*<START>\s*$|\n\s*\n", re.MULTILINE | re.IGNORECASE)
SPEAKER = re.compile(r"^\s*([^:\n]{1,40}):\s*(.*)$")
USER_NAMES = {"{{user}}", "user", "visitor", "player"}

STYLE = "Stay in character. Answer in one to three short sentences."
ROLES = {"player": "user", "avatar": "assistant"}


@dataclass(frozen=True)
class Turn:
    role: str  # "player" or "avatar"
    text: str


@dataclass(frozen=True)
class PromptParts:
    persona: str
    greeting: str = ""
    examples: str = ""  # the creator's example dialogues, as written
    hunt_context: str = ""
    summary: str = ""
    reveals: tuple[str, ...] = ()  # instruction lines with the word, for this turn only
    hint: str | None = None
    turns: tuple[Turn, ...] = ()  # stored turns not in the summary, oldest first
    message: str = ""  # the player's new message


@dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]
    system: str
    turns_used: int  # the most recent `turns_used` of PromptParts.turns are in the prompt
    dropped: tuple[Turn, ...] = field(default=())  # older turns that did not fit
    note: str = ""  # this turn's instructions, between the turns and the message

    @property
    def tokens(self) -> int:
        return len(self.ids)


def prompt_budget() -> int:
    return settings.AVATAR_PROMPT_BUDGET


@lru_cache(maxsize=4)
def _tokenizer_for(name: str):
    from avatars.engine.loading import load_tokenizer

    return load_tokenizer(name)


def default_tokenizer():
    """The configured model's tokenizer, without loading its weights."""
    return _tokenizer_for(settings.AVATAR_MODEL)


@lru_cache(maxsize=4)
def _counter_for(name: str):
    from tokenizers import Tokenizer

    from avatars.engine.loading import tokenizer_source

    return Tokenizer.from_file(str(tokenizer_source(name) / "tokenizer.json"))


def message_tokens(text: str) -> int:
    """Tokens of a player's message as the configured model counts them. The web tier counts
    every say, so this reads the model's `tokenizer.json` with the `tokenizers` library alone:
    transformers would bring torch into Daphne."""
    return len(_counter_for(settings.AVATAR_MODEL).encode(text, add_special_tokens=False).ids)


def hunt_context(title: str, description: str) -> str:
    """Public context every avatar of a hunt shares: its title and description, shortened."""
    description = " ".join(description.split())
    if len(description) > HUNT_CONTEXT_MAX_CHARS:
        description = description[:HUNT_CONTEXT_MAX_CHARS].rsplit(" ", 1)[0] + "…"
    if not title:
        return description
    return f'Visitors come to you during a treasure hunt called "{title}". {description}'.strip()


def reveal_instruction(reveal_line: str) -> str:
    """The gate's instruction for a word this player just unlocked (the line holds the word)."""
    return f'In this reply, say this to the visitor, in your own voice: "{reveal_line}"'


def hint_instruction(hint: str) -> str:
    """The gate's nudge after a near miss: the visitor is circling one of the avatar's
    secrets. The line is the clue's public hint (or its topic), never the word or the right
    question: the avatar steers in character toward asking plainly."""
    return (
        "The visitor is close to asking you something you know. Without giving any answer, "
        f"nudge them in your own voice to ask you plainly about it. What to hint at: {hint}"
    )


def example_exchanges(examples: str) -> list[str]:
    """The example dialogues as written, one string per exchange."""
    return [block.strip() for block in EXCHANGE_BREAK.split(examples) if block and block.strip()]


def exchange_turns(exchange: str) -> list[Turn]:
    """An exchange's lines as turns: `{{user}}:` (or User, Visitor, Player) lines are the
    visitor's, every other `Name:` line the character's; a line without a speaker continues
    the one before."""
    turns: list[Turn] = []
    for line in exchange.splitlines():
        match = SPEAKER.match(line)
        if match:
            role = "player" if match.group(1).strip().lower() in USER_NAMES else "avatar"
            turns.append(Turn(role, match.group(2).strip()))
        elif line.strip() and turns:
            turns[-1] = Turn(turns[-1].role, f"{turns[-1].text} {line.strip()}")
    return [t for t in turns if t.text]


def fit_examples(tokenizer, parts: PromptParts, budget: int | None = None) -> PromptParts:
    """`parts` with the whole example exchanges, in order, that fit: at most
    EXAMPLES_MAX_CHARS, and within the room the fixed texts may take beside the conversation
    (`persona_room`). Examples are the first thing a long persona gives up, so they never make
    an avatar too long to save; the same avatar always gets the same examples, which keeps its
    prompts' common start cacheable."""
    kept, size = [], 0
    for exchange in example_exchanges(parts.examples):
        if size + len(exchange) > EXAMPLES_MAX_CHARS:
            break
        kept.append(exchange)
        size += len(exchange)
    fixed = PromptParts(
        persona=parts.persona, greeting=parts.greeting, hunt_context=parts.hunt_context
    )
    room = persona_room(budget)
    while kept and _fixed_tokens(tokenizer, replace(fixed, examples="\n\n".join(kept))) > room:
        kept.pop()
    return replace(parts, examples="\n\n".join(kept))


def _fixed_tokens(tokenizer, parts: PromptParts) -> int:
    return len(_encode(tokenizer, _messages(system_text(parts), [], ""), True))


def system_text(parts: PromptParts) -> str:
    sections = [parts.persona.strip()]
    if parts.greeting.strip():
        sections.append(f'You greet visitors with: "{parts.greeting.strip()}"')
    if parts.examples.strip():
        sections.append(f"Examples of how you talk:\n{parts.examples.strip()}")
    sections.append(STYLE)
    if parts.hunt_context.strip():
        sections.append(parts.hunt_context.strip())
    if parts.summary.strip():
        sections.append(f"Earlier in this conversation:\n{parts.summary.strip()}")
    return "\n\n".join(sections)


def instruction_text(parts: PromptParts) -> str:
    """This turn's instructions from the gate: reveal lines, then the nudge's hint."""
    return "\n".join([*parts.reveals, *([hint_instruction(parts.hint)] if parts.hint else [])])


@lru_cache(maxsize=8)
def _takes_late_system(tokenizer) -> bool:
    """Whether the chat template renders a system message that follows the first turns.
    ChatML templates do; others raise (roles must alternate) or drop it."""
    probe = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "system", "content": "late-note-probe"},
        {"role": "user", "content": "u"},
    ]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # a template's own raise_exception(), whatever class the library gives it
        return False
    return "late-note-probe" in text


def _layout(tokenizer, parts: PromptParts) -> tuple[str, str]:
    """(system message, this turn's note) for `parts` and this model's chat template."""
    system, note = system_text(parts), instruction_text(parts)
    if note and not _takes_late_system(tokenizer):
        return f"{system}\n\n{note}", ""
    return system, note


def _messages(
    system: str, turns: Iterable[Turn], message: str | None, note: str = ""
) -> list[dict]:
    messages = [{"role": "system", "content": system}]
    messages += [{"role": ROLES[t.role], "content": t.text} for t in turns]
    if note:
        messages.append({"role": "system", "content": note})
    if message is not None:
        messages.append({"role": "user", "content": message})
    return messages


def _encode(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
    )
    return list(ids)


def count_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def build_prompt(tokenizer, parts: PromptParts, budget: int | None = None) -> Prompt:
    """The prompt for this turn: every fixed part plus the most recent turns that fit.

    Turns are chosen against the budget minus MESSAGE_RESERVE, not minus this message's actual
    length, so that the same stored turns give the same prompt prefix whatever the player types
    next; the engine then reuses that prefix's key/values (see `prefix_ids`). Only a message
    longer than the reserve pushes out more turns.

    The budget holds whatever the message: when no turn is left to drop, the message's end is
    cut (see `_cut_message`). Raises ValueError when the fixed parts alone exceed the budget,
    which `check_persona_fits` prevents for any budget the avatar was saved under.
    """
    budget = budget or prompt_budget()
    parts = fit_examples(tokenizer, parts, budget)
    system, note = _layout(tokenizer, parts)
    turns = list(parts.turns)
    base = len(_encode(tokenizer, _messages(system, [], parts.message, note), True))
    message_tokens = count_tokens(tokenizer, parts.message)
    room = budget - base - max(0, MESSAGE_RESERVE - message_tokens)
    # Cost of each turn inside the template: its text plus the role markers around it.
    overhead = len(_encode(tokenizer, _messages("", [Turn("player", "")], None), False)) - len(
        _encode(tokenizer, _messages("", [], None), False)
    )
    used = 0
    for turn in reversed(turns):
        cost = count_tokens(tokenizer, turn.text) + overhead
        if cost > room:
            break
        room -= cost
        used += 1
    while True:
        kept = turns[len(turns) - used :] if used else []
        ids = _encode(tokenizer, _messages(system, kept, parts.message, note), True)
        # Token merges across message boundaries can make the estimate a little short.
        if len(ids) <= budget or used == 0:
            break
        used -= 1
    if len(ids) > budget:
        ids = _cut_message(tokenizer, system, note, parts.message, budget)
    return Prompt(
        ids=tuple(ids),
        system=system,
        turns_used=used,
        dropped=tuple(turns[: len(turns) - used]),
        note=note,
    )


def _cut_message(tokenizer, system: str, note: str, message: str, budget: int) -> list[int]:
    """The prompt of `system`, `note` and the longest start of `message` within `budget`: the
    last resort for a message longer than the room left beside the fixed parts (a setting
    allowing more than fits, a persona saved under a larger budget). Each pass cuts at least
    the overshoot, so it ends; a cut through a character decodes as U+FFFD, which is
    harmless."""
    message_ids = tokenizer.encode(message, add_special_tokens=False)
    ids = _encode(tokenizer, _messages(system, [], message, note), True)
    while (over := len(ids) - budget) > 0:
        if not message_ids:
            raise ValueError(f"the prompt's fixed parts alone take {len(ids)} > {budget} tokens")
        message_ids = message_ids[: max(0, len(message_ids) - over)]
        ids = _encode(tokenizer, _messages(system, [], tokenizer.decode(message_ids), note), True)
    return ids


def prefix_ids(tokenizer, parts: PromptParts, prompt: Prompt) -> tuple[int, ...]:
    """The part of `prompt` that does not depend on the player's message: what the next turn
    will most likely start with, worth prefilling ahead of time (`Engine.warm`)."""
    kept = parts.turns[len(parts.turns) - prompt.turns_used :] if prompt.turns_used else ()
    return tuple(_encode(tokenizer, _messages(prompt.system, kept, None), False))


def persona_room(budget: int | None = None) -> int:
    """Tokens left for the fixed texts of an avatar (persona, greeting, hunt context) once every
    reservation of a turn is made."""
    budget = budget or prompt_budget()
    return budget - MESSAGE_RESERVE - SUMMARY_MAX_TOKENS - INSTRUCTION_RESERVE - MIN_TURNS_ROOM


def check_persona_fits(
    persona: str,
    greeting: str = "",
    context: str = "",
    tokenizer=None,
    budget: int | None = None,
    examples: str = "",
) -> None:
    """Refuses (ValidationError) a persona that leaves too little of the prompt budget for the
    conversation. Called when an avatar is saved (admin, hunt import, studio)."""
    used, room = persona_tokens(persona, greeting, context, tokenizer, budget, examples)
    if used > room:
        raise ValidationError(
            "The persona is too long: with the greeting, examples and hunt description it takes "
            "%(used)d tokens of the %(budget)d-token prompt budget, and at most %(room)d fit "
            "beside the conversation. Shorten it by about %(over)d words.",
            code="persona_too_long",
            params={
                "used": used,
                "budget": budget or prompt_budget(),
                "room": room,
                "over": max(1, int((used - room) * 0.75)),
            },
        )


def persona_tokens(
    persona: str,
    greeting: str = "",
    context: str = "",
    tokenizer=None,
    budget: int | None = None,
    examples: str = "",
) -> tuple[int, int]:
    """(tokens the avatar's fixed texts take in a prompt, tokens they may take): the studio's
    token meter and `check_persona_fits`."""
    tokenizer = tokenizer or default_tokenizer()
    parts = PromptParts(persona=persona, greeting=greeting, examples=examples, hunt_context=context)
    return _fixed_tokens(tokenizer, fit_examples(tokenizer, parts, budget)), persona_room(budget)


def turns_from(messages: Sequence) -> tuple[Turn, ...]:
    """Turns from stored Message rows (or anything with `role` and `text`), oldest first."""
    return tuple(Turn(role=m.role, text=m.text) for m in messages if m.text)
