"""Fixtures for the engine, prompt and generation-task tests: the tiny random model (fast, real
code paths, gibberish text), the default model's tokenizer, and a conversation to give turns."""

from __future__ import annotations

import pytest
import torch

from avatars.engine.engine import Engine, Request, Sampling
from avatars.engine.loading import load_model
from avatars.models import Avatar, Conversation, Message

GREEDY = Sampling(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="session")
def tiny():
    # The tiny model's operators are too small to split across threads; on a busy 2-core
    # machine the hand-offs between two threads made it six times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model("tiny-random", "cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def make_engine(tiny):
    """make_engine(**options) -> a running Engine on the tiny model, closed after the test."""
    engines: list[Engine] = []

    def make(**options) -> Engine:
        engine = Engine(tiny, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def chat_ids(tokenizer, text: str, system: str = "You are a lighthouse keeper.") -> tuple[int, ...]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    return tuple(
        tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=False
        )
    )


@pytest.fixture
def ask(tiny):
    """ask(text, sampling=GREEDY) -> a Request: `text` from the player, through the template."""

    def make(text: str, sampling: Sampling = GREEDY) -> Request:
        return Request(chat_ids(tiny.tokenizer, text), sampling)

    return make


@pytest.fixture
def prompt_of(tiny):
    """prompt_of(text) -> the token ids `ask` would send."""
    return lambda text: chat_ids(tiny.tokenizer, text)


@pytest.fixture
def harbour_cook(demo_hunt) -> Avatar:
    return Avatar.objects.create(
        hunt=demo_hunt,
        slug="harbour-cook",
        name="The Harbour Cook",
        persona="You are the harbour cook. You talk about soup and boats, kindly and briefly.",
        greeting="Soup's on.",
    )


@pytest.fixture
def conversation(harbour_cook, make_player) -> Conversation:
    return Conversation.objects.create(player=make_player("eater"), avatar=harbour_cook)


def say(conversation: Conversation, text: str = "What soup is it today?") -> Message:
    return Message.objects.create(
        conversation=conversation, role="player", text=text, status="pending"
    )
