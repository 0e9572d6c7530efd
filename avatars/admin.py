"""Avatar screens for organizers and creators.

Organizers (users who may change hunts) see every avatar and its clues; creators see and edit
only their own avatars, without clues. Conversations may hold words revealed to their player,
so only superusers read them.

Only superusers publish. Publishing checks that the avatar's public texts hold no guarded word;
if anyone could publish, that check would let them test candidate words. So a save by anyone
else that changes what players would read (name, persona, greeting, examples) takes the avatar
out of play until a superuser publishes it again, whatever the texts hold. Creators' drafts in
the studio (avatars/studio.py) follow the same rule.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db import transaction
from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _

from avatars.models import Avatar, Conversation, Feedback, Message
from avatars.studio import is_organizer
from hunt.admin import ClueInline
from hunt.gate import calibrate_clues
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

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if any(f.has_changed() for f in formsets if f.model is Clue):
            avatar_id = form.instance.pk
            # After commit: a clue's operating point follows its examples and counterexamples.
            transaction.on_commit(lambda: calibrate_clues(avatar_id))

    def get_form(self, request, obj=None, **kwargs):
        if not request.user.is_superuser:
            kwargs["form"] = DraftAvatarForm
        return super().get_form(request, obj, **kwargs)

    @admin.display(description=_("conversations"), ordering="n_conv")
    def conversations_count(self, obj):
        return obj.n_conv


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
