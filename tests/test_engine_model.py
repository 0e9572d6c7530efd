"""The real default model (SmolLM2-135M-Instruct from the packaged GGUF) answers in character
through the engine, the budgeted prompt and the reply cleaner."""

from __future__ import annotations

import json

import pytest

from avatars.engine import prompts
from avatars.engine.cleaning import ReplyCleaner
from avatars.engine.engine import Engine, Request, Sampling
from avatars.engine.loading import DEFAULT_MODEL, load_model
from tests.conftest import DEMO_HUNT

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine():
    running = Engine(load_model(DEFAULT_MODEL, "cpu"))
    yield running
    running.close()


def avatar(slug: str) -> prompts.PromptParts:
    demo = json.loads(DEMO_HUNT.read_text())
    data = next(a for a in demo["avatars"] if a["slug"] == slug)
    return prompts.PromptParts(
        persona=data["persona"],
        greeting=data["greeting"],
        hunt_context=prompts.hunt_context(demo["title"], demo["description"]),
    )


def answer(engine: Engine, parts: prompts.PromptParts, question: str) -> str:
    parts = prompts.PromptParts(**{**parts.__dict__, "message": question})
    prompt = prompts.build_prompt(engine.tokenizer, parts)
    stream = engine.submit(Request(prompt.ids, Sampling(temperature=0, max_new_tokens=60)))
    cleaner = ReplyCleaner(
        echo_sources=(parts.persona, parts.hunt_context), instructions=(prompts.STYLE,)
    )
    text = "".join(cleaner.feed(chunk) for chunk in stream)
    return text + cleaner.finish(complete=stream.finish_reason == "stop")


def test_old_marta_answers_as_the_lighthouse_keeper(engine):
    reply = answer(engine, avatar("old-marta"), "Who are you, and what do you do up here?")
    lowered = reply.lower()
    assert any(word in lowered for word in ("lighthouse", "light", "lamp", "keeper", "sea"))
    assert "language model" not in lowered and "assistant" not in lowered
    assert "<|" not in reply


def test_captain_rook_talks_about_flying_not_about_lighthouses(engine):
    reply = answer(engine, avatar("captain-rook"), "Hello! What is your story?")
    lowered = reply.lower()
    assert any(
        word in lowered for word in ("sky", "airship", "fly", "flying", "cloud", "tea", "cadet")
    )
    assert "lighthouse" not in lowered


def test_batched_greedy_replies_of_the_real_model_equal_its_single_replies(engine):
    questions = ["Who are you?", "Do you like storms?", "What do you drink?", "Tell me a story."]
    parts = avatar("old-marta")

    def ids(question: str) -> tuple[int, ...]:
        p = prompts.PromptParts(**{**parts.__dict__, "message": question})
        return prompts.build_prompt(engine.tokenizer, p).ids

    greedy = Sampling(temperature=0, max_new_tokens=24)
    engine.prefix_cache.capacity_tokens = 0
    try:
        alone = [engine.submit(Request(ids(q), greedy)).result().token_ids for q in questions]
        streams = [engine.submit(Request(ids(q), greedy)) for q in questions]
        assert [s.result().token_ids for s in streams] == alone
    finally:
        engine.prefix_cache.capacity_tokens = 12_000
