"""Socket places per account and per address (lostwallet/connections.py), in process and in
Redis."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.test import override_settings

from lostwallet import connections
from tests.conftest import require_redis


def test_a_socket_takes_a_place_under_every_key_or_under_none():
    limits = {"user:1": 2, "address:a": 1}
    assert connections.take("s1", limits)
    # The address is full: the user's second place is not taken either.
    assert not connections.take("s2", limits)
    assert connections.take("s3", {"user:1": 2})
    assert not connections.take("s4", {"user:1": 2})


def test_a_closed_socket_gives_its_places_back():
    assert connections.take("s1", {"address:a": 1})
    connections.give_back("s1", ["address:a"])
    assert connections.take("s2", {"address:a": 1})


def test_places_of_a_dead_process_expire_and_renewed_ones_do_not(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(connections.time, "monotonic", lambda: clock[0])
    assert connections.take("dead", {"address:a": 2})
    assert connections.take("live", {"address:a": 2})
    clock[0] += connections.TTL - 1
    connections.renew("live", ["address:a"])
    assert not connections.take("new", {"address:a": 2})
    clock[0] += 2  # "dead" was never renewed: its place is free again
    assert connections.take("new", {"address:a": 2})
    assert not connections.take("newer", {"address:a": 2})


def test_a_socket_without_address_or_account_is_not_counted():
    assert connections.socket_limits({"type": "websocket"}) == {}
    scope = {"client": ("2001:db8::1", 4000)}
    assert connections.socket_limits(scope) == {"address:2001:db8::/64": 64}  # IPv6 by /64


@pytest.mark.integration
def test_redis_gives_the_last_place_to_one_of_many_racing_sockets():
    require_redis()
    key = f"address:test-{uuid.uuid4()}"
    barrier, taken = threading.Barrier(10), []

    def open_socket(n: int) -> None:
        barrier.wait()
        if connections.take(f"s{n}", {key: 3}):
            taken.append(f"s{n}")

    with override_settings(REDIS_URL=require_redis()):
        threads = [threading.Thread(target=open_socket, args=(n,)) for n in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(taken) == 3
        for socket in taken:
            connections.renew(socket, [key])
        assert not connections.take("late", {key: 3})
        connections.give_back(taken[0], [key])
        assert connections.take("late", {key: 3})
        connections.give_back("late", [key])
