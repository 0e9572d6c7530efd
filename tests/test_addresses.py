"""Client addresses behind reverse proxies (lostwallet/addresses.py) and the ASGI middleware that
puts them in every connection's scope."""

from __future__ import annotations

import pytest
from django.test import override_settings

from lostwallet.addresses import bucket, client_address
from lostwallet.middleware import ClientAddressMiddleware

PROXIES = ["10.0.0.0/8", "192.0.2.7"]


@override_settings(TRUSTED_PROXIES=PROXIES)
def test_a_spoofed_leftmost_entry_is_ignored():
    # The client wrote "1.1.1.1"; the trusted proxy appended the address it saw.
    assert client_address("10.0.0.2", "1.1.1.1, 203.0.113.9") == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=PROXIES)
def test_the_rightmost_untrusted_hop_is_chosen_through_two_trusted_proxies():
    forwarded = "1.1.1.1, 203.0.113.9, 192.0.2.7"
    assert client_address("10.1.2.3", forwarded) == "203.0.113.9"


@override_settings(TRUSTED_PROXIES=PROXIES)
def test_the_header_of_an_untrusted_peer_is_ignored():
    assert client_address("198.51.100.4", "203.0.113.9") == "198.51.100.4"


def test_without_trusted_proxies_the_peer_is_the_client():
    assert client_address("10.0.0.2", "203.0.113.9") == "10.0.0.2"


@override_settings(TRUSTED_PROXIES=PROXIES)
def test_a_chain_of_trusted_proxies_only_gives_its_first_hop():
    assert client_address("10.0.0.2", "10.0.0.3, 10.0.0.4") == "10.0.0.3"
    assert client_address("10.0.0.2", " , ") == "10.0.0.2"


def test_ipv6_addresses_share_a_bucket_per_64():
    assert bucket("2001:db8:1:2:aaaa::1") == bucket("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert bucket("2001:db8:1:3::1") != bucket("2001:db8:1:2::1")


def test_ipv4_addresses_are_bucketed_whole_and_garbage_is_unknown():
    assert bucket("203.0.113.9") == "203.0.113.9"
    assert bucket("::ffff:203.0.113.9") == "203.0.113.9"
    assert bucket("203.0.113.10") != bucket("203.0.113.9")
    assert bucket("not-an-address") == bucket("") == bucket(None) == "unknown"


async def client_seen(scope: dict) -> tuple | None:
    """scope["client"] as the application behind the middleware sees it."""
    seen = {}

    async def inner(scope, receive, send):
        seen["client"] = scope.get("client")

    await ClientAddressMiddleware(inner)(scope, None, None)
    return seen["client"]


def scope(kind: str, peer: str, forwarded: bytes | None) -> dict:
    headers = [(b"x-forwarded-for", forwarded)] if forwarded else []
    return {"type": kind, "client": (peer, 5555), "headers": headers}


@pytest.mark.parametrize("kind", ["websocket", "http"])
@override_settings(TRUSTED_PROXIES=PROXIES)
async def test_the_middleware_rewrites_the_client_of_a_trusted_proxy(kind):
    client = await client_seen(scope(kind, "10.0.0.2", b"1.1.1.1, 203.0.113.9"))
    assert client == ("203.0.113.9", 0)


@override_settings(TRUSTED_PROXIES=PROXIES)
async def test_the_middleware_joins_repeated_headers_in_order():
    spoofed = scope("websocket", "10.0.0.2", b"203.0.113.9")
    spoofed["headers"].insert(0, (b"x-forwarded-for", b"1.1.1.1"))
    assert await client_seen(spoofed) == ("203.0.113.9", 0)


@override_settings(TRUSTED_PROXIES=PROXIES)
async def test_the_middleware_leaves_a_direct_client_alone():
    assert await client_seen(scope("websocket", "198.51.100.4", b"1.1.1.1")) == (
        "198.51.100.4",
        5555,
    )
    assert await client_seen({"type": "lifespan"}) is None


@pytest.mark.django_db
def test_sign_up_attempts_from_one_ipv6_64_share_a_limit(client, demo_hunt):
    def register(address: str):
        body = {"username": "x", "password": "y"}
        return client.post(
            "/api/v1/auth/register", body, content_type="application/json", REMOTE_ADDR=address
        )

    statuses = [register(f"2001:db8::{i:x}").status_code for i in range(11)]
    assert statuses[-1] == 429
    assert register("2001:db8:0:1::1").status_code != 429
