"""The chat app's REST endpoints, mounted on the contract's API (hunt/api.py) under
/api/v1/avatars/ by lostwallet/urls.py: the game's API never imports the chat app.

`GET /avatars/{slug}/messages` pages the caller's own conversation back in time, past what
the chat socket's `hello` holds (HELLO_HISTORY_LIMIT messages).
"""

from __future__ import annotations

from typing import Literal

from django.http import Http404
from ninja import Field, Query, Router, Schema

from avatars.chat import avatar_open_to, history_page
from avatars.models import Avatar, Conversation
from hunt.api import PLAYER_AUTH, errors

MAX_PAGE = 100

router = Router(tags=["player"])


class MessageOut(Schema):
    """A `hello.history` item (docs/protocol.md)."""

    id: int
    role: Literal["player", "avatar"]
    text: str
    created_at: str
    status: Literal["pending", "generating", "done", "failed"] | None = None
    client_id: str | None = None
    reply_to: int | None = None


class MessagesOut(Schema):
    messages: list[MessageOut]
    more: bool


class PageIn(Schema):
    before: int | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)


@router.get(
    "/{slug}/messages",
    response={200: MessagesOut, **errors(400, 401, 404)},
    auth=PLAYER_AUTH,
    exclude_none=True,
    description="The caller's own conversation with this avatar: the newest `limit` (1 to "
    f"{MAX_PAGE}, default 50) messages before message `before` (or the newest), oldest "
    "first, and `more` when older ones exist. Page back with `before` = the first id.",
)
def avatar_messages(request, slug: str, page: Query[PageIn]):
    avatar = Avatar.objects.filter(slug=slug).first()
    # An avatar not open to the caller is as unknown as one that does not exist: an unpublished
    # avatar's slug is not public.
    if avatar is None or not avatar_open_to(avatar, request.auth):
        raise Http404
    # Only the caller's conversation: the (player, avatar) pair is the whole lookup.
    conversation = Conversation.objects.filter(player__user=request.auth, avatar=avatar).first()
    if conversation is None:
        return {"messages": [], "more": False}
    messages, more = history_page(conversation.pk, page.limit, page.before)
    return {"messages": messages, "more": more}
