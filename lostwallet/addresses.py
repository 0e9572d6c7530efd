"""Who is calling: the client's address behind trusted reverse proxies, and its rate-limit bucket.

Each proxy appends the address of whoever connected to it to `X-Forwarded-For`, so only the
entries written by proxies we run can be believed: the leftmost ones are whatever the client
chose to send. `client_address` walks the chain from the right (the TCP peer first) and stops at
the first address that is not one of our `TRUSTED_PROXIES`; a peer that is not a trusted proxy
is the client itself and its header is ignored entirely. Daphne must therefore run without
`--proxy-headers`: with it, Daphne puts the leftmost (client-written) entry in the peer's place
before this code sees the connection.

`bucket` is what limits count: an IPv4 address as is, an IPv6 address by its /64, the smallest
network a home or phone is handed (one client could otherwise take a fresh address per try).

Imports neither app: `lostwallet.asgi` applies it to every connection, `hunt` to its counters.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

UNKNOWN = "unknown"


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    # An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
    return getattr(ip, "ipv4_mapped", None) or ip


def is_trusted_proxy(address: str) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_address(peer: str, forwarded_for: str | None) -> str:
    """The client's address: the rightmost hop of `forwarded_for` + `peer` that is not a
    trusted proxy (the leftmost hop when every one is). `forwarded_for` is only read when the
    peer is a trusted proxy."""
    if not forwarded_for or not is_trusted_proxy(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not is_trusted_proxy(hop):
            return hop
    return hops[0] if hops else peer


def bucket(address: str | None) -> str:
    """The key that per-address limits count under: IPv4 whole, IPv6 by /64, else "unknown"."""
    ip = _ip(address or "")
    if ip is None:
        return UNKNOWN
    if ip.version == 6:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
