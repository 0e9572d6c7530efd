"""What goes over the wire (lostwallet/wire.py): the one time format, and codes that cannot
drift from the docs' tables."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from lostwallet.wire import (
    CloseCode,
    ErrorCode,
    chat_event,
    error_frame,
    failed_event,
    iso_ms,
    token_frame,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def table_column(doc: str, heading: str, column: int) -> list[str]:
    """The backticked values in one column of the table under `## heading`."""
    section = re.split(r"^## ", (DOCS / doc).read_text(), flags=re.M)
    [text] = [s for s in section if s.startswith(heading + "\n")]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) > 2, f"no table under {heading} in {doc}"
    cells = [row.strip("|").split("|")[column] for row in rows[2:]]  # past header and ---
    return [value for cell in cells for value in re.findall(r"`([^`]+)`", cell)]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 12, 1, 14, 4, 44, 123456, tzinfo=ZoneInfo("Europe/Paris")), ".123Z"),
        (datetime(2026, 12, 1, 8, 4, 44, 999999, tzinfo=ZoneInfo("America/New_York")), ".999Z"),
        (datetime(2026, 12, 1, 13, 4, 44, tzinfo=UTC), ".000Z"),
        (datetime(2026, 12, 1, 18, 34, 44, 500, tzinfo=timezone(timedelta(hours=5.5))), ".000Z"),
    ],
    ids=["paris", "new-york-truncated-not-rounded", "whole-second", "fixed-offset"],
)
def test_iso_ms_writes_utc_with_exactly_milliseconds_and_z(moment, expected):
    assert iso_ms(moment) == "2026-12-01T13:04:44" + expected


def test_iso_ms_reads_back_as_the_same_moment_to_the_millisecond():
    moment = datetime(2026, 6, 30, 23, 59, 59, 987654, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert datetime.fromisoformat(iso_ms(moment)) == moment.replace(microsecond=987000)


def test_every_error_code_is_documented_for_the_chat_socket_or_the_rest_api():
    documented = set(table_column("protocol.md", "Errors", 0))
    documented |= set(table_column("api.md", "Errors", 1))
    assert documented == set(ErrorCode)


def test_the_close_codes_of_protocol_md_are_the_close_codes():
    # Only the application range (RFC 6455 §7.4.2): 1006, 1011 are the network's, not ours.
    documented = {int(v) for v in table_column("protocol.md", "Connecting", 0) if v.isdigit()}
    assert {code for code in documented if 4000 <= code < 5000} == set(CloseCode)


def test_codes_serialise_as_their_bare_literals():
    frame = error_frame(ErrorCode.RATE_LIMITED, "Slow down.", retry_after=3, client_id="a1")
    literal = {
        "type": "error",
        "code": "rate_limited",
        "detail": "Slow down.",
        "retry_after": 3,
        "client_id": "a1",
    }
    assert json.dumps(frame) == json.dumps(literal)
    assert json.dumps({"code": CloseCode.FLOOD}) == '{"code": 4429}'


def test_a_chat_event_is_its_frame_under_the_groups_type():
    assert chat_event(token_frame(40, "Whale oil")) == {
        "type": "chat.token",
        "reply_to": 40,
        "text": "Whale oil",
    }
    assert list(chat_event(token_frame(40, "x"))) == ["type", "reply_to", "text"]
    assert failed_event(40)["type"] == "chat.failed"
