"""Chat actions: what the chat socket and the chat page do to the database.

Synchronous on purpose: the consumer calls them through `database_sync_to_async`, tests and
scripts call them directly. Frames are built here too, so the consumer stays a thin relay.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

# Imported here, not at the first say: loading the turn pipeline is seconds of work that
# must not stall a running server's event loop in the middle of traffic.
from avatars import tasks
from avatars.engine.prompts import message_tokens
from avatars.models import Avatar, Conversation, Feedback, Message
from hunt.attack_patterns import attack_kind
from hunt.models import Activity, Discovery, Hunt, Incident, Player
from lostwallet import ratelimit
from lostwallet.wire import CloseCode, ErrorCode, iso_ms

# `retry_after` of an `overloaded` refusal: about the time the model takes to clear a few turns.
OVERLOADED_RETRY_AFTER = 10


class ConversationBusy(Exception):
    """The conversation already has a turn whose reply is not finished."""


@dataclass(frozen=True)
class SayOutcome:
    """What became of a `say`: stored (message_id, created) or refused (`refusal`)."""

    message_id: int | None = None
    created: bool = False
    # TOO_LONG, HUNT_NOT_LIVE (paused), BUSY, OVERLOADED or RATE_LIMITED
    refusal: ErrorCode | None = None
    retry_after: int | None = None
    hunt_live: bool = True


@dataclass(frozen=True)
class ChatSession:
    """What one socket needs to remember about its conversation."""

    conversation_id: int
    group: str
    player_id: int
    hunt_id: int | None
    hunt_slug: str | None
    rate_per_minute: int
    burst: int
    address: str = ""  # the client's address (bucket), for the console's incident list


def avatar_open_to(avatar: Avatar, user) -> bool:
    """Published avatars are open to every player; unpublished ones only to their owner and to
    staff, who try them out before opening them."""
    return avatar.published or user.is_staff or avatar.owner_id == user.pk


def chat_limits(hunt: Hunt | None) -> tuple[int, int]:
    """(says per minute, burst) for a player chatting with an avatar of `hunt`."""
    if hunt is None:
        fields = Hunt._meta
        return (
            fields.get_field("chat_rate_per_minute").default,
            fields.get_field("chat_burst").default,
        )
    return hunt.chat_rate_per_minute, hunt.chat_burst


def open_conversation(
    user, avatar_slug: str, address: str | None = None
) -> tuple[CloseCode | None, ChatSession | None]:
    """Authorises a handshake and finds or starts the (player, avatar) conversation.

    Returns (close code, None) when refused (contract §3.1), else (None, session).
    """
    if not user.is_authenticated:
        return CloseCode.NOT_AUTHENTICATED, None
    avatar = Avatar.objects.select_related("hunt").filter(slug=avatar_slug).first()
    if avatar is None:
        return CloseCode.UNKNOWN, None
    if not avatar_open_to(avatar, user):
        return CloseCode.NOT_OPEN, None
    player = Player.for_user(user)
    # Race: two tabs of one player opening this avatar at once. The unique (player, avatar)
    # constraint makes the loser's insert fail, and get_or_create then reads the winner's row.
    # Talking to an unpublished avatar is trying it out: a sandbox conversation, never play.
    conversation, _created = Conversation.objects.get_or_create(
        player=player, avatar=avatar, defaults={"sandbox": not avatar.published}
    )
    rate, burst = chat_limits(avatar.hunt)
    # A sandbox conversation plays in no hunt: it counts in none of the console's figures,
    # hears no announcement and is not stopped by a pause.
    hunt = None if conversation.sandbox else avatar.hunt
    return None, ChatSession(
        conversation_id=conversation.pk,
        group=conversation.group_name(),
        player_id=player.pk,
        hunt_id=hunt.pk if hunt else None,
        hunt_slug=hunt.slug if hunt else None,
        rate_per_minute=rate,
        burst=burst,
        address=address or "",
    )


def message_frame(message: Message) -> dict:
    """One `hello.history` item. `client_id`, `status` and `reply_to` are additive fields: they
    let a reconnecting client match its unacknowledged sends and failed turns."""
    item = {
        "id": message.pk,
        "role": message.role,
        "text": message.text,
        "created_at": iso_ms(message.created_at),
    }
    if message.role == Message.Role.PLAYER:
        item["status"] = message.status
        if message.client_id:
            item["client_id"] = message.client_id
    else:
        item["reply_to"] = message.reply_to_id
    return item


def history_page(
    conversation_id: int, limit: int | None, before: int | None = None
) -> tuple[list, bool]:
    """The newest `limit` messages (all when None) of a conversation's thread (those before
    message `before` when given), oldest first as `hello.history` items, and whether older
    ones exist."""
    rows = Message.objects.thread(conversation_id)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    if limit is None:
        return [message_frame(m) for m in rows.order_by("id")], False
    # One row more than asked tells whether older ones exist, without a count.
    page = list(rows.order_by("-id")[: limit + 1])
    return [message_frame(m) for m in reversed(page[:limit])], len(page) > limit


def hello_frame(conversation_id: int) -> dict:
    """The first frame of a connection: the thread's messages (the newest HELLO_HISTORY_LIMIT
    when the operator bounds it; older ones are paged over REST, avatars/api.py), this
    player's words from this avatar, and the turn still being answered.

    Guarded words: `discoveries` holds only Discovery rows of this player, and history holds
    only stored texts of this conversation (replies that passed the gate's guard), so no word
    reaches a player here before that player unlocked it.
    """
    conversation = Conversation.objects.select_related("avatar__hunt").get(pk=conversation_id)
    avatar = conversation.avatar
    history, more = history_page(conversation.pk, settings.HELLO_HISTORY_LIMIT or None)
    pending = (
        Message.objects.waiting()
        .filter(conversation=conversation)
        .order_by("-id")
        .values_list("pk", flat=True)
        .first()
    )
    discoveries = (
        Discovery.objects.filter(player_id=conversation.player_id)
        .filter(Q(clue__avatar=avatar) | Q(message__conversation=conversation))
        .select_related("word")
        .order_by("word__position")
    )
    hunt = avatar.hunt
    return {
        "type": "hello",
        "conversation_id": conversation.pk,
        "avatar": {"slug": avatar.slug, "name": avatar.name, "greeting": avatar.shown_greeting},
        "history": history,
        # Additive: older messages exist (GET /api/v1/avatars/<slug>/messages?before=<id>).
        "history_more": more,
        "discoveries": [
            # This player discovered the word: showing it in clear is the point.
            {"position": d.word.position, "word": d.word.reveal_word()}
            for d in discoveries
        ],
        "pending": pending,
        # Additive: lets a client say "the hunt has not started" before the player asks.
        "hunt": (
            None
            if hunt is None
            else {
                "slug": hunt.slug,
                "title": hunt.title,
                "status": str(hunt.status),
                "paused": hunt.paused,
            }
        ),
    }


def find_say(conversation_id: int, client_id: str) -> Message | None:
    return Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.PLAYER, client_id=client_id
    ).first()


def is_busy(conversation_id: int) -> bool:
    return Message.objects.waiting().filter(conversation_id=conversation_id).exists()


def is_overloaded() -> bool:
    """More than MAX_WAITING_TURNS player messages wait for the model, all conversations
    together: a new turn would only wait out its queue deadline and fail.

    Counted in the database, not in a cache counter: the message rows are the truth (a worker
    killed mid-turn or a lost job cannot leave a counter wrong), and the query reads only the
    waiting rows through the `message_status` index, a few hundred at most.
    Race: two says near the cap both read a count under it and both store; the cap may be
    overshot by about as many says as arrive at once, which a load shedder can afford.
    """
    return Message.objects.waiting().count() >= settings.MAX_WAITING_TURNS


def do_say(
    conversation_id: int, text: str, client_id: str | None, hunt_id: int | None = None
) -> tuple[Message, bool]:
    """Stores a player's message and starts its reply once the row is committed; counts it in
    the hunt's activity (`hunt_id`: the hunt this conversation plays in, None for a sandbox).

    Returns (message, created). A `client_id` already used in this conversation returns the
    original message with created=False and starts nothing. Raises ConversationBusy while an
    earlier turn of this conversation is still being answered.
    """
    try:
        with transaction.atomic():
            # Race: two sockets of one player saying at once (two tabs, or a resend after a
            # reconnect). The UPDATE locks the conversation row until commit, which makes the
            # client_id lookup, the busy check and the insert one step per conversation.
            # (SQLite has no row locks; its IMMEDIATE transactions take the database write lock
            # at BEGIN instead.)
            now = timezone.now()
            Conversation.objects.filter(pk=conversation_id).update(updated_at=now)
            if client_id and (original := find_say(conversation_id, client_id)):
                return original, False
            if is_busy(conversation_id):
                raise ConversationBusy
            message = Message.objects.create(
                conversation_id=conversation_id,
                role=Message.Role.PLAYER,
                text=text,
                client_id=client_id,
                status=Message.Status.PENDING,
            )
            if hunt_id is not None:  # play, not a sandbox nor an avatar outside hunts
                Conversation.objects.filter(pk=conversation_id).update(last_said_at=now)
                Activity.bump(hunt_id, messages=1)
            # Runs after commit: a worker never looks for a row it cannot see yet.
            tasks.enqueue_reply(message)
    except IntegrityError:
        # Race: the same client_id stored by another socket between our lookup and insert on
        # a database where the row lock above did not serialise us; the unique
        # (conversation, client_id) constraint refused the copy, so answer the original.
        original = find_say(conversation_id, client_id) if client_id else None
        if original is None:
            raise
        return original, False
    return message, True


def say(session: ChatSession, text: str, client_id: str | None) -> SayOutcome:
    """A well-formed `say` frame, start to end, in one trip to the database thread.

    Order: the message's length in the model's tokens (CHAT_MAX_TOKENS; counted here, off the
    event loop); a resent client_id gets its original ack before any other limit (the client
    only wants to know its message is stored); then a paused hunt, busy and the server's load,
    before the rate limit, so that a refused say does not spend the player's budget; then the
    rate limit, per player across sockets and avatars (atomic in Redis when configured); then
    the store, which checks busy again under lock (a race lost there costs the player one unit
    of rate).
    """
    if message_tokens(text) > settings.CHAT_MAX_TOKENS:
        return SayOutcome(refusal=ErrorCode.TOO_LONG)
    conversation_id = session.conversation_id
    # Busy is read before the client_id lookup. Race: another socket storing this very
    # client_id between the two reads; in this order the lookup sees it and acks, in the other
    # order this socket would call the player's own message "busy".
    busy = is_busy(conversation_id)
    if client_id and (original := find_say(conversation_id, client_id)):
        return SayOutcome(message_id=original.pk)
    hunt = (
        Hunt.objects.filter(pk=session.hunt_id).only("starts_at", "ends_at", "paused").first()
        if session.hunt_id is not None
        else None
    )
    if hunt is not None and hunt.paused:
        # The organizers stopped the event: nothing is stored, no rate is spent.
        return SayOutcome(refusal=ErrorCode.HUNT_NOT_LIVE)
    if busy:
        return SayOutcome(refusal=ErrorCode.BUSY)
    if is_overloaded():
        return SayOutcome(refusal=ErrorCode.OVERLOADED, retry_after=OVERLOADED_RETRY_AFTER)
    wait = ratelimit.hit(f"chat:{session.player_id}", session.rate_per_minute, session.burst)
    if wait is not None:
        note_incident(session, Incident.Kind.RATE_LIMITED)
        retry_after = ratelimit.retry_after_seconds(wait)
        return SayOutcome(refusal=ErrorCode.RATE_LIMITED, retry_after=retry_after)
    try:
        message, created = do_say(conversation_id, text, client_id, session.hunt_id)
    except ConversationBusy:
        return SayOutcome(refusal=ErrorCode.BUSY)
    if created and session.hunt_id is not None and (kind := attack_kind(text)):
        # For the organizers' attack panel only: the turn goes on exactly as any other.
        note_incident(session, Incident.Kind.ATTACK, message_id=message.pk, detail=kind)
    live = session.hunt_id is None or (hunt is not None and hunt.is_live())
    return SayOutcome(message_id=message.pk, created=created, hunt_live=live)


def note_incident(session: ChatSession, kind: str, **fields) -> None:
    """Lists something this socket's player did on the hunt's console (nothing for an avatar
    outside a hunt)."""
    if session.hunt_id is not None:
        Incident.note(kind, session.hunt_id, session.player_id, session.address, **fields)


def do_rate(conversation_id: int, player_id: int, message_id: int, value: int) -> bool:
    """Stores thumbs up/down on an avatar message of this conversation; False when there is
    no such message. A player changing their mind updates the one row."""
    message = (
        Message.objects.filter(
            pk=message_id,
            conversation_id=conversation_id,
            role=Message.Role.AVATAR,
            status=Message.Status.DONE,
        )
        .select_related("conversation")
        .first()
    )
    if message is None:
        return False
    # Race: two rates of one message at once; update_or_create retries the read when the
    # unique (message, player) constraint refuses the second insert.
    Feedback.objects.update_or_create(
        message=message,
        player_id=player_id,
        defaults={"value": value},
        create_defaults={
            "value": value,
            "avatar_id": message.conversation.avatar_id,
            "model": message.model,
            "model_version_id": message.model_version_id,
        },
    )
    return True
