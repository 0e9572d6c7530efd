"""What goes over the wire: error and close codes, the chat frames, the time format.

One home for the strings clients program against (client contract §1–§3; docs/protocol.md,
docs/api.md), so the chat socket, the turn pipeline, the REST API and the leaderboard cannot
drift apart; tests/test_wire.py checks the codes against the docs' tables. Both apps use it,
which is why it lives here: `hunt` never imports `avatars`.

The enums are `str`/`int` subclasses: a member compares equal to its literal and serialises
(JSON, msgpack) as the bare string or number, so frames and bodies are byte-identical to
literals.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime


class ErrorCode(enum.StrEnum):
    """`code` of a WebSocket `error` frame, `error` of a REST error body."""

    # Chat socket (docs/protocol.md, Errors).
    BAD_REQUEST = "bad_request"
    TOO_LONG = "too_long"
    BUSY = "busy"
    OVERLOADED = "overloaded"
    GENERATION_FAILED = "generation_failed"
    # Both the chat socket and the REST API.
    RATE_LIMITED = "rate_limited"
    HUNT_NOT_LIVE = "hunt_not_live"
    NOT_FOUND = "not_found"
    # REST API (docs/api.md, Errors).
    INVALID = "invalid"
    INVALID_PHRASE = "invalid_phrase"
    BAD_CREDENTIALS = "bad_credentials"
    NOT_AUTHENTICATED = "not_authenticated"
    REGISTRATION_CLOSED = "registration_closed"
    CSRF_FAILED = "csrf_failed"
    FORBIDDEN = "forbidden"
    WORDS_MISSING = "words_missing"
    ERROR = "error"


class CloseCode(enum.IntEnum):
    """Refusals of a socket's handshake, and the flood cut-off. A refusal is sent by accepting
    and closing at once: a close before accept() reaches a client as a bare HTTP 403 and the
    code would be lost.

    Close with `.value`, the plain int: Daphne's autobahn refuses a close code whose type is
    not exactly int, and the client would get 1011 instead.
    """

    NOT_AUTHENTICATED = 4401
    NOT_OPEN = 4403
    UNKNOWN = 4404  # no avatar (chat) or no hunt (leaderboard) with this slug
    TOO_MANY_SOCKETS = 4409  # this account or address already has its most open sockets
    FLOOD = 4429


GENERATION_FAILED_DETAIL = "The avatar could not answer; please ask again."


def iso_ms(moment: datetime) -> str:
    """An aware datetime as every time on the wire is written: ISO 8601 in UTC, exactly
    milliseconds, `Z` (`2026-12-01T13:04:44.123Z`); fixed width, so strings sort as times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def error_frame(code: ErrorCode, detail: str, **fields) -> dict:
    """`{"type": "error", "code", "detail"}` plus `reply_to`, `client_id` or `retry_after`."""
    return {"type": "error", "code": code, "detail": detail, **fields}


def token_frame(reply_to: int, text: str) -> dict:
    return {"type": "token", "reply_to": reply_to, "text": text}


def reply_frame(reply_to: int, message_id: int, text: str) -> dict:
    return {"type": "reply", "reply_to": reply_to, "message_id": message_id, "text": text}


def discovery_frame(position: int, word: str, hunt: str | None, first: bool) -> dict:
    return {"type": "discovery", "position": position, "word": word, "hunt": hunt, "first": first}


def announcement_frame(hunt: str, text: str, at: datetime) -> dict:
    """What the organizers broadcast to every player connected to the hunt's avatars."""
    return {"type": "announcement", "hunt": hunt, "text": text, "at": iso_ms(at)}


def hunt_players_group(hunt_id: int) -> str:
    """The group every chat socket to an avatar of the hunt joins: announcements go there."""
    return f"hunt.{hunt_id}.players"


def chat_event(frame: dict) -> dict:
    """The group event that carries `frame` from the turn pipeline to the chat sockets of a
    conversation: `chat.<frame type>`, which the consumer's `chat_<frame type>` relays."""
    return {**frame, "type": f"chat.{frame['type']}"}


def failed_event(reply_to: int) -> dict:
    """The group event ending a turn that produced no reply; relayed as a `generation_failed`
    error frame."""
    return {"type": "chat.failed", "reply_to": reply_to, "detail": GENERATION_FAILED_DETAIL}
