"""What goes over the wire (lostwallet/wire.py): codes that cannot drift from the docs'
tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lostwallet.wire import (
    CloseCode,
    ErrorCode,
    chat_event,
    error_frame,
    failed_event,
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
