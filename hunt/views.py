"""The player's pages: home, sign-up/sign-in, a hunt's dashboard, avatars, leaderboard, claim."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from hunt.claims import ClaimRefused, claim_wait, do_claim, refuse_unjudged
from hunt.forms import (
    ClaimForm,
    SignInForm,
    WebSignUpForm,
    address_bucket,
    attempt_wait,
    registration_is_open,
    too_many_attempts,
)
from hunt.leaderboard import leaderboard
from hunt.models import PHRASE_LENGTH, ApiToken, Clue, Discovery, Hunt, Player
from lostwallet.wire import ErrorCode


def _hunt(slug: str) -> Hunt:
    return get_object_or_404(Hunt.objects.with_winner(), slug=slug)


def home(request):
    return render(request, "hunt/home.html", {"hunts": Hunt.objects.all()})


class SignInView(auth_views.LoginView):
    form_class = SignInForm
    redirect_authenticated_user = True


def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    if not registration_is_open():
        return render(request, "registration/signup_closed.html", status=403)
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
        next_url = ""
    form = WebSignUpForm(request.POST or None)
    if request.method == "POST":
        wait = attempt_wait(request, "register")
        if wait is not None:
            form.add_error(None, too_many_attempts(wait))
        elif form.is_valid() and (user := form.save()) is not None:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            messages.success(request, _("Welcome! Your account is ready."))
            return redirect(next_url or "home")
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


@login_required
def account_tokens(request):
    """The player's API tokens (AR clients, scripts), each with a button that revokes it."""
    if request.method == "POST":
        token_id = request.POST.get("revoke", "")
        if not token_id.isdigit() or not ApiToken.revoke(request.user, int(token_id)):
            raise Http404
        messages.success(request, _("The token is revoked: clients using it must sign in again."))
        return redirect("account-tokens")
    tokens = request.user.api_tokens.live()
    return render(request, "hunt/account_tokens.html", {"tokens": tokens})


def _player(request) -> Player | None:
    if not request.user.is_authenticated:
        return None
    return Player.objects.filter(user=request.user).first()


def hunt_detail(request, slug: str):
    """The hunt's dashboard: its 24 slots with world hints, where to go, what this player found."""
    hunt = _hunt(slug)
    player = _player(request)
    found: dict[int, Discovery] = {}
    if player is not None:
        found = {
            d.word.position: d
            for d in Discovery.objects.of(hunt, player=player).select_related(
                "word", "clue__avatar"
            )
        }
    guards: dict[int, list[Clue]] = {}
    for clue in Clue.objects.filter(word__hunt=hunt, avatar__published=True).select_related(
        "avatar", "word"
    ):
        guards.setdefault(clue.word.position, []).append(clue)
    slots = []
    for word in hunt.words.all():
        discovery = found.get(word.position)
        clues = guards.get(word.position, [])
        slots.append(
            {
                "position": word.position,
                "world": word.world,
                "hint": word.hint,
                # Decrypted for this player's own discoveries only.
                "word": discovery.word.reveal_word() if discovery else None,
                "found_at": discovery.found_at if discovery else None,
                "avatars": [c.avatar for c in clues],
                "needs": sorted(
                    {p for c in clues for p in c.requires if isinstance(p, int) and p not in found}
                ),
            }
        )
    return render(
        request,
        "hunt/hunt_detail.html",
        {
            "hunt": hunt,
            "slots": slots,
            "found_count": len(found),
            "phrase_length": PHRASE_LENGTH,
            "avatars": hunt.avatars.filter(published=True),
        },
    )


def hunt_avatars(request, slug: str):
    hunt = _hunt(slug)
    avatars = list(hunt.avatars.filter(published=True))
    return render(
        request,
        "hunt/avatars.html",
        {"hunt": hunt, "avatars": avatars, "map": map_points(avatars)},
    )


def map_points(avatars, width: int = 600, height: int = 360, margin: int = 40) -> dict | None:
    """Avatars with a location placed on an equirectangular plot fitted to their bounding box.

    Drawn as inline SVG: no map tiles, so the page works on a closed network. None when no
    avatar has a location.
    """
    located = [a for a in avatars if a.location]
    if not located:
        return None
    lats = [a.latitude for a in located]
    lons = [a.longitude for a in located]
    # At least a degree of span, so one avatar (or several at one spot) sits in the middle.
    lat_span = max(max(lats) - min(lats), 1.0)
    lon_span = max(max(lons) - min(lons), 1.0)
    lat_mid = (max(lats) + min(lats)) / 2
    lon_mid = (max(lons) + min(lons)) / 2
    scale = min((width - 2 * margin) / lon_span, (height - 2 * margin) / lat_span)
    points = [
        {
            "avatar": a,
            "x": round(width / 2 + (a.longitude - lon_mid) * scale, 1),
            "y": round(height / 2 - (a.latitude - lat_mid) * scale, 1),
        }
        for a in located
    ]
    _place_labels(points)
    return {"width": width, "height": height, "points": points}


def _place_labels(points: list[dict]) -> None:
    """Puts each name above its pin, else below, right or left of it, whichever covers no
    other pin and no name already placed: avatars of one region sit close together. Sets
    `label` = (dx, dy, text-anchor) on every point."""
    placed = [(p["x"] - 10, p["y"] - 10, p["x"] + 10, p["y"] + 10) for p in points]
    spots = [(0, -14, "middle"), (0, 26, "middle"), (14, 5, "start"), (-14, 5, "end")]
    for point in sorted(points, key=lambda p: p["y"]):
        width = 8.4 * len(point["avatar"].name)  # about the text width at 14px
        for dx, dy, anchor in [*spots, (0, -32, "middle"), (0, 44, "middle")]:
            left = point["x"] + dx - {"middle": width / 2, "start": 0, "end": width}[anchor]
            box = (left, point["y"] + dy - 13, left + width, point["y"] + dy + 3)
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed
            ):
                break
        point["label"] = {"dx": dx, "dy": dy, "anchor": anchor}
        placed.append(box)


def hunt_leaderboard(request, slug: str):
    hunt = _hunt(slug)
    strings = {
        "live": _("Live"),
        "reconnecting": _("Connection lost, reconnecting…"),
        "updated": _("Updated"),
        "empty": _("Nobody has found a word yet."),
        "winner": _("%(player)s opened the wallet!"),
    }
    return render(
        request,
        "hunt/leaderboard.html",
        {"hunt": hunt, "board": leaderboard(hunt), "strings": strings},
    )


def _wait_text(wait: float) -> str:
    seconds = int(wait) + 1
    if seconds < 120:
        return ngettext("%(n)d second", "%(n)d seconds", seconds) % {"n": seconds}
    minutes = (seconds + 59) // 60
    return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}


@login_required
def hunt_claim(request, slug: str):
    hunt = _hunt(slug)
    player = Player.for_user(request.user)
    form = ClaimForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            result = do_claim(hunt, player, form.words(), address_bucket(request))
        except ClaimRefused as refused:
            form.add_error(None, _refusal_text(refused))
        else:
            # Post/redirect/get: reloading the result page must not send the claim again.
            request.session["claim_result"] = result
            return redirect("hunt-claim", slug=hunt.slug)
    wait = claim_wait(hunt, player)
    try:
        refuse_unjudged(hunt, player)
        blocked = ""
    except ClaimRefused as refused:
        blocked = refused.detail
    return render(
        request,
        "hunt/claim.html",
        {
            "hunt": hunt,
            "form": form,
            "result": request.session.pop("claim_result", None),
            "wait": wait,
            "blocked": blocked,
            "wait_seconds": int(wait) + 1 if wait else 0,
            "wait_text": _wait_text(wait) if wait else "",
            "phrase_length": PHRASE_LENGTH,
            "claim_strings": {
                "count": _("%(count)s of %(total)s words"),
                "ready": _("You can claim now."),
            },
        },
        status=400 if form.errors else 200,
    )


def _refusal_text(refused: ClaimRefused) -> str:
    if refused.code in (ErrorCode.HUNT_NOT_LIVE, ErrorCode.FORBIDDEN, ErrorCode.WORDS_MISSING):
        return refused.detail
    if refused.code == ErrorCode.RATE_LIMITED:
        return _("Wrong claims slow you down. You can claim again in %(time)s.") % {
            "time": _wait_text(refused.retry_after or 0)
        }
    return _("This is not a valid recovery phrase. %(detail)s") % {"detail": refused.detail}
