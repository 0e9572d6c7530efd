"""The REST API of the client contract, version 1 (../shared/contracts/client-protocol.md §1, §2).

Mounted at /api/v1/; the OpenAPI document is /api/v1/openapi.json and its browsable page
/api/v1/docs. Every error body is `{"error", "detail"?, "retry_after"?}` (see `ApiError`),
including ninja's own validation and authentication failures.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from django.contrib.auth import authenticate
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import NinjaAPI, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.renderers import JSONRenderer
from ninja.responses import NinjaJSONEncoder
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from hunt.claims import ClaimRefused, do_claim
from hunt.forms import (
    SignUpForm,
    address_bucket,
    attempt_wait,
    record_failed_sign_in,
    registration_is_open,
    sign_in_wait,
)
from hunt.leaderboard import hunt_id_for_slug, leaderboard_json
from hunt.models import ApiToken, Discovery, Hunt, Player
from lostwallet import ratelimit
from lostwallet.wire import ErrorCode, iso_ms


class ApiError(Exception):
    """An error answer of the contract; raised anywhere below, rendered by one handler."""

    def __init__(
        self, status: int, error: ErrorCode, detail: str = "", retry_after: float | None = None
    ):
        super().__init__(error)
        self.status, self.error, self.detail, self.retry_after = status, error, detail, retry_after

    def body(self) -> dict:
        body: dict = {"error": self.error}
        if self.detail:
            body["detail"] = self.detail
        if self.retry_after is not None:
            body["retry_after"] = ratelimit.retry_after_seconds(self.retry_after)
        return body


# --- authentication -----------------------------------------------------------------------


class BearerToken(HttpBearer):
    """`Authorization: Bearer <token>` from POST /auth/token or /auth/register."""

    def authenticate(self, request: HttpRequest, token: str):
        user = ApiToken.authenticate(token.strip())
        if user is None:
            # A presented but unknown or revoked token is an error even if a session cookie
            # rides along: the client meant to be that token's user.
            raise ApiError(
                401, ErrorCode.NOT_AUTHENTICATED, "The bearer token is unknown or revoked."
            )
        return user


class SessionCookie(APIKeyCookie):
    """The browser's Django session. Unsafe methods need the CSRF token, as on every form:
    another site's page could otherwise post a claim with the player's cookie."""

    # Names the cookie in the OpenAPI document only: authentication reads request.user, which
    # Django's middleware set from whatever SESSION_COOKIE_NAME says.
    param_name = "sessionid"

    def __init__(self) -> None:
        # The CSRF check below runs only for signed-in sessions, so an anonymous POST is a 401.
        super().__init__(csrf=False)

    def authenticate(self, request: HttpRequest, key: str | None):
        if not request.user.is_authenticated:
            return None
        if check_csrf(request):
            raise ApiError(
                403, ErrorCode.CSRF_FAILED, "Send the X-CSRFToken header with the session."
            )
        return request.user


PLAYER_AUTH = [BearerToken(), SessionCookie()]


def caller(request: HttpRequest):
    """The authenticated user of a request to a public endpoint, or None (anonymous)."""
    for auth in PLAYER_AUTH:
        user = auth(request)
        if user:
            return user
    return None


def player_of(request: HttpRequest) -> Player:
    return Player.for_user(request.auth)


# --- schemas ------------------------------------------------------------------------------


class ErrorOut(Schema):
    error: str
    detail: str | None = None
    retry_after: int | None = None


class RegisterIn(Schema):
    username: str
    password: str
    display_name: str | None = None


class CredentialsIn(Schema):
    username: str
    password: str


class RegisteredOut(Schema):
    token: str
    username: str


class TokenOut(Schema):
    token: str


class TokenInfoOut(Schema):
    """A token as its owner sees it in a list: never the token itself, nor its digest."""

    id: int
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime


class HuntOut(Schema):
    slug: str
    title: str
    status: Literal["upcoming", "live", "ended"]
    # Additive: organizers paused the hunt (chat and claims answer hunt_not_live meanwhile).
    paused: bool
    starts_at: datetime
    ends_at: datetime


class WordOut(Schema):
    position: int
    world: str
    hint: str
    found: bool
    word: str | None


class WinnerOut(Schema):
    player: str
    claimed_at: datetime


class HuntDetailOut(HuntOut):
    description: str
    prize: str
    words: list[WordOut]
    winner: WinnerOut | None


class LocationOut(Schema):
    lat: float
    lon: float


class AvatarOut(Schema):
    slug: str
    name: str
    greeting: str
    land: str
    location: LocationOut | None


class LeaderRowOut(Schema):
    rank: int
    player: str
    words_found: int
    last_found_at: datetime


class LeaderboardOut(Schema):
    rows: list[LeaderRowOut]
    updated_at: datetime
    # Additive to the contract: the winner, so boards can announce the end of the hunt.
    winner: WinnerOut | None = None


class DiscoveryOut(Schema):
    position: int
    word: str
    avatar: str | None
    found_at: datetime


class ProgressOut(Schema):
    discoveries: list[DiscoveryOut]


class ClaimIn(Schema):
    words: list[str]


class ClaimOut(Schema):
    result: Literal["winner", "correct", "wrong"]


def errors(*statuses: int) -> dict:
    return dict.fromkeys(statuses, ErrorOut)


# --- the API ------------------------------------------------------------------------------


class WireJSONEncoder(NinjaJSONEncoder):
    """ninja's encoder, writing datetimes as every time on the wire is written
    (lostwallet.wire.iso_ms): Django's encoder leaves out the milliseconds of a whole second."""

    def default(self, o):
        if isinstance(o, datetime):
            return iso_ms(o)
        return super().default(o)


class WireJSONRenderer(JSONRenderer):
    encoder_class = WireJSONEncoder


api = NinjaAPI(
    title="Lost Wallet",
    version="1",
    description=(
        "Client contract version 1. Authenticate with `Authorization: Bearer <token>` (from "
        "/auth/token) or, in browsers, the session cookie plus the X-CSRFToken header on POST."
    ),
    urls_namespace="api-v1",
    renderer=WireJSONRenderer(),
)


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    response = api.create_response(request, exc.body(), status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(ratelimit.retry_after_seconds(exc.retry_after))
    return response


@api.exception_handler(ValidationError)
def _validation_error(request, exc: ValidationError):
    # ninja's default is a 422 echoing the input; the contract wants 400, and a claim's input
    # is a candidate phrase that must not be echoed into logs or proxies.
    problems = "; ".join(
        ".".join(str(part) for part in error.get("loc", ())) + ": " + str(error.get("msg", ""))
        for error in exc.errors
    )
    return _api_error(request, ApiError(400, ErrorCode.INVALID, problems or "Malformed request."))


@api.exception_handler(AuthenticationError)
def _not_authenticated(request, exc):
    return _api_error(
        request, ApiError(401, ErrorCode.NOT_AUTHENTICATED, "Sign in or send a token.")
    )


@api.exception_handler(Http404)
def _not_found(request, exc):
    return _api_error(request, ApiError(404, ErrorCode.NOT_FOUND))


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    # ninja raises these itself, e.g. 400 "Cannot parse request body" for broken JSON.
    codes = {
        400: ErrorCode.INVALID,
        401: ErrorCode.NOT_AUTHENTICATED,
        403: ErrorCode.FORBIDDEN,
        404: ErrorCode.NOT_FOUND,
    }
    code = codes.get(exc.status_code, ErrorCode.ERROR)
    return _api_error(request, ApiError(exc.status_code, code, str(exc)))


def _hunt(slug: str) -> Hunt:
    return get_object_or_404(Hunt.objects.with_winner(), slug=slug)


def _winner(hunt: Hunt) -> dict | None:
    if hunt.winner is None:
        return None
    return {"player": hunt.winner.name, "claimed_at": hunt.won_at}


@api.post(
    "/auth/register",
    response={201: RegisteredOut, **errors(400, 403, 429)},
    tags=["auth"],
    summary="Create an account and get a token",
)
def register(request, payload: RegisterIn):
    if not registration_is_open():
        raise ApiError(
            403, ErrorCode.REGISTRATION_CLOSED, "No hunt takes new players at the moment."
        )
    wait = attempt_wait(request, "register")
    if wait is not None:
        raise ApiError(429, ErrorCode.RATE_LIMITED, "Too many attempts.", wait)
    form = SignUpForm(data=payload.dict())
    user = form.save() if form.is_valid() else None
    if user is None:
        raise ApiError(400, ErrorCode.INVALID, form.error_text())
    return Status(201, {"token": ApiToken.issue(user), "username": user.get_username()})


@api.post(
    "/auth/token",
    response={200: TokenOut, **errors(400, 401, 429)},
    tags=["auth"],
    summary="Exchange a username and password for a bearer token",
)
def token(request, payload: CredentialsIn):
    wait = sign_in_wait(request, payload.username)
    if wait is not None:
        raise ApiError(429, ErrorCode.RATE_LIMITED, "Too many attempts.", wait)
    user = authenticate(request, username=payload.username, password=payload.password)
    if user is None:
        record_failed_sign_in(request, payload.username)
        raise ApiError(401, ErrorCode.BAD_CREDENTIALS)
    return {"token": ApiToken.issue(user)}


@api.get(
    "/auth/tokens",
    response={200: list[TokenInfoOut], **errors(401)},
    auth=PLAYER_AUTH,
    tags=["auth"],
    summary="List the caller's unexpired tokens",
)
def list_tokens(request):
    return request.auth.api_tokens.live()


@api.delete(
    "/auth/tokens/{token_id}",
    response={204: None, **errors(401, 403, 404)},
    auth=PLAYER_AUTH,
    tags=["auth"],
    summary="Revoke one of the caller's tokens",
)
def revoke_token(request, token_id: int):
    if not ApiToken.revoke(request.auth, token_id):
        raise Http404
    return Status(204, None)


@api.get("/hunts", response=list[HuntOut], tags=["hunts"])
def list_hunts(request):
    return [
        {
            "slug": h.slug,
            "title": h.title,
            "status": h.status,
            "paused": h.paused,
            "starts_at": h.starts_at,
            "ends_at": h.ends_at,
        }
        for h in Hunt.objects.all()
    ]


@api.get(
    "/hunts/{slug}",
    response={200: HuntDetailOut, **errors(401, 404)},
    tags=["hunts"],
    description="Readable without login; `found` and `word` are filled only for the words the "
    "calling player discovered.",
)
def hunt_detail(request, slug: str):
    hunt = _hunt(slug)
    user = caller(request)
    found = {}
    if user is not None:
        # Decrypt only the caller's own discoveries: every other word stays sealed.
        found = {
            d.word.position: d.word.reveal_word()
            for d in Discovery.objects.of(hunt, user=user).select_related("word")
        }
    return {
        "slug": hunt.slug,
        "title": hunt.title,
        "description": hunt.description,
        "status": hunt.status,
        "paused": hunt.paused,
        "starts_at": hunt.starts_at,
        "ends_at": hunt.ends_at,
        "prize": hunt.prize,
        "words": [
            {
                "position": w.position,
                "world": w.world,
                "hint": w.hint,
                "found": w.position in found,
                "word": found.get(w.position),
            }
            for w in hunt.words.all()
        ],
        "winner": _winner(hunt),
    }


@api.get("/hunts/{slug}/avatars", response={200: list[AvatarOut], **errors(404)}, tags=["hunts"])
def hunt_avatars(request, slug: str):
    hunt = _hunt(slug)
    return [
        {
            "slug": a.slug,
            "name": a.name,
            "greeting": a.greeting,
            "land": a.land,
            "location": a.location,
        }
        for a in hunt.avatars.filter(published=True)
    ]


@api.get(
    "/hunts/{slug}/leaderboard",
    response={200: LeaderboardOut, **errors(404)},
    tags=["hunts"],
    description="Readable without login; served from the cache, rebuilt after each discovery.",
)
def hunt_leaderboard(request, slug: str):
    hunt_id = hunt_id_for_slug(slug)
    if hunt_id is None:
        raise Http404
    # The cached JSON text as is: event-day reads cost one cache lookup, no query and no
    # re-validation (LeaderboardOut above documents it; compute_leaderboard builds it).
    return HttpResponse(leaderboard_json(hunt_id), content_type="application/json")


@api.get(
    "/hunts/{slug}/progress",
    response={200: ProgressOut, **errors(401, 404)},
    auth=PLAYER_AUTH,
    tags=["player"],
)
def hunt_progress(request, slug: str):
    hunt = _hunt(slug)
    discoveries = (
        Discovery.objects.of(hunt, user=request.auth)
        .select_related("word", "clue__avatar")
        .order_by("word__position")
    )
    return {
        "discoveries": [
            {
                "position": d.word.position,
                "word": d.word.reveal_word(),
                "avatar": d.clue.avatar.slug if d.clue else None,
                "found_at": d.found_at,
            }
            for d in discoveries
        ]
    }


@api.post(
    "/hunts/{slug}/claim",
    response={200: ClaimOut, **errors(400, 401, 403, 404, 409, 429)},
    auth=PLAYER_AUTH,
    tags=["player"],
    description="`winner` for the first correct claim, `correct` once the hunt is won, `wrong` "
    "otherwise. Each wrong or invalid claim starts a cooldown that doubles every time (429 "
    "with `retry_after`); each client address has an hourly budget of claims (429 too). "
    "A claim is judged only for a player who has found every word this server guards "
    "(403 `words_missing`, unless the hunt turns this off); staff cannot claim (403 `forbidden`).",
)
def hunt_claim(request, slug: str, payload: ClaimIn):
    hunt = _hunt(slug)
    try:
        result = do_claim(hunt, player_of(request), payload.words, address_bucket(request))
    except ClaimRefused as refused:
        raise ApiError(refused.status, refused.code, refused.detail, refused.retry_after) from None
    return {"result": result}


def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Unknown paths under /api/v1/ answer in the API's error format, not Django's HTML."""
    return _not_found(request, None)
