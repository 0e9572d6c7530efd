"""Avatar screens for organizers and creators.

Organizers (users who may change hunts) see every avatar and its clues; creators see and edit
only their own avatars, without clues. Conversations may hold words revealed to their player,
so only superusers read them.

Only superusers publish. Publishing checks that the avatar's public texts hold no guarded word;
if anyone could publish, that check would let them test candidate words. So a save by anyone
else that changes what players would read (name, persona, greeting, examples) takes the avatar
out of play until a superuser publishes it again, whatever the texts hold. Creators' drafts in
the studio (avatars/studio.py) follow the same rule.

Each clue has a gate playground (AvatarAdmin.gate_playground, docs/gate-playground.md): a
superuser types a message and sees how the gate decides it, then may add it to the clue's
examples or counterexamples. Any change to an avatar's clues recalibrates them after commit.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from avatars.models import Avatar, Conversation, Feedback, Message
from avatars.studio import is_organizer
from hunt.admin import ClueInline, PhrasingForm, TrialForm
from hunt.models import Clue


class DraftAvatarForm(forms.ModelForm):
    """For staff below superuser: a change to what players read makes the avatar a draft (see
    the module doc), before the model's checks run, so they never check for guarded words."""

    def clean(self):
        data = super().clean()
        if not self.instance.pk or {"name", "persona", "greeting", "examples"} & set(
            self.changed_data
        ):
            self.instance.published = False
        return data


@admin.register(Avatar)
class AvatarAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "hunt", "land", "published", "owner", "conversations_count"]
    list_filter = ["published", "hunt"]
    search_fields = ["name", "slug", "land", "persona"]
    prepopulated_fields = {"slug": ["name"]}
    autocomplete_fields = ["owner"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "hunt", "published", "owner"]}),
        (_("Character"), {"fields": ["persona", "greeting", "examples"]}),
        (_("Where"), {"fields": ["land", "latitude", "longitude"]}),
    ]

    def get_queryset(self, request):
        # Sandbox conversations are creators trying drafts, not play.
        played = Count("conversations", filter=Q(conversations__sandbox=False))
        qs = super().get_queryset(request).annotate(n_conv=played)
        return qs if is_organizer(request.user) else qs.filter(owner=request.user)

    def get_inlines(self, request, obj):
        return [ClueInline] if is_organizer(request.user) else []

    def get_readonly_fields(self, request, obj=None):
        fields = [] if is_organizer(request.user) else ["hunt", "owner"]
        return fields if request.user.is_superuser else [*fields, "published"]

    def save_model(self, request, obj, form, change):
        if not change and obj.owner_id is None:
            obj.owner = request.user
        if not request.user.is_superuser and not obj.published:
            self.message_user(
                request, _("Saved as a draft: a superuser publishes it after a review.")
            )
        super().save_model(request, obj, form, change)

    def get_form(self, request, obj=None, **kwargs):
        if not request.user.is_superuser:
            kwargs["form"] = DraftAvatarForm
        return super().get_form(request, obj, **kwargs)

    @admin.display(description=_("conversations"), ordering="n_conv")
    def conversations_count(self, obj):
        return obj.n_conv

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if any(formset.model is Clue and formset.has_changed() for formset in formsets):
            # One clue's anchors change what the others' examples open: all are recalibrated.
            from hunt.gate import calibrate_clues  # numpy: loaded when the gate is used only

            avatar_id = form.instance.pk
            transaction.on_commit(lambda: calibrate_clues(avatar_id))

    def get_urls(self):
        playground = path(
            "<int:avatar_id>/clues/<int:clue_id>/gate/",
            self.admin_site.admin_view(self.gate_playground),
            name="avatars_avatar_clue_gate",
        )
        return [playground, *super().get_urls()]

    def gate_playground(self, request, avatar_id: int, clue_id: int):
        """How the gate decides a message for one clue (hunt.gate.try_message), recording
        nothing a player's message would; and the message added to the clue's examples or
        counterexamples, after which the page shows the new decision."""
        # Those who edit clues, and no one else: the page tells how the gate decides, as the
        # clue's thresholds and examples do (hunt/admin.py).
        if not ClueInline(Avatar, self.admin_site).has_change_permission(request):
            raise PermissionDenied
        from hunt.gate import add_phrasing, try_message  # numpy: loaded when the gate is used

        clues = Clue.objects.select_related("avatar", "word")
        clue = get_object_or_404(clues, pk=clue_id, avatar=avatar_id)
        if request.method == "POST":
            form = PhrasingForm(request.POST)
            if not form.is_valid():
                return HttpResponseBadRequest(form.errors.as_text())
            data = form.cleaned_data
            add_phrasing(clue.pk, data["message"], data["kind"])
            done = {
                "examples": _("“%(message)s” is an example of this clue now."),
                "counterexamples": _("“%(message)s” is a counterexample of this clue now."),
            }
            self.message_user(request, done[data["kind"]] % {"message": data["message"]})
            query = urlencode({"message": data["message"], "context": data["context"]})
            return redirect(f"{request.path}?{query}")
        form = TrialForm(request.GET or None)
        trial = None
        if form.is_valid():
            trial = try_message(clue, form.cleaned_data["message"], form.cleaned_data["context"])
        other = clues.get(pk=trial.opened_other) if trial and trial.opened_other else None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Try the gate: clue #%(position)d") % {"position": clue.word.position},
            "avatar": clue.avatar,
            "clue": clue,
            "form": form,
            "trial": trial,
            "opened_other": other,
            "calibration": clue.calibration,
        }
        return TemplateResponse(request, "admin/avatars/avatar/gate_playground.html", context)


class SuperuserOnlyAdmin(admin.ModelAdmin):
    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["created_at", "role", "text", "status"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(SuperuserOnlyAdmin):
    list_display = ["player", "avatar", "sandbox", "messages_count", "updated_at"]
    list_filter = ["sandbox", "avatar__hunt", "avatar"]
    search_fields = ["player__display_name", "player__user__username", "avatar__name"]
    inlines = [MessageInline]
    readonly_fields = [
        "player",
        "avatar",
        "sandbox",
        "summary",
        "summary_upto",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n=Count("messages"))

    @admin.display(description=_("messages"), ordering="n")
    def messages_count(self, obj):
        return obj.n


@admin.register(Message)
class MessageAdmin(SuperuserOnlyAdmin):
    list_display = ["id", "conversation", "role", "short_text", "status", "created_at"]
    list_filter = ["role", "status"]
    search_fields = ["client_id"]  # texts are sealed at rest: no search inside them
    date_hierarchy = "created_at"

    @admin.display(description=_("text"))
    def short_text(self, obj):
        return obj.text[:80]


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["message_id", "avatar", "value", "player", "created_at"]
    list_filter = ["value", "message__conversation__avatar"]
    readonly_fields = ["message", "player", "value", "created_at"]

    def get_fields(self, request, obj=None):
        # A reply may hold a word revealed to its player: its text is for superusers only.
        fields = ["message", "player", "value", "created_at"]
        return fields if request.user.is_superuser else fields[1:]

    @admin.display(description=_("avatar"))
    def avatar(self, obj):
        return obj.message.conversation.avatar

    def has_add_permission(self, request):
        return False
