"""The batching engine on the tiny random model: batched output equals one-at-a-time output,
requests join and leave a running batch, prefix reuse, sampling, stopping, cancellation."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from avatars.engine.engine import EngineError, Request, Sampling
from avatars.engine.kvcache import PrefixCache

pytest_plugins = ["tests.engine_support"]

GREEDY = Sampling(temperature=0, max_new_tokens=24)

QUESTIONS = [
    "Hello!",
    "Who are you and what do you do all day on that windy cliff?",
    "Tell me about the storms.",
    "Do you have a cat, and what is its name? I would love to meet it one day.",
    "What fuel feeds the lamp?",
    "How old are you?",
    "Is the sea cold in winter? I heard sailors say it bites like a dog in January.",
    "Goodbye.",
]


def test_greedy_batched_output_equals_one_at_a_time_output(ask, make_engine):
    # No prefix cache: every request is computed from scratch in both runs.
    engine = make_engine(prefix_cache_tokens=0)
    requests = [ask(q) for q in QUESTIONS]
    alone = [engine.submit(r).result() for r in requests]
    streams = [engine.submit(r) for r in requests]
    together = [s.result() for s in streams]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert all(len(c.token_ids) == GREEDY.max_new_tokens for c in alone)


def test_prompts_prefilled_together_from_different_cached_prefixes_get_their_lone_output(
    ask, prompt_of, make_engine
):
    cached = make_engine()
    plain = make_engine(prefix_cache_tokens=0)
    # Conversations of different lengths in the prefix cache, each followed by a new message,
    # and two prompts nothing is cached for: one prefill pass pads them to the same width.
    requests = []
    for question in QUESTIONS[:4]:
        first = cached.submit(ask(question)).result()
        follow = (*prompt_of(question), *first.token_ids, *prompt_of(QUESTIONS[7]))
        requests.append(Request(follow, GREEDY))
    requests += [ask(QUESTIONS[5]), ask(QUESTIONS[6])]
    cached.trace = []
    together = [s.result() for s in [cached.submit(r) for r in requests]]
    alone = [plain.submit(r).result() for r in requests]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert len({c.cached_tokens for c in together}) > 2
    assert max(step["prefill_rows"] for step in cached.trace) > 1


def test_a_burst_of_short_prompts_takes_fewer_prefill_passes_than_prompts(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0, prefill_chunk=256)
    engine.trace = []
    streams = [engine.submit(ask(q)) for q in QUESTIONS]
    for stream in streams:
        stream.result()
    passes = [step for step in engine.trace if step["prefill_rows"]]
    assert sum(step["prefill_rows"] for step in passes) == len(QUESTIONS)
    assert len(passes) < len(QUESTIONS)


def test_the_batch_really_ran_several_streams_per_step(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0)
    streams = [engine.submit(ask(q)) for q in QUESTIONS]
    for stream in streams:
        stream.result()
    tokens = len(QUESTIONS) * GREEDY.max_new_tokens
    # Each request's first token comes from its prefill; the rest from shared decode steps.
    assert engine.decoded_tokens == tokens - len(QUESTIONS)
    assert engine.steps < engine.decoded_tokens / 2


def test_a_request_joining_a_running_batch_gets_its_unbatched_output(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0)
    long = Sampling(temperature=0, max_new_tokens=120, min_new_tokens=120)
    alone = engine.submit(ask(QUESTIONS[3])).result()
    runner = engine.submit(ask(QUESTIONS[1], long))
    chunks = runner.chunks(timeout=30)
    next(chunks)  # the runner is decoding now
    joined = engine.submit(ask(QUESTIONS[3])).result()
    assert joined.token_ids == alone.token_ids
    assert len(runner.result().token_ids) == 120


def test_the_prefix_cache_reuses_a_finished_conversation_and_changes_nothing(
    tiny, ask, prompt_of, make_engine
):
    engine = make_engine()
    first = engine.submit(ask(QUESTIONS[1])).result()
    follow = list(first_ids := prompt_of(QUESTIONS[1])) + first.token_ids
    follow += list(tiny.tokenizer.encode("<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n"))
    follow += list(tiny.tokenizer.encode("<|im_start|>assistant\n"))
    cached = engine.submit(Request(tuple(follow), GREEDY)).result()
    cold = make_engine(prefix_cache_tokens=0).submit(Request(tuple(follow), GREEDY)).result()
    # The whole first turn (prompt and reply but its last token) came from the cache.
    assert cached.cached_tokens == len(first_ids) + len(first.token_ids) - 1
    assert cold.cached_tokens == 0
    assert cached.token_ids == cold.token_ids


def test_warm_prefills_a_prefix_that_the_next_request_reuses(ask, prompt_of, make_engine):
    engine = make_engine()
    prefix = prompt_of("Hello!")[:-5]
    warm = engine.warm(prefix).result()
    assert (warm.finish_reason, warm.token_ids) == ("stop", [])
    completion = engine.submit(ask("Hello!")).result()
    assert completion.cached_tokens == len(prefix)


def test_the_prefix_cache_stays_within_its_capacity(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=120)
    for question in QUESTIONS:
        engine.submit(ask(question)).result()
    assert 0 < engine.prefix_cache.tokens <= 120


def test_clearing_the_prefix_cache_waits_for_a_finished_stream_to_be_stored(
    ask, make_engine, monkeypatch
):
    # A reply's result reaches its reader before the engine thread stores its key/values:
    # make that store slow, so that a clear running beside it would come first.
    put = PrefixCache.put

    def slow_put(cache, *args):
        time.sleep(0.3)
        put(cache, *args)

    monkeypatch.setattr(PrefixCache, "put", slow_put)
    engine = make_engine()
    engine.submit(ask(QUESTIONS[0])).result()
    engine.clear_prefix_cache()
    assert len(engine.prefix_cache) == 0
    assert engine.submit(ask(QUESTIONS[0])).result().cached_tokens == 0


def test_a_banned_token_is_never_chosen_and_each_time_it_was_the_pick_is_counted(ask, make_engine):
    engine = make_engine()
    free = engine.submit(ask(QUESTIONS[2])).result()
    first = free.token_ids[0]
    banned = engine.submit(ask(QUESTIONS[2], replace(GREEDY, banned=((first,),)))).result()
    assert first not in banned.token_ids
    assert banned.banned_hits >= 1 and free.banned_hits == 0


def test_a_banned_sequence_masks_its_last_token_only_after_the_rest_of_it(ask, make_engine):
    engine = make_engine()
    free = engine.submit(ask(QUESTIONS[2])).result().token_ids
    a, b = free[0], free[1]
    cut = engine.submit(ask(QUESTIONS[2], replace(GREEDY, banned=((a, b),)))).result()
    assert cut.token_ids[0] == a and cut.token_ids[1] != b and cut.banned_hits == 1
    other = next(t for t in range(100, 200) if t != a)
    elsewhere = engine.submit(ask(QUESTIONS[2], replace(GREEDY, banned=((other, b),)))).result()
    assert elsewhere.token_ids == free and elsewhere.banned_hits == 0


def test_streamed_chunks_concatenate_to_the_decoded_reply(tiny, ask, make_engine):
    engine = make_engine()
    stream = engine.submit(ask(QUESTIONS[2]))
    chunks = list(stream)
    completion = stream.result()
    assert "".join(chunks) == completion.text
    assert completion.text == tiny.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
    assert len(chunks) > 1


def test_a_seed_makes_sampling_repeatable_and_another_seed_differs(ask, make_engine):
    engine = make_engine()

    def sample(seed: int) -> list[int]:
        # A high temperature flattens the tiny model's peaked distributions.
        sampling = Sampling(temperature=3.0, top_p=1.0, max_new_tokens=16, seed=seed)
        return engine.submit(ask(QUESTIONS[0], sampling)).result().token_ids

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    greedy = engine.submit(ask(QUESTIONS[0], GREEDY)).result().token_ids
    assert sample(7) != greedy[:16]


def test_a_low_top_p_keeps_only_the_most_likely_token(ask, make_engine):
    engine = make_engine()
    nucleus = Sampling(temperature=1.0, top_p=1e-6, max_new_tokens=24, seed=3)
    sampled = engine.submit(ask(QUESTIONS[4], nucleus)).result()
    greedy = engine.submit(ask(QUESTIONS[4])).result()
    assert sampled.token_ids == greedy.token_ids


def test_a_stream_stops_at_max_new_tokens(ask, make_engine):
    engine = make_engine()
    completion = engine.submit(ask("Hi", Sampling(temperature=0, max_new_tokens=5))).result()
    assert (completion.finish_reason, len(completion.token_ids)) == ("length", 5)


def test_a_stream_stops_at_the_end_of_turn_token_and_does_not_emit_it(ask, make_engine):
    engine = make_engine()
    ids = ask(QUESTIONS[5])
    greedy = engine.submit(ids).result().token_ids
    # Make the model's 4th greedy token an end-of-turn token for this engine.
    engine.stop_ids = frozenset({*engine.stop_ids, greedy[3]})
    completion = engine.submit(ids).result()
    assert completion.finish_reason == "stop"
    assert completion.token_ids == greedy[:3]


def test_min_new_tokens_masks_the_end_of_turn(ask, make_engine):
    engine = make_engine()
    ids = ask(QUESTIONS[5])
    greedy = engine.submit(ids).result().token_ids
    engine.stop_ids = frozenset({*engine.stop_ids, greedy[0]})
    engine._stop_index = torch.tensor(sorted(engine.stop_ids))
    forced = Sampling(temperature=0, max_new_tokens=6, min_new_tokens=6)
    completion = engine.submit(Request(ids.prompt_ids, forced)).result()
    assert (completion.finish_reason, len(completion.token_ids)) == ("length", 6)
    assert greedy[0] not in completion.token_ids


def test_cancelling_a_stream_ends_it_and_the_others_go_on(ask, make_engine):
    engine = make_engine()
    endless = Sampling(temperature=0, max_new_tokens=4000, min_new_tokens=4000)
    doomed = engine.submit(ask(QUESTIONS[1], endless))
    other = engine.submit(ask(QUESTIONS[2]))
    next(doomed.chunks(timeout=30))
    doomed.cancel()
    finished = doomed.result(timeout=30)
    assert finished.finish_reason == "cancelled"
    assert len(finished.token_ids) < 4000
    assert other.result(timeout=30).finish_reason == "length"
    assert engine.submit(ask("Still there?")).result().token_ids


def test_a_request_cancelled_before_it_starts_never_runs(ask, make_engine):
    engine = make_engine(max_batch=1)
    endless = Sampling(temperature=0, max_new_tokens=4000, min_new_tokens=4000)
    busy = engine.submit(ask(QUESTIONS[1], endless))
    next(busy.chunks(timeout=30))
    waiting = engine.submit(ask(QUESTIONS[2]))
    waiting.cancel()
    assert waiting.result(timeout=30).finish_reason == "cancelled"
    assert waiting.result().token_ids == []
    busy.cancel()
    assert busy.result(timeout=30).finish_reason == "cancelled"


def test_concurrent_submitters_each_get_their_own_reply(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0)
    expected = {q: engine.submit(ask(q)).result().token_ids for q in QUESTIONS}
    got: dict[str, list[int]] = {}

    def submit(question: str) -> None:
        got[question] = engine.submit(ask(question)).result().token_ids

    threads = [threading.Thread(target=submit, args=(q,)) for q in QUESTIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected


def test_a_model_error_fails_the_streams_in_flight_and_the_engine_recovers(
    ask, make_engine, monkeypatch
):
    engine = make_engine()
    broken = {"left": 1}
    forward = engine.model.forward

    def flaky(*args, **kwargs):
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("out of memory (simulated)")
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", flaky)
    with pytest.raises(EngineError, match="simulated"):
        engine.submit(ask("Hello")).result(timeout=30)
    assert engine.submit(ask("Hello")).result(timeout=30).token_ids


def test_an_empty_prompt_is_refused(make_engine):
    with pytest.raises(ValueError):
        make_engine().submit(Request((), GREEDY))


def rows_of(sampling: Sampling, count: int) -> list:
    """Stand-ins for the engine's per-request state, as `_sample` reads it."""
    return [
        SimpleNamespace(
            sampling=sampling,
            generated=[],
            banned_after={},
            generator=torch.Generator().manual_seed(row),
        )
        for row in range(count)
    ]


def test_sampling_draws_from_the_top_p_nucleus_in_proportion(make_engine):
    engine = make_engine()
    vocabulary = engine.model.config.vocab_size
    logits = torch.full((1, vocabulary), float("-inf"))
    logits[0, [10, 20, 30, 40]] = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    rows = rows_of(Sampling(temperature=1.0, top_p=0.9), 1)
    draws = Counter(int(engine._sample(logits.clone(), rows)[0]) for _ in range(3000))
    # 10, 20 and 30 reach 0.95 >= 0.9; 40 is outside the nucleus.
    assert set(draws) == {10, 20, 30}
    for token, share in ((10, 0.5 / 0.95), (20, 0.3 / 0.95), (30, 0.15 / 0.95)):
        assert abs(draws[token] / 3000 - share) < 0.04


def test_a_flat_distribution_beyond_the_top_k_is_sampled_from_its_whole_nucleus(make_engine):
    engine = make_engine()
    vocabulary = engine.model.config.vocab_size
    logits = torch.full((1, vocabulary), float("-inf"))
    logits[0, 1000:1200] = 0.0  # 200 equally likely tokens: the nucleus holds 180
    rows = rows_of(Sampling(temperature=1.0, top_p=0.9), 1)
    draws = {int(engine._sample(logits.clone(), rows)[0]) for _ in range(2000)}
    assert draws <= set(range(1000, 1200))
    assert len(draws) > 150  # far beyond the 64 candidates of the fast path


def test_a_waiting_reply_is_prefilled_before_a_waiting_warm_up(
    ask, prompt_of, make_engine, monkeypatch
):
    engine = make_engine(max_batch=1)
    order = []
    begin = engine._begin_prefill

    def recording(seq):
        order.append("warm" if seq.sampling.max_new_tokens == 0 else "reply")
        begin(seq)

    monkeypatch.setattr(engine, "_begin_prefill", recording)
    endless = Sampling(temperature=0, max_new_tokens=4000, min_new_tokens=4000)
    busy = engine.submit(ask(QUESTIONS[1], endless))
    next(busy.chunks(timeout=30))
    warm = engine.warm(prompt_of(QUESTIONS[6]))  # submitted first, but only a warm-up
    reply = engine.submit(ask(QUESTIONS[2]))
    busy.cancel()
    reply.result(timeout=30)
    warm.result(timeout=30)
    assert order == ["reply", "reply", "warm"]
