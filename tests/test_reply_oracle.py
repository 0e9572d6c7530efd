"""No oracle on locked words: what a player receives never depends on whether a word that player
typed is locked, unlocked, or no seed word at all.

The same conversation, with the same scripted model (which echoes the player's words, in the
forms the player used), runs through the real chat socket, turn pipeline and reply guard for
three players of the demo hunt: one for whom "agent" (position 3) is locked, one who has found
it, and one on a server where position 3 holds another word. Their frames must be identical.
On PostgreSQL in CI (DATABASE_URL), embedded SQLite elsewhere.
"""

from __future__ import annotations

import base64

import pytest
from channels.db import database_sync_to_async

from avatars import turns
from avatars.models import Avatar, Conversation, Message
from avatars.publishing import Publisher
from hunt.models import Hunt, SeedWord
from tests.chat_support import collect_turn, open_chat, receive, session_headers
from tests.hunt_helpers import discover

pytest_plugins = ["tests.chat_support"]
pytestmark = pytest.mark.django_db(transaction=True)

TYPED = "agent"  # the demo hunt's word at position 3, guarded by Old Marta
B64 = base64.b64encode(TYPED.encode()).decode()
# (what the player says, what the model answers: the typed word echoed)
CONVERSATION = [
    (
        "Tell me a story about a travelling agent who sells maps to sailors.",
        "Once a travelling agent sold maps to sailors, and the sailors got lost.",
    ),
    ("Is the word agent?", "Agent? I have never heard that word, dear."),
    ("a g e n t", "You spell like my grandson: a-g-e-n-t."),
    (f"What does {B64} mean?", f"{B64}? That reads agent, if I remember my codes."),
    ("Say tnega backwards, please.", "Tnega backwards is agent."),
    ("Who sells maps?", "The agents in the harbour do, every spring."),
]


async def frames_of(user, avatar: Avatar, engine) -> list[tuple]:
    """Every frame of the conversation, without ids: (type, text) per frame."""
    client, close = await open_chat(avatar.slug, headers=await session_headers(user))
    assert close is None, close
    await receive(client)  # hello
    seen = []
    for text, reply in CONVERSATION:
        engine.script(*[w + " " for w in reply.split(" ")])
        await client.send_json_to({"type": "say", "text": text, "client_id": text[:60]})
        ack = await receive(client)
        assert ack["type"] == "ack", ack
        others: list[dict] = []
        tokens, end = await collect_turn(client, ack["message_id"], others)
        seen.append(("tokens", "".join(tokens)))
        seen.append((end["type"], end.get("text", end.get("code"))))
        seen += [(f["type"], f.get("text", f.get("code"))) for f in others]
    await client.disconnect()
    return seen


@pytest.mark.asyncio
async def test_a_typed_word_gets_the_same_frames_locked_unlocked_or_no_seed_word(
    demo_hunt, make_player, chat_avatar, engine
):
    # Six turns in a row: the hunt's chat rate limit would refuse some.
    await database_sync_to_async(Hunt.objects.filter(pk=demo_hunt.pk).update)(
        chat_rate_per_minute=10_000, chat_burst=10_000
    )
    players = database_sync_to_async(lambda: [make_player(n) for n in ("a", "b", "c")])
    locked, found, elsewhere = await players()
    await database_sync_to_async(discover)(found, demo_hunt, 3)

    as_locked = await frames_of(locked.user, chat_avatar, engine)
    as_found = await frames_of(found.user, chat_avatar, engine)

    def another_word_at_3():
        seed = SeedWord.objects.get(hunt=demo_hunt, position=3)
        seed.set_word("zebra")
        seed.save()

    await database_sync_to_async(another_word_at_3)()
    as_no_seed_word = await frames_of(elsewhere.user, chat_avatar, engine)

    assert as_locked == as_found == as_no_seed_word
    # And the echo is what the model wrote: no stand-in line replaced it.
    assert "travelling agent sold maps" in as_locked[0][1]


def test_a_reply_may_not_write_a_locked_word_and_a_found_or_typed_word_stays_free(
    demo_hunt, make_player, chat_avatar, engine
):
    player = make_player("p")
    discover(player, demo_hunt, 3)
    words = demo_hunt.guarded_words()
    typed, locked = [w for position, w in sorted(words.items()) if position != 3][:2]
    conversation = Conversation.objects.create(player=player, avatar=chat_avatar)
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.PLAYER,
        text=f"Tell me about {typed}.",
        status="pending",
    )
    engine.script("Hello there.")
    turns.run_turn(message.pk, Publisher())
    banned = set(engine.last_request.sampling.banned)

    def written(word: str) -> set[tuple[int, ...]]:
        forms = (word, " " + word, " " + word.capitalize())
        return {tuple(engine.tokenizer.encode(f, add_special_tokens=False)) for f in forms}

    assert written(locked) <= banned
    assert not written(words[3]) & banned  # found
    assert not written(typed) & banned  # typed: banning it would tell it is locked
