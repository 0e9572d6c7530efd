"""GET /api/v1/avatars/{slug}/messages: the caller's own conversation, paged back in time past
what the chat socket's `hello` holds (docs/api.md)."""

from __future__ import annotations

import pytest

from avatars.chat import hello_frame
from avatars.models import Avatar, Conversation, Message
from hunt.models import ApiToken
from tests.hunt_helpers import bearer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_hashing")]

URL = "/api/v1/avatars/old-marta/messages"


def thread(player, exchanges: int, avatar_slug: str = "old-marta") -> list[int]:
    conversation = Conversation.objects.create(
        player=player, avatar=Avatar.objects.get(slug=avatar_slug)
    )
    ids = []
    for n in range(exchanges):
        asked = Message.objects.create(
            conversation=conversation, role="player", text=f"Q{n}", client_id=f"c{n}"
        )
        answer = Message.objects.create(
            conversation=conversation, role="avatar", text=f"A{n}", reply_to=asked
        )
        ids += [asked.pk, answer.pk]
    return ids


@pytest.fixture
def ann(make_player, demo_hunt):
    return make_player("ann")


def test_it_pages_the_callers_conversation_back_oldest_first(client, ann):
    ids = thread(ann, 5)
    client.force_login(ann.user)
    newest = client.get(URL, {"limit": 4}).json()
    assert [m["id"] for m in newest["messages"]] == ids[-4:]
    assert newest["more"] is True
    older = client.get(URL, {"limit": 4, "before": ids[-4]}).json()
    assert [m["id"] for m in older["messages"]] == ids[-8:-4]
    oldest = client.get(URL, {"limit": 4, "before": ids[-8]}).json()
    assert ([m["id"] for m in oldest["messages"]], oldest["more"]) == (ids[:2], False)


def test_its_items_are_those_of_hello(client, ann, settings):
    settings.HELLO_HISTORY_LIMIT = 3
    thread(ann, 2)
    conversation = Conversation.objects.get(player=ann)
    hello = hello_frame(conversation.pk)
    client.force_login(ann.user)
    body = client.get(URL, {"limit": 3}).json()
    assert body == {"messages": hello["history"], "more": hello["history_more"]}


def test_it_never_shows_another_players_messages(client, ann, make_player):
    theirs = thread(make_player("rival"), 3)
    client.force_login(ann.user)
    assert client.get(URL).json() == {"messages": [], "more": False}
    mine = thread(ann, 1)
    # Not even when `before` points past the rival's messages.
    body = client.get(URL, {"before": max(theirs) + 100}).json()
    assert [m["id"] for m in body["messages"]] == mine


def test_a_bearer_token_reads_it_too(client, ann):
    ids = thread(ann, 1)
    response = client.get(URL, **bearer(ApiToken.issue(ann.user)))
    assert [m["id"] for m in response.json()["messages"]] == ids


def test_it_needs_a_player(client, demo_hunt):
    response = client.get(URL)
    assert (response.status_code, response.json()["error"]) == (401, "not_authenticated")


def test_an_unknown_or_unpublished_avatar_is_not_found(client, ann):
    Avatar.objects.filter(slug="old-marta").update(published=False)
    client.force_login(ann.user)
    assert client.get(URL).status_code == 404
    assert client.get("/api/v1/avatars/nobody/messages").status_code == 404


@pytest.mark.parametrize("limit", [0, 101, "x"])
def test_a_bad_limit_is_invalid(client, ann, limit):
    client.force_login(ann.user)
    response = client.get(URL, {"limit": limit})
    assert (response.status_code, response.json()["error"]) == (400, "invalid")
