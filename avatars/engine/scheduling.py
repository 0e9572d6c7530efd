"""Admission order of the engine: which waiting request begins its prefill next.

A pure function over the waiting queue, so the rule can be tested without a model.

Replies go before warm-ups (a player is waiting for the one, nobody for the other), and among
each kind the oldest goes first. A warm-up could then wait for ever behind a steady stream of
replies; so every waiting request counts the later arrivals admitted before it, and one passed
by `max_overtakes` of them goes next, whatever its kind. No request is ever admitted after more
than `max_overtakes` requests that arrived after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# A warm-up lets this many later replies go first. Each costs one prefill (about a second on
# two CPU cores): the warm-up is still early for the player's next message, which comes after
# reading and typing.
MAX_OVERTAKES = 8


class Waiting(Protocol):
    arrival: int  # increasing with the order of submission
    replying: bool  # generates a reply (False: a warm-up, prefill only)
    overtaken: int  # later arrivals admitted while it waited


def pick_next(waiting: Sequence[Waiting], max_overtakes: int = MAX_OVERTAKES) -> int:
    """Index in `waiting` of the request to admit next (`waiting` must not be empty)."""
    oldest = min(range(len(waiting)), key=lambda i: waiting[i].arrival)
    overdue = [i for i in range(len(waiting)) if waiting[i].overtaken >= max_overtakes]
    if overdue:
        return min(overdue, key=lambda i: waiting[i].arrival)
    replies = [i for i in range(len(waiting)) if waiting[i].replying]
    if replies:
        return min(replies, key=lambda i: waiting[i].arrival)
    return oldest


def admit(waiting: list, max_overtakes: int = MAX_OVERTAKES):
    """Removes and returns the next request of `waiting`, counting the overtakes it makes."""
    chosen = waiting.pop(pick_next(waiting, max_overtakes))
    for other in waiting:
        if other.arrival < chosen.arrival:
            other.overtaken += 1
    return chosen
