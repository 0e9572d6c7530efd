"""The browser chat page; the conversation itself runs over the chat socket (consumers.py)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _

from avatars.chat import avatar_open_to
from avatars.models import Avatar


def chat_strings() -> dict[str, str]:
    """Every text chat.js shows, translated for this request's language.

    `%(name)s`-style fields are filled in by the script.
    """
    return {
        "connecting": _("Connecting…"),
        "connected": _("Connected"),
        "reconnecting": _("Connection lost. Reconnecting in %(seconds)s s…"),
        "signed_out": _("You are signed out. Sign in again to keep chatting."),
        "sign_in": _("Sign in"),
        "not_open": _("This avatar is not open to you."),
        "unknown_avatar": _("This avatar does not exist."),
        "flood": _("Too many messages at once. Reconnecting shortly…"),
        "you": _("You"),
        "sending": _("Sending…"),
        "sent": _("Sent"),
        "not_sent": _("Not sent: %(reason)s"),
        "retry": _("Send again"),
        "ask_again": _("Ask again"),
        "typing": _("%(name)s is writing…"),
        "says": _("%(name)s says: %(text)s"),
        "wait_reply": _("Wait for the answer before asking again."),
        "busy": _("%(name)s is still answering your last message."),
        "rate_limited": _("You are sending messages too fast. Try again in %(seconds)s s."),
        "too_long": _("The message is too long (at most %(max)s characters)."),
        "bad_request": _("The message could not be read."),
        "generation_failed": _("%(name)s could not answer. Your message is kept; ask again."),
        "hunt_not_live": _(
            "The hunt is not running right now: the avatars talk, but no word can be found."
        ),
        "hunt_paused": _(
            "The organizers have paused the hunt. Your message was not sent; try again when "
            "it resumes."
        ),
        "hunt_paused_now": _(
            "The organizers have paused the hunt; the avatars listen again when it resumes."
        ),
        "announcement": _("Announcement from the organizers: %(text)s"),
        "not_found": _("That reply no longer exists."),
        "discovery": _("You found word #%(position)s: %(word)s"),
        "word_number": _("Word #%(position)s"),
        "first": _("First finder!"),
        "rate_up": _("Good answer"),
        "rate_down": _("Bad answer"),
        "rated": _("Thanks for your feedback."),
        "count": _("%(count)s of %(max)s characters"),
    }


@login_required
def chat_page(request, avatar_slug: str):
    avatar = get_object_or_404(Avatar.objects.select_related("hunt"), slug=avatar_slug)
    if not avatar_open_to(avatar, request.user):
        # Like the socket's 4403, but a page need not tell "hidden" from "absent".
        raise Http404
    avatars = list(avatar.hunt.avatars.filter(published=True)) if avatar.hunt_id else []
    if avatar not in avatars:
        avatars.append(avatar)
    return render(
        request,
        "avatars/chat.html",
        {
            "avatar": avatar,
            "avatars": avatars,
            "hunt": avatar.hunt,
            "max_chars": settings.CHAT_MAX_CHARS,
            "strings": chat_strings(),
        },
    )
