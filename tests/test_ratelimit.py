"""Per-account rate limits: a burst, then a steady rate, with a useful retry_after."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.test import override_settings

from lostwallet import ratelimit
from tests.conftest import require_redis


def test_a_burst_passes_then_the_next_hit_waits():
    key = f"t:{uuid.uuid4()}"
    assert [ratelimit.hit(key, 10, burst=3) for _ in range(3)] == [None, None, None]
    wait = ratelimit.hit(key, 10, burst=3)
    assert wait is not None
    assert 0 < wait <= 6.0
    assert ratelimit.retry_after_seconds(wait) >= 1


def test_keys_are_counted_separately():
    a, b = f"a:{uuid.uuid4()}", f"b:{uuid.uuid4()}"
    assert ratelimit.hit(a, 1) is None
    assert ratelimit.hit(a, 1) is not None
    assert ratelimit.hit(b, 1) is None


def test_a_fresh_key_passes_whatever_the_clock_reads(monkeypatch):
    # At this clock reading (now + 60) - 60 > now in floating point: a sum-based check refused
    # the first hit of a fresh key.
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: 2003.7124437906375)
    assert ratelimit.hit(f"t:{uuid.uuid4()}", 1) is None


def test_a_refused_hit_is_not_counted():
    key = f"t:{uuid.uuid4()}"
    ratelimit.hit(key, 60, burst=1)
    first = ratelimit.hit(key, 60, burst=1)
    second = ratelimit.hit(key, 60, burst=1)
    assert first is not None and second is not None
    assert second <= first


def test_concurrent_hits_never_exceed_the_burst():
    key = f"t:{uuid.uuid4()}"
    allowed = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        allowed.append(ratelimit.hit(key, 1, burst=3) is None)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 3


@pytest.mark.integration
def test_redis_counts_atomically_across_clients():
    url = require_redis()
    key = f"t:{uuid.uuid4()}"
    with override_settings(REDIS_URL=url):
        results = []
        barrier = threading.Barrier(10)

        def worker():
            barrier.wait()
            results.append(ratelimit.hit(key, 2, burst=4))

        threads = [threading.Thread(target=worker) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(r is None for r in results) == 4
    assert all(0 < r <= 30.0 for r in results if r is not None)


def test_peek_answers_like_hit_without_counting():
    key = f"t:{uuid.uuid4()}"
    assert [ratelimit.peek(key, 10, burst=2) for _ in range(5)] == [None] * 5
    assert ratelimit.hit(key, 10, burst=2) is None and ratelimit.hit(key, 10, burst=2) is None
    assert ratelimit.peek(key, 10, burst=2) is not None
    assert ratelimit.peek(key, 10, burst=2) == pytest.approx(ratelimit.hit(key, 10, 2), abs=0.1)


@pytest.mark.integration
def test_redis_peeks_without_counting():
    url = require_redis()
    key = f"t:{uuid.uuid4()}"
    with override_settings(REDIS_URL=url):
        assert [ratelimit.peek(key, 1, burst=1) for _ in range(3)] == [None] * 3
        assert ratelimit.hit(key, 1, burst=1) is None
        assert ratelimit.peek(key, 1, burst=1) is not None
