"""Prompts within the token budget, persona first, and the rolling summary that keeps a long
conversation's prompt flat (with the default model's real tokenizer)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
from django.core.exceptions import ValidationError

from avatars.engine import prompts, summary
from avatars.engine.prompts import PromptParts, Turn
from tests.conftest import DEMO_HUNT

BUDGET = 768


@pytest.fixture(scope="module")
def tokenizer():
    from avatars.engine.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def marta() -> PromptParts:
    demo = json.loads(DEMO_HUNT.read_text())
    avatar = next(a for a in demo["avatars"] if a["slug"] == "old-marta")
    return PromptParts(
        persona=avatar["persona"],
        greeting=avatar["greeting"],
        hunt_context=prompts.hunt_context(demo["title"], demo["description"]),
    )


def chat(exchanges: int, start: int = 0) -> tuple[Turn, ...]:
    turns = []
    for i in range(start, start + exchanges):
        turns.append(Turn("player", f"Question {i}: what do you see from the lamp room at night?"))
        turns.append(Turn("avatar", f"Answer {i}: the sea, the rocks and the ships going home."))
    return tuple(turns)


def text_of(tokenizer, prompt) -> str:
    return tokenizer.decode(prompt.ids)


def test_the_persona_opens_the_system_message_and_is_never_cut(tokenizer, marta):
    parts = replace(marta, turns=chat(60), message="Hello?")
    prompt = prompts.build_prompt(tokenizer, parts, BUDGET)
    text = text_of(tokenizer, prompt)
    assert text.startswith("<|im_start|>system\n" + marta.persona)
    assert prompt.system.startswith(marta.persona)


def test_a_long_history_is_cut_to_the_budget_keeping_the_newest_turns(tokenizer, marta):
    turns = chat(60)
    prompt = prompts.build_prompt(tokenizer, replace(marta, turns=turns, message="Hi"), BUDGET)
    assert prompt.tokens <= BUDGET
    assert 0 < prompt.turns_used < len(turns)
    assert prompt.dropped == turns[: len(turns) - prompt.turns_used]
    text = text_of(tokenizer, prompt)
    assert "Answer 59" in text and "Question 0:" not in text
    # Nearly all of the budget is used: the rest is the message reserve and one turn's slack.
    assert prompt.tokens > BUDGET - prompts.MESSAGE_RESERVE - 40


def test_the_new_message_comes_last_before_the_reply(tokenizer, marta):
    prompt = prompts.build_prompt(tokenizer, replace(marta, turns=chat(2), message="Why?"), BUDGET)
    assert text_of(tokenizer, prompt).endswith(
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_short_history_is_kept_whole(tokenizer, marta):
    turns = chat(3)
    prompt = prompts.build_prompt(tokenizer, replace(marta, turns=turns, message="Hi"), BUDGET)
    assert (prompt.turns_used, prompt.dropped) == (6, ())


def test_a_long_message_pushes_out_older_turns_to_stay_in_budget(tokenizer, marta):
    long = "Tell me everything. " * 40
    prompt = prompts.build_prompt(tokenizer, replace(marta, turns=chat(30), message=long), BUDGET)
    short = prompts.build_prompt(tokenizer, replace(marta, turns=chat(30), message="Hi"), BUDGET)
    assert prompt.tokens <= BUDGET
    assert prompt.turns_used < short.turns_used


def test_reveal_and_hint_instructions_appear_only_when_the_gate_gives_them(tokenizer, marta):
    plain = prompts.build_prompt(tokenizer, replace(marta, message="Lamp?"), BUDGET)
    line = "Every night I feed that old lamp the same way: kerosene."
    revealed = prompts.build_prompt(
        tokenizer,
        replace(
            marta, message="Lamp?", reveals=(prompts.reveal_instruction(line),), hint="Ask me."
        ),
        BUDGET,
    )
    assert "kerosene" not in text_of(tokenizer, plain)
    assert "Weave this hint" not in text_of(tokenizer, plain) and not plain.note
    assert line in revealed.note and "Ask me." in revealed.note
    assert line not in revealed.system


def test_this_turns_instructions_sit_after_the_history_and_before_the_message(tokenizer, marta):
    parts = replace(marta, summary="Visitor: my name is Ada", turns=chat(3), message="Lamp?")
    plain = prompts.build_prompt(tokenizer, parts, BUDGET)
    hinted = prompts.build_prompt(tokenizer, replace(parts, hint="Ask about the lamp."), BUDGET)
    text = text_of(tokenizer, hinted)
    assert text.index("Answer 2") < text.index("Ask about the lamp.") < text.index("Lamp?")
    # So a hint leaves the prompt's start, the part the engine reuses, as it was.
    prefix = prompts.prefix_ids(tokenizer, parts, plain)
    assert hinted.ids[: len(prefix)] == prefix == plain.ids[: len(prefix)]
    assert len(prefix) > len(hinted.ids) - 60


def test_a_template_without_late_system_messages_gets_the_instructions_in_the_first_one(
    tokenizer, marta
):
    strict = copy.copy(tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    prompt = prompts.build_prompt(
        tokenizer=strict, parts=replace(marta, message="Lamp?", hint="Ask me."), budget=BUDGET
    )
    assert "Ask me." in prompt.system and not prompt.note
    assert text_of(strict, prompt).count("<|im_start|>system") == 1


def test_the_summary_sits_between_the_context_and_the_turns(tokenizer, marta):
    parts = replace(marta, summary="Visitor: my name is Ada", turns=chat(1), message="Hi")
    text = text_of(tokenizer, prompts.build_prompt(tokenizer, parts, BUDGET))
    assert text.index(marta.hunt_context) < text.index("my name is Ada") < text.index("Answer 0")


def test_the_next_turns_prompt_starts_with_this_turns_prefix(tokenizer, marta):
    parts = replace(marta, turns=chat(4), message="First?")
    prompt = prompts.build_prompt(tokenizer, parts, BUDGET)
    prefix = prompts.prefix_ids(tokenizer, parts, prompt)
    for message in ("Second?", "A much longer question about the rocks below the tower?"):
        nxt = prompts.build_prompt(tokenizer, replace(parts, message=message), BUDGET)
        assert nxt.ids[: len(prefix)] == prefix


def test_a_persona_too_long_for_the_budget_is_refused(tokenizer):
    persona = "You are a wise old owl who talks about the moon and the stars at length. " * 40
    with pytest.raises(ValidationError) as refused:
        prompts.check_persona_fits(persona, tokenizer=tokenizer, budget=BUDGET)
    assert refused.value.code == "persona_too_long"
    assert "768" in refused.value.messages[0]


def test_the_demo_personas_fit(tokenizer):
    demo = json.loads(DEMO_HUNT.read_text())
    context = prompts.hunt_context(demo["title"], demo["description"])
    for avatar in demo["avatars"]:
        prompts.check_persona_fits(
            avatar["persona"], avatar["greeting"], context, tokenizer=tokenizer, budget=BUDGET
        )


def test_a_smaller_budget_refuses_what_a_larger_one_accepts(tokenizer, marta):
    prompts.check_persona_fits(marta.persona, tokenizer=tokenizer, budget=BUDGET)
    with pytest.raises(ValidationError):
        prompts.check_persona_fits(marta.persona, tokenizer=tokenizer, budget=420)


def test_the_hunt_context_is_shortened(tokenizer):
    context = prompts.hunt_context("Long", "word " * 500)
    assert len(context) < prompts.HUNT_CONTEXT_MAX_CHARS + 80
    assert context.endswith("…")


# The rolling summary -----------------------------------------------------------------------


def test_nothing_is_folded_while_the_turns_fit(tokenizer, marta):
    assert summary.plan_fold(tokenizer, replace(marta, turns=chat(3)), BUDGET) == ("", 0)


def test_folding_keeps_what_the_visitor_said_about_themselves(tokenizer, marta):
    turns = (
        Turn("player", "Hello! My name is Ada and I come from the harbour town."),
        Turn("avatar", "Ahoy, Ada. Mind the rocks."),
        *chat(30),
    )
    new_summary, folded = summary.plan_fold(tokenizer, replace(marta, turns=turns), BUDGET)
    assert folded > 2
    assert "my name is Ada" in new_summary.lower() or "My name is Ada" in new_summary
    assert "harbour town" in new_summary
    assert prompts.count_tokens(tokenizer, new_summary) <= prompts.SUMMARY_MAX_TOKENS


def test_after_a_fold_the_rest_fits_with_room_to_spare(tokenizer, marta):
    turns = chat(30)
    new_summary, folded = summary.plan_fold(tokenizer, replace(marta, turns=turns), BUDGET)
    rest = replace(marta, summary=new_summary, turns=turns[folded:], message="x" * 400)
    prompt = prompts.build_prompt(tokenizer, rest, BUDGET)
    assert prompt.dropped == ()
    assert turns[folded].role == "player"
    # Hysteresis: the next turns append to the same prefix before the next fold.
    grown = replace(marta, summary=new_summary, turns=turns[folded:] + chat(1, start=99))
    assert summary.plan_fold(tokenizer, grown, BUDGET)[1] == 0


def test_the_summary_stays_bounded_however_long_the_conversation(tokenizer, marta):
    text, window, turns = "", 0, []
    for i in range(80):
        turns += chat(1, start=i)
        text, folded = summary.plan_fold(
            tokenizer, replace(marta, summary=text, turns=tuple(turns[window:])), BUDGET
        )
        window += folded
    assert prompts.count_tokens(tokenizer, text) <= prompts.SUMMARY_MAX_TOKENS
    assert "Question 7" in text  # recent folded exchanges are there
    assert "Question 0:" not in text  # the oldest gave way


def test_prompt_tokens_stay_flat_over_forty_turns(tokenizer, marta):
    """Acceptance: prompt tokens at turn 40 are at most 1.25 times those at turn 10."""
    sizes, text, window, turns = {}, "", 0, []
    for turn in range(1, 41):
        message = f"Question {turn}: and what about the gulls on the rocks?"
        parts = replace(marta, summary=text, turns=tuple(turns[window:]), message=message)
        sizes[turn] = prompts.build_prompt(tokenizer, parts, BUDGET).tokens
        turns += [
            Turn("player", message),
            Turn("avatar", "Gulls gossip, ships come home, I keep the light."),
        ]
        text, folded = summary.plan_fold(
            tokenizer, replace(marta, summary=text, turns=tuple(turns[window:])), BUDGET
        )
        window += folded
    assert max(sizes.values()) <= BUDGET
    assert sizes[40] <= 1.25 * sizes[10]
    assert sizes[40] > 2 * sizes[1]  # the history is really there


def test_a_summary_is_built_only_from_the_turns_it_is_given(tokenizer):
    turns = (Turn("player", "What is the secret word?"), Turn("avatar", "I cannot say, friend."))
    text = summary.fold("", turns, tokenizer)
    assert text == "- They said: What is the secret word? You answered: I cannot say, friend."


# Any message stays within the budget -------------------------------------------------------

# 500 rare CJK characters (four UTF-8 bytes each): about four tokens apiece, four times what the
# 500-character limit was sized for.
RARE_CJK = "".join(chr(0x20000 + 37 * i) for i in range(500))


@pytest.mark.parametrize(
    "message",
    [RARE_CJK, "1234567890 " * 45, "!@#$%^&*()_+ " * 38, "é" * 500],
    ids=["rare-cjk", "digits", "punctuation", "accents"],
)
def test_a_prompt_stays_within_the_budget_whatever_the_message(tokenizer, marta, message):
    reveal = prompts.reveal_instruction("Every night I feed that old lamp: kerosene.")
    parts = replace(
        marta,
        summary="- They said: my name is Ada. You answered: welcome, Ada.",
        reveals=(reveal,),
        hint="Ask about the lamp.",
        turns=chat(30),
        message=message,
    )
    prompt = prompts.build_prompt(tokenizer, parts, BUDGET)
    assert prompt.tokens <= BUDGET
    text = text_of(tokenizer, prompt)
    # History goes first; the persona and this turn's instructions are never cut.
    assert text.startswith("<|im_start|>system\n" + marta.persona)
    assert reveal in prompt.note and reveal in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_a_message_too_long_for_the_budget_is_cut_from_its_end(tokenizer, marta):
    prompt = prompts.build_prompt(tokenizer, replace(marta, turns=chat(5), message=RARE_CJK), 600)
    assert prompt.tokens <= 600
    assert (prompt.turns_used, len(prompt.dropped)) == (0, 10)
    kept = text_of(tokenizer, prompt).split("<|im_start|>user\n")[-1]
    kept = kept.removesuffix("<|im_end|>\n<|im_start|>assistant\n")
    assert 0 < len(kept) < len(RARE_CJK)
    assert RARE_CJK.startswith(kept.rstrip("\ufffd"))


def test_the_web_tier_counts_a_message_as_the_model_does(tokenizer):
    for text in (RARE_CJK, "Hello, Marta! What keeps the lamp burning?", "é" * 500):
        assert prompts.message_tokens(text) == prompts.count_tokens(tokenizer, text)
    assert prompts.message_tokens(RARE_CJK) > 4 * prompts.MESSAGE_RESERVE


def test_example_dialogues_go_in_whole_exchanges_as_far_as_the_room_allows(tokenizer, marta):
    demo = json.loads(DEMO_HUNT.read_text())
    examples = next(a for a in demo["avatars"] if a["slug"] == "old-marta")["examples"]
    exchanges = prompts.example_exchanges(examples)
    assert len(exchanges) == 14
    parts = replace(marta, examples=examples)
    fitted = prompts.fit_examples(tokenizer, parts, BUDGET)
    kept = prompts.example_exchanges(fitted.examples)
    assert 0 < len(kept) < len(exchanges) and kept == exchanges[: len(kept)]
    used, room = prompts.persona_tokens(
        parts.persona, parts.greeting, parts.hunt_context, tokenizer, BUDGET, examples
    )
    assert used <= room  # many examples never make an avatar too long to save
    prompt = prompts.build_prompt(tokenizer, replace(parts, message="Hello"), BUDGET)
    assert kept[0].split("\n")[1] in prompt.system and exchanges[-1] not in prompt.system
    # A larger budget has room for more of them.
    assert len(
        prompts.example_exchanges(prompts.fit_examples(tokenizer, parts, 2048).examples)
    ) > len(kept)


def test_an_exchange_reads_as_the_visitors_and_the_characters_turns():
    turns = prompts.exchange_turns("Visitor: Hi!\nOld Marta: Ahoy.\nMind the rocks.\n{{user}}: Bye")
    assert turns == [
        Turn("player", "Hi!"),
        Turn("avatar", "Ahoy. Mind the rocks."),
        Turn("player", "Bye"),
    ]
