"""The chat app's REST endpoints, mounted on the contract's API (hunt/api.py) under
/api/v1/avatars/ and /api/v1/creator/ by lostwallet/urls.py: the game's API never imports the
chat app.

`GET /avatars/{slug}/messages` pages the caller's own conversation back in time, past what
the chat socket's `hello` holds (HELLO_HISTORY_LIMIT messages).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from ninja import Field, File, Query, Router, Schema, Status, UploadedFile

from avatars import cards, studio
from avatars.cards import CardError
from avatars.chat import avatar_open_to, history_page
from avatars.engine.prompts import persona_tokens
from avatars.models import Avatar, Conversation
from avatars.studio import (
    AUTHORED,
    DraftForm,
    creator_avatars,
    do_create_draft,
    do_import_card,
    do_revise,
    do_submit,
    do_update_draft,
    export_card,
    is_creator,
)
from hunt.api import PLAYER_AUTH, ApiError, errors
from lostwallet.wire import ErrorCode

MAX_PAGE = 100
MAX_METER_CHARS = 20_000

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


# --- the creator studio (avatars/studio.py, docs/creators.md) -------------------------------

studio_router = Router(tags=["creator"])


class DraftIn(Schema):
    name: str
    persona: str
    greeting: str = ""
    examples: str = ""
    land: str = ""
    latitude: float | None = None
    longitude: float | None = None


class DraftOut(Schema):
    """An avatar as its creator sees it: never its hunt's clues or words."""

    slug: str
    name: str
    persona: str
    greeting: str
    examples: str
    land: str
    latitude: float | None
    longitude: float | None
    published: bool
    review: Literal["", "draft", "submitted", "returned", "approved"]
    review_comment: str
    revision_of: str | None
    has_portrait: bool
    updated_at: datetime


class MeterIn(Schema):
    persona: str
    greeting: str = ""
    examples: str = ""


class MeterOut(Schema):
    tokens: int
    room: int


def draft_out(avatar: Avatar) -> dict:
    return {
        **{f: getattr(avatar, f) for f in (*AUTHORED, "slug", "published", "review")},
        "review_comment": avatar.review_comment,
        "revision_of": avatar.revision_of.slug if avatar.revision_of_id else None,
        "has_portrait": bool(avatar.portrait),
        "updated_at": avatar.updated_at,
    }


def creator_of(request):
    """The caller, refused (403) unless a creator."""
    if not is_creator(request.auth):
        raise ApiError(403, ErrorCode.FORBIDDEN, "Only creators use the studio.")
    return request.auth


def own_avatar(request, slug: str) -> Avatar:
    return studio.own_avatar(creator_of(request), slug)


def refused(exc: ValidationError | CardError) -> ApiError:
    if isinstance(exc, CardError):
        return ApiError(400, ErrorCode.INVALID, str(exc))
    if hasattr(exc, "error_dict"):
        detail = "; ".join(
            f"{field}: {' '.join(m for e in errors for m in e.messages)}"
            for field, errors in exc.error_dict.items()
        )
    else:
        detail = " ".join(exc.messages)
    return ApiError(400, ErrorCode.INVALID, detail)


@studio_router.get("/avatars", response={200: list[DraftOut], **errors(401, 403)}, auth=PLAYER_AUTH)
def list_avatars(request):
    rows = creator_avatars(creator_of(request)).select_related("revision_of")
    return [draft_out(a) for a in rows]


@studio_router.post(
    "/avatars",
    response={201: DraftOut, **errors(400, 401, 403)},
    auth=PLAYER_AUTH,
    description="A new draft, checked like every save: the persona with greeting and examples "
    "fits the prompt budget, name and persona are not empty, no other avatar has the name.",
)
def create_avatar(request, payload: DraftIn):
    creator = creator_of(request)
    form = DraftForm(data=payload.dict())
    if not form.is_valid():
        raise refused(ValidationError(form.errors.as_data()))
    return Status(201, draft_out(do_create_draft(creator, form)))


@studio_router.post(
    "/avatars/import",
    response={201: DraftOut, **errors(400, 401, 403)},
    auth=PLAYER_AUTH,
    description="A new draft from a Character Card V2 or V3, as `.json` or as `.png` (the card "
    "in a `chara` or `ccv3` text chunk; the image becomes the portrait). Card fields this "
    "product does not use are kept and exported again. A malformed card is refused (400) "
    "and nothing is written.",
)
def import_avatar(request, file: File[UploadedFile]):
    creator = creator_of(request)
    try:
        avatar = do_import_card(creator, cards.read_upload(file, cards.MAX_CARD_BYTES))
    except (ValidationError, CardError) as exc:
        raise refused(exc) from None
    return Status(201, draft_out(avatar))


@studio_router.get(
    "/avatars/{slug}", response={200: DraftOut, **errors(401, 403, 404)}, auth=PLAYER_AUTH
)
def get_avatar(request, slug: str):
    return draft_out(own_avatar(request, slug))


@studio_router.put(
    "/avatars/{slug}",
    response={200: DraftOut, **errors(400, 401, 403, 404, 409)},
    auth=PLAYER_AUTH,
    description="Edits a draft (a submitted one goes back to draft). A live avatar is edited "
    "through its working copy: 409 here, `POST /avatars/{slug}/revise` first.",
)
def update_avatar(request, slug: str, payload: DraftIn):
    avatar = own_avatar(request, slug)
    if avatar.published:
        raise ApiError(409, ErrorCode.INVALID, "A live avatar is edited through /revise.")
    form = DraftForm(data=payload.dict(), instance=avatar)
    if not form.is_valid():
        raise refused(ValidationError(form.errors.as_data()))
    try:
        return draft_out(do_update_draft(form))
    except ValidationError as exc:
        raise refused(exc) from None


@studio_router.post(
    "/avatars/{slug}/portrait",
    response={200: DraftOut, **errors(400, 401, 403, 404, 409)},
    auth=PLAYER_AUTH,
    description=f"A PNG, JPEG or WebP portrait of at most {cards.MAX_IMAGE_BYTES // 2**20} MB "
    f"and {cards.MAX_IMAGE_SIDE} pixels a side, stored resized to "
    f"{cards.PORTRAIT_SIDE} pixels.",
)
def upload_portrait(request, slug: str, file: File[UploadedFile]):
    avatar = own_avatar(request, slug)
    if avatar.published:
        raise ApiError(409, ErrorCode.INVALID, "A live avatar is edited through /revise.")
    try:
        portrait = cards.read_portrait(cards.read_upload(file, cards.MAX_IMAGE_BYTES))
        form = studio.current_form(avatar)
        if not form.is_valid():
            raise ValidationError(form.errors.as_data())
        return draft_out(do_update_draft(form, portrait))
    except (ValidationError, CardError) as exc:
        raise refused(exc) from None


@studio_router.get(
    "/avatars/{slug}/card",
    response={200: None, **errors(400, 401, 403, 404)},
    auth=PLAYER_AUTH,
    description="The avatar as a Character Card: `spec` v2 or v3, `format` json or png (a V3 "
    "PNG carries the V2 card too). Never holds clues or words.",
)
def export_avatar(
    request, slug: str, spec: Literal["v2", "v3"] = "v3", format: Literal["json", "png"] = "json"
):
    avatar = own_avatar(request, slug)
    content, content_type = export_card(avatar, cards.SPEC_NAMES[spec], format)
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{avatar.slug}.{spec}.{format}"'
    return response


@studio_router.post(
    "/avatars/{slug}/revise",
    response={200: DraftOut, **errors(401, 403, 404, 409)},
    auth=PLAYER_AUTH,
    description="The working copy of one of the caller's live avatars (made on first use): "
    "edit and submit it; the live avatar stays in play until the copy is approved.",
)
def revise_avatar(request, slug: str):
    avatar = own_avatar(request, slug)
    if not avatar.published:
        raise ApiError(409, ErrorCode.INVALID, "Only a live avatar is revised; edit the draft.")
    return draft_out(do_revise(request.auth, avatar))


@studio_router.post(
    "/avatars/{slug}/submit",
    response={200: DraftOut, **errors(400, 401, 403, 404)},
    auth=PLAYER_AUTH,
    description="Submits a draft for review; organizers then approve or return it.",
)
def submit_avatar(request, slug: str):
    avatar = own_avatar(request, slug)
    try:
        return draft_out(do_submit(request.auth, avatar))
    except ValidationError as exc:
        raise refused(exc) from None


@studio_router.post("/meter", response={200: MeterOut, **errors(400, 401, 403)}, auth=PLAYER_AUTH)
def meter(request, payload: MeterIn):
    """Prompt tokens the persona, greeting and examples take, and the room they have: the
    studio's live token meter."""
    creator_of(request)
    if max(len(payload.persona), len(payload.greeting), len(payload.examples)) > MAX_METER_CHARS:
        raise ApiError(400, ErrorCode.TOO_LONG, f"At most {MAX_METER_CHARS} characters a field.")
    tokens, room = persona_tokens(payload.persona, payload.greeting, examples=payload.examples)
    return {"tokens": tokens, "room": room}
