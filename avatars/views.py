"""The browser chat page (the conversation itself runs over the chat socket, consumers.py),
portraits, and the creator studio's pages (avatars/studio.py)."""

from __future__ import annotations

from functools import wraps

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from avatars import cards, studio
from avatars.chat import avatar_open_to
from avatars.engine.prompts import persona_room
from avatars.models import Avatar, Portrait
from hunt.models import Hunt


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


def portrait(request, avatar_slug: str):
    """An avatar's portrait, to whoever may open the avatar (a draft's only to its creator
    and staff, like its chat)."""
    avatar = get_object_or_404(
        Avatar.objects.only("portrait", "published", "owner"), slug=avatar_slug
    )
    if not (avatar.published or avatar_open_to(avatar, request.user)):
        raise Http404
    png = Portrait.png_of(avatar.portrait)
    if not png:
        raise Http404
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "public, max-age=300" if avatar.published else "private"
    return response


# --- the creator studio (avatars/studio.py) ---------------------------------------------------


def creator_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not studio.is_creator(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def organizer_required(view):
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not studio.is_organizer(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


class DraftPageForm(studio.DraftForm):
    portrait = forms.FileField(
        required=False,
        label=_("Portrait"),
        help_text=_("PNG, JPEG or WebP, at most 4 MB and 4096 pixels a side."),
    )

    def clean_portrait(self):
        upload = self.cleaned_data.get("portrait")
        if not upload:
            return None
        try:
            return cards.read_portrait(cards.read_upload(upload, cards.MAX_IMAGE_BYTES))
        except cards.CardError as exc:
            raise ValidationError(str(exc)) from None


class ReviewForm(forms.Form):
    hunt = forms.ModelChoiceField(
        Hunt.objects.all(),
        required=False,
        label=_("Publish into hunt"),
        help_text=_("Optional; assign its clues in the admin afterwards."),
    )
    comment = forms.CharField(widget=forms.Textarea, required=False, label=_("Comment"))


@creator_required
def studio_home(request):
    if request.method == "POST" and "card" in request.FILES:
        try:
            content = cards.read_upload(request.FILES["card"], cards.MAX_CARD_BYTES)
            avatar = studio.do_import_card(request.user, content)
        except (cards.CardError, ValidationError) as exc:
            messages.error(
                request,
                _("The card was not imported: %s")
                % "; ".join(exc.messages if isinstance(exc, ValidationError) else [str(exc)]),
            )
        else:
            messages.success(request, _("Imported “%s” as a draft.") % avatar.name)
            return redirect("studio-edit", avatar.slug)
    form = DraftPageForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and "card" not in request.FILES and form.is_valid():
        avatar = studio.do_create_draft(
            request.user,
            form,
            portrait=Portrait.store(png) if (png := form.cleaned_data["portrait"]) else "",
        )
        return redirect("studio-edit", avatar.slug)
    avatars = studio.creator_avatars(request.user).order_by("-updated_at")
    return render(request, "avatars/studio.html", {"avatars": avatars, "form": form})


@creator_required
def studio_edit(request, slug: str):
    avatar = studio.own_avatar(request.user, slug)
    if avatar.published:
        return render(request, "avatars/studio_edit.html", {"avatar": avatar, "versions": EXPORTS})
    form = DraftPageForm(request.POST or None, request.FILES or None, instance=avatar)
    if request.method == "POST" and form.is_valid():
        try:
            studio.do_update_draft(form, form.cleaned_data["portrait"])
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, _("Saved."))
        return redirect("studio-edit", avatar.slug)
    room = persona_room()
    return render(
        request,
        "avatars/studio_edit.html",
        {"avatar": avatar, "form": form, "room": room, "versions": EXPORTS},
    )


EXPORTS = [("v2", "json"), ("v2", "png"), ("v3", "json"), ("v3", "png")]


@require_POST
@creator_required
def studio_submit(request, slug: str):
    avatar = studio.own_avatar(request.user, slug)
    try:
        studio.do_submit(request.user, avatar)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _("Submitted for review."))
    return redirect("studio-edit", avatar.slug)


@require_POST
@creator_required
def studio_revise(request, slug: str):
    avatar = studio.own_avatar(request.user, slug)
    if not avatar.published:
        return redirect("studio-edit", avatar.slug)
    return redirect("studio-edit", studio.do_revise(request.user, avatar).slug)


@creator_required
def studio_card(request, slug: str, spec: str, fmt: str):
    avatar = studio.own_avatar(request.user, slug)
    if (spec, fmt) not in EXPORTS:
        raise Http404
    content, content_type = studio.export_card(avatar, cards.SPEC_NAMES[spec], fmt)
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{avatar.slug}.{spec}.{fmt}"'
    return response


class GrantForm(forms.Form):
    username = forms.CharField(label=_("Username"))

    def clean_username(self):
        user = get_user_model().objects.filter(username=self.cleaned_data["username"]).first()
        if user is None:
            raise ValidationError(_("No account has this username."))
        return user


@organizer_required
def review_queue(request):
    grant = GrantForm(request.POST or None)
    if request.method == "POST" and grant.is_valid():
        user = grant.cleaned_data["username"]
        studio.grant_creator(user)
        messages.success(request, _("%s is a creator now.") % user.get_username())
        return redirect("review-queue")
    return render(
        request,
        "avatars/review_queue.html",
        {"avatars": studio.review_queue().select_related("owner"), "grant": grant},
    )


@organizer_required
def review_detail(request, slug: str):
    avatar = get_object_or_404(
        Avatar.objects.select_related("owner", "revision_of"),
        slug=slug,
        review=Avatar.Review.SUBMITTED,
    )
    form = ReviewForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if "approve" in request.POST:
            if not request.user.is_superuser:
                raise PermissionDenied
            try:
                live = studio.do_approve(avatar, form.cleaned_data["hunt"])
            except ValidationError as exc:
                messages.error(request, _("Not published: %s") % " ".join(exc.messages))
                return redirect("review-detail", avatar.slug)
            messages.success(request, _("“%s” is live.") % live.name)
            return redirect("review-queue")
        if not form.cleaned_data["comment"].strip():
            form.add_error("comment", _("Say what the creator should change."))
        elif studio.do_return(avatar, form.cleaned_data["comment"].strip()):
            messages.success(request, _("Returned to its creator."))
            return redirect("review-queue")
    return render(
        request,
        "avatars/review_detail.html",
        {"avatar": avatar, "form": form, "diff": studio.review_diff(avatar)},
    )
