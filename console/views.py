"""The live console's pages and endpoints, for the hunt's organizers (Hunt.run_by).

One recipe per view: find the hunt and check access (`_console_hunt`), call a figure or an
action (console/figures.py, console/actions.py), answer. The page polls `figures.json`, which
is served from the cache and refreshed in the background (figures_for), computed at most once
per CONSOLE_CACHE_SECONDS per hunt and audience, however many organizers watch.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import threading
import time

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import Count
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from avatars.models import Conversation
from console import actions
from console.figures import console_figures, hunt_header
from hunt.models import Claim, Discovery, Hunt, Incident, Player
from lostwallet.wire import ErrorCode, iso_ms

logger = logging.getLogger(__name__)


def _console_hunt(request, slug: str) -> Hunt:
    hunt = get_object_or_404(Hunt.objects.with_winner(), slug=slug)
    if not hunt.run_by(request.user):
        raise PermissionDenied
    return hunt


def _figures_key(hunt: Hunt, with_text: bool) -> str:
    return f"console:{hunt.pk}:{'text' if with_text else 'counts'}"


def figures_for(hunt: Hunt, user) -> dict:
    """The console's figures as `user` may see them.

    Stale while revalidating: a poll is answered from the cache, and once the cached figures
    are CONSOLE_CACHE_SECONDS old one refresh starts in the background (one per hunt and
    audience, however many organizers watch), for the next poll. So no poll waits for the
    figures to be computed, except the first, the first after an action, and one that finds
    them older than CONSOLE_STALE_SECONDS (a refresh that never finished): those compute them
    in the request. `generated_at` says how old they are; the hunt's own state is read fresh.
    """
    with_text = user.is_superuser
    cached = cache.get(_figures_key(hunt, with_text))
    if cached is None:
        figures = _compute(hunt, with_text)
    else:
        figures = cached["figures"]
        if time.time() - cached["at"] >= settings.CONSOLE_CACHE_SECONDS:
            _refresh_soon(hunt, with_text)
    return {**figures, "hunt": hunt_header(hunt)}


def _compute(hunt: Hunt, with_text: bool) -> dict:
    started = time.time()
    figures = console_figures(hunt, with_text=with_text)
    entry = {"at": started, "figures": figures}
    cache.set(_figures_key(hunt, with_text), entry, timeout=settings.CONSOLE_STALE_SECONDS)
    return figures


def _refresh_soon(hunt: Hunt, with_text: bool) -> None:
    # Race: several polls finding the figures old at once; cache.add lets one start the
    # refresh. The lock expires by itself should the refreshing process die.
    lock = _figures_key(hunt, with_text) + ":refreshing"
    if not cache.add(lock, 1, timeout=settings.CONSOLE_STALE_SECONDS):
        return

    def refresh() -> None:
        try:
            _compute(Hunt.objects.with_winner().get(pk=hunt.pk), with_text)
        except Exception:
            logger.exception("refreshing the console figures of hunt %s failed", hunt.pk)
        finally:
            cache.delete(lock)
            connection.close()  # this thread's own connection

    threading.Thread(target=refresh, name="console-refresh", daemon=True).start()


def _changed(hunt: Hunt) -> JsonResponse:
    """After an action: the hunt's new header, and the cached figures dropped so the next poll
    shows what the organizer just did."""
    cache.delete_many([_figures_key(hunt, True), _figures_key(hunt, False)])
    return JsonResponse({"hunt": hunt_header(hunt)})


def _invalid(exc: ValidationError) -> JsonResponse:
    return JsonResponse({"error": ErrorCode.INVALID, "detail": " ".join(exc.messages)}, status=400)


def labels() -> dict:
    """The page script's words, in the organizer's language."""
    return {
        "status": {
            "live": _("live"),
            "paused": _("paused"),
            "upcoming": _("upcoming"),
            "ended": _("ended"),
        },
        "claims": {key: str(label) for key, label in Claim.Result.choices},
        "incidents": {key: str(label) for key, label in Incident.Kind.choices},
        "updated": _("updated"),
        "offline": _("Figures not updated"),
        "pause": _("Pause the hunt"),
        "resume": _("Resume the hunt"),
        "open_registration": _("Open registration"),
        "close_registration": _("Close registration"),
        "confirm_pause": _(
            "Pause the hunt? Players' messages are refused and no claim is judged until you resume."
        ),
        "confirm_suspend": _("Suspend %s? Their account is signed out everywhere at once."),
        "registered": _("players registered"),
        "active_5m": _("active, last 5 min"),
        "active_1h": _("active, last hour"),
        "messages_per_minute": _("messages per minute"),
        "messages": _("messages"),
        "discoveries": _("discoveries"),
        "cooldown_claims": _("may not claim"),
        "cooldown_gate": _("too many near misses"),
        "first": _("first"),
        "new_discovery": _("New discovery"),
        "near_misses": _("near misses"),
        "players": _("players"),
        "add_example": _("Add as example"),
        "add_counterexample": _("Add as counterexample"),
        "added": _("Added"),
        "incidents_word": _("incidents"),
        "suspend": _("Suspend"),
        "suspended": _("suspended"),
        "none": _("None."),
        "waiting": _("turns waiting"),
        "ttft": _("time to first token"),
        "failures": _("generation failures"),
        "database": _("Database"),
        "ok": _("reachable"),
        "down": _("unreachable"),
        "not_used": _("not used (embedded)"),
        "alive": _("alive"),
        "gone": _("gone"),
        "seen": _("seen"),
        "no_workers": _("No worker has reported yet."),
        "sent": _("Sent"),
        "now": _("now"),
    }


@login_required
@require_GET
def console_page(request, slug: str):
    hunt = _console_hunt(request, slug)
    context = {"hunt": hunt, "labels": labels(), "poll_seconds": settings.CONSOLE_POLL_SECONDS}
    return render(request, "console/console.html", context)


@login_required
@require_GET
def console_figures_json(request, slug: str):
    return JsonResponse(figures_for(_console_hunt(request, slug), request.user))


def _flag(request, name: str) -> bool:
    return request.POST.get(name) in ("1", "true", "on")


@login_required
@require_POST
def pause(request, slug: str):
    hunt = _console_hunt(request, slug)
    actions.set_paused(hunt, _flag(request, "paused"))
    return _changed(hunt)


@login_required
@require_POST
def registration(request, slug: str):
    hunt = _console_hunt(request, slug)
    actions.set_registration(hunt, _flag(request, "open"))
    return _changed(hunt)


@login_required
@require_POST
def announce(request, slug: str):
    hunt = _console_hunt(request, slug)
    try:
        announcement = actions.announce(hunt, request.POST.get("text", ""), request.user)
    except ValidationError as exc:
        return _invalid(exc)
    return JsonResponse({"text": announcement.text, "at": iso_ms(announcement.created_at)})


@login_required
@require_POST
def suspend(request, slug: str, player_id: int):
    hunt = _console_hunt(request, slug)
    player = get_object_or_404(Player.objects.select_related("user"), pk=player_id)
    try:
        actions.suspend_player(hunt, player, suspended=not _flag(request, "reinstate"))
    except ValidationError as exc:
        return _invalid(exc)
    return _changed(hunt)


@login_required
@require_POST
def add_example(request, slug: str):
    return _add_stuck_question(request, slug, actions.add_example)


@login_required
@require_POST
def add_counterexample(request, slug: str):
    return _add_stuck_question(request, slug, actions.add_counterexample)


def _add_stuck_question(request, slug: str, add) -> JsonResponse:
    hunt = _console_hunt(request, slug)
    # The phrasing is a player's message: only those who may read message text add one.
    if not request.user.is_superuser:
        raise PermissionDenied
    try:
        near_miss = int(request.POST.get("near_miss", ""))
        clue = add(hunt, near_miss)
    except ValueError:
        return _invalid(ValidationError("near_miss is the id of a near miss."))
    except ValidationError as exc:
        return _invalid(exc)
    return JsonResponse(
        {
            "clue": clue.pk,
            "examples": len(clue.examples),
            "counterexamples": len(clue.counterexamples),
        }
    )


# Exports ---------------------------------------------------------------------------------------


class _Echo:
    """A file-like object whose write returns the line: csv.writer then yields rows to stream."""

    def write(self, value: str) -> str:
        return value


def _csv(name: str, header: list[str], rows) -> StreamingHttpResponse:
    """Streams rows as CSV: an export of a big event never sits in memory whole."""
    writer = csv.writer(_Echo())
    lines = (writer.writerow(row) for row in itertools.chain([header], rows))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_GET
def export(request, slug: str, what: str):
    hunt = _console_hunt(request, slug)
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    if what == "players.csv":
        found = dict(
            Discovery.objects.filter(word__hunt=hunt)
            .values_list("player")
            .annotate(n=Count("player"))
        )
        said = dict(
            Conversation.objects.filter(avatar__hunt=hunt, last_said_at__isnull=False)
            .values_list("player")
            .annotate(n=Count("id"))
        )
        rows = (
            [
                p.pk,
                p.name,
                p.user.get_username(),
                iso_ms(p.created_at),
                said.get(p.pk, 0),
                found.get(p.pk, 0),
                iso_ms(p.suspended_at) if p.suspended_at else "",
            ]
            for p in Player.objects.filter(hidden=False).select_related("user").iterator()
        )
        header = ["id", "name", "username", "joined", "avatars_talked_to", "words", "suspended"]
        return _csv(f"{hunt.slug}-players-{stamp}.csv", header, rows)
    if what == "discoveries.csv":
        # Positions only: the words themselves never leave the server in an export.
        rows = (
            [d.word.position, d.player_id, d.player.name, iso_ms(d.found_at), int(d.first)]
            for d in Discovery.objects.filter(word__hunt=hunt)
            .select_related("word", "player__user")
            .order_by("found_at")
            .iterator()
        )
        header = ["position", "player_id", "player", "found_at", "first"]
        return _csv(f"{hunt.slug}-discoveries-{stamp}.csv", header, rows)
    if what == "claims.csv":
        rows = (
            [c.player_id, c.player.name, c.result, iso_ms(c.created_at)]
            for c in Claim.objects.filter(hunt=hunt)
            .select_related("player__user")
            .order_by("created_at")
            .iterator()
        )
        return _csv(
            f"{hunt.slug}-claims-{stamp}.csv", ["player_id", "player", "result", "at"], rows
        )
    if what == "snapshot.json":
        figures = console_figures(hunt, with_text=False)
        response = HttpResponse(
            json.dumps(figures, indent=2, ensure_ascii=False), content_type="application/json"
        )
        response["Content-Disposition"] = f'attachment; filename="{hunt.slug}-console-{stamp}.json"'
        return response
    raise Http404("No such export.")
