"""The engine's admission order (avatars/engine/scheduling.py): replies before warm-ups, oldest
first, and no request admitted after more than MAX_OVERTAKES later arrivals; the queue wait
each completion reports."""

from __future__ import annotations

import random
from dataclasses import dataclass

from avatars.engine import scheduling
from avatars.engine.engine import Sampling

pytest_plugins = ["tests.engine_support"]


@dataclass
class Item:
    arrival: int
    replying: bool
    overtaken: int = 0


def admission_order(arrivals: list[tuple[int, bool]], admit_every: int, max_overtakes: int):
    """Feeds requests (arrival step, replying) to a queue that admits one request every
    `admit_every` steps; returns the arrivals in admission order."""
    waiting: list[Item] = []
    order: list[Item] = []
    pending = sorted(arrivals)
    step, number = 0, 0
    while pending or waiting:
        while pending and pending[0][0] <= step:
            number += 1
            waiting.append(Item(number, pending.pop(0)[1]))
        if waiting and step % admit_every == 0:
            order.append(scheduling.admit(waiting, max_overtakes))
        step += 1
    return order


def later_arrivals_admitted_first(order: list[Item]) -> dict[int, int]:
    """For each request, how many requests that arrived after it were admitted before it
    (counted from the order itself, not from the scheduler's own counters)."""
    return {
        item.arrival: sum(1 for before in order[:index] if before.arrival > item.arrival)
        for index, item in enumerate(order)
    }


def test_replies_go_before_warm_ups_and_the_oldest_first():
    waiting = [Item(1, False), Item(2, True), Item(3, True), Item(4, False)]
    assert [scheduling.admit(waiting).arrival for _ in range(4)] == [2, 3, 1, 4]


def test_a_warm_up_is_admitted_once_passed_by_the_bound_of_later_replies():
    waiting = [Item(0, False)] + [Item(n, True) for n in range(1, 20)]
    order = [scheduling.admit(waiting, max_overtakes=3).arrival for _ in range(20)]
    assert order[:4] == [1, 2, 3, 0]


def test_no_request_waits_behind_more_than_the_bound_of_later_arrivals():
    rng = random.Random(17)
    for _trial in range(50):
        arrivals = [(rng.randrange(200), rng.random() < 0.7) for _ in range(120)]
        order = admission_order(arrivals, admit_every=2, max_overtakes=5)
        assert len(order) == len(arrivals)
        worst = max(later_arrivals_admitted_first(order).values())
        assert worst <= 5


def test_without_warm_ups_admission_is_first_come_first_served():
    rng = random.Random(3)
    arrivals = [(rng.randrange(100), True) for _ in range(60)]
    order = admission_order(arrivals, admit_every=3, max_overtakes=5)
    assert [item.arrival for item in order] == sorted(item.arrival for item in order)


def test_the_engine_admits_a_warm_up_within_the_bound(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0, max_batch=2)
    short = Sampling(temperature=0, max_new_tokens=4)
    # Submitted together, faster than the loop admits them (one prefill per turn).
    busy = [engine.submit(ask(f"Question number {n}?", short)) for n in range(3)]
    warm = engine.warm(ask("Warm me up, please.").prompt_ids)
    replies = [engine.submit(ask(f"Later question {n}?", short)) for n in range(20)]
    for stream in [*busy, *replies]:
        stream.result(timeout=60)
    warm.result(timeout=60)
    later_first = sum(1 for s in replies if s.admitted_at < warm.admitted_at)
    assert later_first <= scheduling.MAX_OVERTAKES


def test_a_completion_reports_its_queue_wait_within_its_time_to_first_token(ask, make_engine):
    # A prefill budget smaller than one prompt: the first prompt has a pass to itself.
    engine = make_engine(prefix_cache_tokens=0, prefill_chunk=16)
    completions = [
        s.result(timeout=60) for s in [engine.submit(ask(f"Hello {n}")) for n in range(4)]
    ]
    for completion in completions:
        assert 0 <= completion.queue_wait <= completion.ttft
    # The last of four submitted together waited for the first one's pass.
    assert completions[-1].queue_wait > completions[0].queue_wait


def test_several_short_prompts_start_in_one_turn_of_the_loop(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0, prefill_chunk=256)
    engine.trace = []
    short = Sampling(temperature=0, max_new_tokens=4)
    requests = [ask(f"Hi {n}", short) for n in range(8)]
    for stream in [engine.submit(r) for r in requests]:
        stream.result(timeout=60)
    longest = max(len(r.prompt_ids) for r in requests)
    assert max(step["prefill_tokens"] for step in engine.trace) > longest


def test_a_long_prompt_still_takes_one_chunk_per_turn(ask, make_engine):
    engine = make_engine(prefix_cache_tokens=0, prefill_chunk=16)
    engine.trace = []
    request = ask("Tell me everything about the lighthouse, the lamp, the cat and the sea.")
    assert len(request.prompt_ids) > 32
    engine.submit(request).result(timeout=60)
    assert max(step["prefill_tokens"] for step in engine.trace) == 16
