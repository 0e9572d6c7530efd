"""A played database gives no seed word away: after a playthrough that discovers every word the
demo hunt guards, through the real chat socket and turn pipeline, a database dump holds none of
the 24 words, plain or in the hex or base64 the leak detector reads; nor do the events that
cross the channel layer (Redis in production). On PostgreSQL in CI (pg_dump), on SQLite
elsewhere (sqlite3 .dump).
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from channels.db import database_sync_to_async

from avatars import publishing
from avatars.models import Conversation, Message
from hunt.models import Discovery, Hunt
from tests.chat_support import (
    ScriptedEngine,
    collect_turn,
    open_chat,
    receive,
    session_headers,
)
from tests.conftest import DEMO_HUNT
from tests.test_secrets_at_rest import database_dump, demo_phrase, words_in

pytest_plugins = ["tests.chat_support"]
pytestmark = pytest.mark.django_db(transaction=True)

# Long enough that a few turns no longer fit the prompt budget below: the oldest turns, the
# reveal among them, are folded into the conversation's summary, which is stored too.
CHATTER = "The sea was grey this morning and the gulls were loud over the harbour wall. " * 3


def right_questions() -> list[tuple[str, int, str]]:
    """(avatar slug, position, a right question) for every clue of the demo hunt, in an order
    that meets each clue's prerequisites."""
    doc = json.loads(DEMO_HUNT.read_text())
    clues = [(a["slug"], c) for a in doc["avatars"] for c in a.get("clues", [])]
    ordered, found = [], set()
    while clues:
        ready = [(s, c) for s, c in clues if set(c.get("requires", [])) <= found]
        for slug, clue in ready:
            ordered.append((slug, clue["position"], clue["questions"][0]))
            found.add(clue["position"])
            clues.remove((slug, clue))
    return ordered


class ObedientEngine(ScriptedEngine):
    """Says the word first when the prompt's reveal instruction holds one, as a model following
    the gate's instruction in its own voice does (so the summary's quote of the turn holds it
    too), then chats on."""

    def submit(self, request):
        prompt = self.tokenizer.decode(list(request.prompt_ids), skip_special_tokens=True)
        # The demo's reveal lines end with the word: '... one word for it: agent."'
        word = re.search(r'say this to the visitor, in your own voice: ".*?(\w+)\W*"', prompt)
        self.script(*([f"It is {word.group(1)}, friend. "] if word else []), "Very well. ", CHATTER)
        return super().submit(request)


async def play(headers, slug: str, texts: list[str], engine) -> list[dict]:
    client, close = await open_chat(slug, headers=headers)
    assert close is None, close
    await receive(client)  # hello
    frames = []
    for text in texts:
        await client.send_json_to({"type": "say", "text": text})
        ack = await receive(client)
        assert ack["type"] == "ack", ack
        others: list[dict] = []
        _tokens, end = await collect_turn(client, ack["message_id"], others)
        frames += [end, *others]
    await client.disconnect()
    return frames


async def test_a_played_database_and_its_events_hold_no_seed_word(
    demo_hunt, make_player, settings, monkeypatch
):
    engine = ObedientEngine()
    monkeypatch.setattr("avatars.engine.get_engine", lambda model=None: engine)
    settings.AVATAR_PROMPT_BUDGET = 420
    await database_sync_to_async(Hunt.objects.filter(pk=demo_hunt.pk).update)(
        chat_rate_per_minute=10_000, chat_burst=10_000
    )
    events: list[dict] = []
    send = publishing.Publisher.send
    monkeypatch.setattr(
        publishing.Publisher,
        "send",
        lambda self, group, event: events.append(event) or send(self, group, event),
    )
    player = await database_sync_to_async(make_player)("finder")
    headers = await session_headers(player.user)
    frames = []
    for slug, _position, question in right_questions():
        chatter = ["Tell me about your day.", "And the weather?", "Thank you, goodbye."]
        frames += await play(headers, slug, [question, *chatter], engine)

    guarded = await database_sync_to_async(lambda: list(demo_hunt.guarded_words().values()))()
    found = await database_sync_to_async(Discovery.objects.filter(player=player).count)()
    assert found == len(guarded)  # the player found every word, and saw each one:
    assert {f["word"] for f in frames if f["type"] == "discovery"} == set(guarded)
    # The replies and a summary did hold the words (read in clear through the model)...
    replies = await database_sync_to_async(
        lambda: [m.text for m in Message.objects.filter(role="avatar")]
    )()
    assert all(any(w in r for r in replies) for w in guarded)
    summaries = await database_sync_to_async(
        lambda: [c.summary for c in Conversation.objects.filter(player=player)]
    )()
    assert any(w in s for s in summaries for w in guarded), summaries

    # ... yet neither the dump nor the events crossing the channel layer give any word away.
    dump = await database_sync_to_async(database_dump)()
    assert "lost-wallet" in dump  # the dump did capture the hunt
    sent = json.dumps(events)
    assert events and words_in(sent) == []
    for stored in (dump, sent):
        assert words_in(stored) == [] and encoded_words_in(stored) == []


def encoded_words_in(text: str) -> list[str]:
    """The demo phrase's words found hex- or base64-encoded in `text`. Looked up as encodings
    rather than through the leak detector's decoders: those read sealed texts (random bytes)
    as text too, and then find short words in them by chance."""
    lowered = text.lower()
    return [
        word
        for word in demo_phrase()
        if word.encode().hex() in lowered
        or base64.b64encode(word.encode()).decode().rstrip("=") in text
    ]
