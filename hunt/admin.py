"""Organizer screens. Guarded words are shown and edited only by superusers.

Texts that players or the model see before an unlock (the hunt's title, description and prize,
a word's world and hint, a clue's questions, keywords, hints and reveal line) are checked for
guarded words on save, and a refusal tells whoever saved that the text holds one: for anyone but
a superuser that would be a way to test candidate words. So only superusers edit them, and clues
(whose thresholds and examples tell how the gate decides) are read-only to other staff.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from hunt.bip39 import bip39_words
from hunt.models import ApiToken, Claim, Clue, Discovery, Hunt, Player, SeedWord, guarded_words_in


class LinesField(forms.CharField):
    """A JSON list of strings edited as a textarea, one entry per line."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return [line.strip() for line in (value or "").splitlines() if line.strip()]


class PositionsField(forms.CharField):
    """A JSON list of positions edited as "3, 12"."""

    def prepare_value(self, value):
        return ", ".join(map(str, value)) if isinstance(value, list) else value

    def to_python(self, value):
        try:
            return [int(p) for p in (value or "").replace(",", " ").split()]
        except ValueError:
            raise ValidationError(_("List positions as numbers, e.g. 3, 12.")) from None


def check_no_guarded_words(hunt: Hunt | None, texts: list[str]) -> None:
    if hunt is None or hunt.pk is None:
        return
    if guarded_words_in(texts, hunt.guarded_words().values()):
        raise ValidationError(
            _("This text contains a guarded word of the hunt; players or the model would see it.")
        )


class SeedWordForm(forms.ModelForm):
    """Seed word fields for staff who may not see the guarded word itself."""

    class Meta:
        model = SeedWord
        fields = ["position", "world", "hint"]

    def clean(self):
        data = super().clean()
        hunt = self.instance.hunt if self.instance.hunt_id else None
        check_no_guarded_words(hunt, [data.get("world", ""), data.get("hint", "")])
        return data


class SecretSeedWordForm(SeedWordForm):
    """For superusers: the guarded word too, decrypted for editing and encrypted on save."""

    word = forms.CharField(
        required=False,
        help_text=_("BIP39 word; empty when hidden elsewhere. Stored encrypted."),
    )

    class Meta(SeedWordForm.Meta):
        fields = ["position", "word", "world", "hint"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["word"].initial = self.instance.reveal_word()

    def clean_word(self):
        word = self.cleaned_data["word"].strip().lower()
        if word and word not in bip39_words():
            raise ValidationError(_("Not a word of the BIP39 English list."))
        changed = self.instance.pk and word != self.instance.reveal_word()
        if changed and self.instance.discoveries.exists():
            raise ValidationError(_("Players already discovered this word; it cannot change."))
        return word

    def save(self, commit=True):
        self.instance.set_word(self.cleaned_data["word"])
        return super().save(commit)


def seed_word_form(request) -> type[SeedWordForm]:
    return SecretSeedWordForm if request.user.is_superuser else SeedWordForm


class SuperusersEdit:
    """Read-only for everyone but superusers (see the module doc)."""

    def has_add_permission(self, request, *args):
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)


class SeedWordInline(SuperusersEdit, admin.TabularInline):
    model = SeedWord
    extra = 0
    max_num = 24
    ordering = ["position"]

    def get_formset(self, request, obj=None, **kwargs):
        kwargs["fields"] = seed_word_form(request).Meta.fields
        return super().get_formset(request, obj, form=seed_word_form(request), **kwargs)

    def get_fields(self, request, obj=None):
        return seed_word_form(request).Meta.fields


@admin.register(Hunt)
class HuntAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "slug",
        "status_label",
        "starts_at",
        "ends_at",
        "winner",
        "players",
        "console_link",
    ]
    list_filter = ["registration_open", "paused", "starts_at"]
    search_fields = ["title", "slug", "description"]
    readonly_fields = ["console_link", "winner", "won_at", "created_at", "updated_at"]
    filter_horizontal = ["organizers"]
    inlines = [SeedWordInline]
    fieldsets = [
        (None, {"fields": ["title", "slug", "description", "prize", "console_link"]}),
        (_("Schedule"), {"fields": ["starts_at", "ends_at", "registration_open", "paused"]}),
        (_("Organizers"), {"fields": ["organizers"]}),
        (_("The phrase"), {"fields": ["phrase_hash"], "classes": ["collapse"]}),
        (
            _("Claims"),
            {
                "fields": [
                    "claims_need_all_words",
                    "claim_cooldown_seconds",
                    "claims_per_address_per_hour",
                ]
            },
        ),
        (
            _("Limits"),
            {
                "fields": [
                    "chat_rate_per_minute",
                    "chat_burst",
                    "gate_attempts",
                    "gate_cooldown_seconds",
                ]
            },
        ),
        (_("Result"), {"fields": ["winner", "won_at", "created_at", "updated_at"]}),
    ]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(n_players=Count("words__discoveries__player", distinct=True))
        )

    @admin.display(description=_("status"))
    def status_label(self, obj):
        return obj.status

    @admin.display(description=_("players with a discovery"), ordering="n_players")
    def players(self, obj):
        return obj.n_players

    @admin.display(description=_("live console"))
    def console_link(self, obj):
        if obj.pk is None:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("console", args=[obj.slug]), _("Open"))

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return fields
        # Who runs the console is the superusers' call: no organizer adds themselves.
        return [*fields, "phrase_hash", "title", "description", "prize", "organizers"]

    def save_model(self, request, obj, form, change):
        check_no_guarded_words(obj, [obj.title, obj.description, obj.prize])
        super().save_model(request, obj, form, change)


class ClueForm(forms.ModelForm):
    questions = LinesField(help_text=_("One right question per line."))
    keywords = LinesField(required=False, help_text=_("One per line; one must be in the question."))
    hints = LinesField(required=False, help_text=_("Public steering lines, one per line."))
    examples = LinesField(required=False, help_text=_("Phrasings that must unlock."))
    counterexamples = LinesField(required=False, help_text=_("Phrasings that must not unlock."))
    requires = PositionsField(required=False, help_text=_("Positions to discover first."))

    class Meta:
        model = Clue
        fields = [
            "word",
            "questions",
            "keywords",
            "requires",
            "hints",
            "examples",
            "counterexamples",
            "threshold",
            "reveal_line",
        ]

    def clean(self):
        data = super().clean()
        word = data.get("word")
        if word is not None:
            if not word.has_word:
                raise ValidationError(_("This position has no word on this server to guard."))
            check_no_guarded_words(
                word.hunt,
                [
                    *data.get("questions", []),
                    *data.get("keywords", []),
                    *data.get("hints", []),
                    data.get("reveal_line", ""),
                ],
            )
        return data


class ClueInline(SuperusersEdit, admin.StackedInline):
    model = Clue
    form = ClueForm
    extra = 0
    autocomplete_fields = ["word"]
    readonly_fields = ["operating_point", "gate_playground"]

    @admin.display(description=_("operating point"))
    def operating_point(self, obj):
        """The threshold the gate uses for this clue, where it comes from, and what the
        calibration from the clue's examples and counterexamples gave."""
        from hunt.matcher import ClueSpec, default_params  # numpy: only where clues are shown

        line = _("%(threshold).3f (%(source)s)") % {
            "threshold": default_params().threshold_of(ClueSpec.of(obj)),
            "source": obj.threshold_source_label(),
        }
        calibration = obj.calibration or {}
        if not calibration:
            return line
        return _(
            "%(line)s. Calibrated at %(point).3f: %(opened)d of %(examples)d examples open, "
            "%(unlocked)d of %(counter)d counterexamples open."
        ) % {
            "line": line,
            "point": calibration["threshold"],
            "opened": calibration["examples"][0],
            "examples": calibration["examples"][1],
            "unlocked": calibration["counterexamples"][0],
            "counter": calibration["counterexamples"][1],
        }

    @admin.display(description=_("gate playground"))
    def gate_playground(self, obj):
        if obj.pk is None:
            return _("Save the clue first.")
        url = reverse("admin:avatars_avatar_clue_gate", args=[obj.avatar_id, obj.pk])
        return format_html('<a href="{}">{}</a>', url, _("Try the gate"))


class TrialForm(forms.Form):
    """A message for the organizers' gate playground, as a player would send it."""

    message = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 3}))
    context = forms.CharField(
        label=_("Previous message"),
        required=False,
        help_text=_("The player's message before it, if any: the gate reads it for context."),
    )

    def clean_message(self):
        message = self.cleaned_data["message"].strip()
        # No longer than a player may send: the gate's work grows with the message.
        if len(message) > settings.CHAT_MAX_CHARS:
            raise ValidationError(
                _("A message has at most %(n)d characters.") % {"n": settings.CHAT_MAX_CHARS}
            )
        return message


class PhrasingForm(TrialForm):
    """The tried message, added to the clue's examples or counterexamples."""

    kind = forms.ChoiceField(
        choices=[("examples", _("example")), ("counterexamples", _("counterexample"))]
    )


@admin.register(SeedWord)
class SeedWordAdmin(SuperusersEdit, admin.ModelAdmin):
    """Mainly the target of the clue inline's word search."""

    list_display = ["hunt", "position", "world", "guarded_here"]
    list_filter = ["hunt"]
    search_fields = ["hunt__slug", "world", "hint"]
    ordering = ["hunt", "position"]

    def get_form(self, request, obj=None, **kwargs):
        kwargs["fields"] = seed_word_form(request).Meta.fields
        return super().get_form(request, obj, form=seed_word_form(request), **kwargs)

    def get_fields(self, request, obj=None):
        return seed_word_form(request).Meta.fields

    @admin.display(boolean=True, description=_("guarded here"))
    def guarded_here(self, obj):
        return obj.has_word


@admin.register(Player)
class PlayerAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hidden", "discoveries_count", "created_at"]
    list_filter = ["hidden"]
    search_fields = ["display_name", "user__username", "user__email"]
    list_editable = ["hidden"]
    autocomplete_fields = ["user"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n=Count("discoveries"))

    @admin.display(description=_("discoveries"), ordering="n")
    def discoveries_count(self, obj):
        return obj.n


@admin.register(Discovery)
class DiscoveryAdmin(admin.ModelAdmin):
    list_display = ["player", "hunt", "position", "first", "found_at"]
    list_filter = ["first", "word__hunt"]
    search_fields = ["player__display_name", "player__user__username"]
    date_hierarchy = "found_at"
    readonly_fields = ["player", "word", "clue", "message", "first", "found_at"]

    def get_fields(self, request, obj=None):
        # The turn's messages may hold the word (the reveal): superusers only.
        fields = list(self.readonly_fields)
        return fields if request.user.is_superuser else [f for f in fields if f != "message"]

    @admin.display(description=_("hunt"))
    def hunt(self, obj):
        return obj.word.hunt

    @admin.display(description=_("position"), ordering="word__position")
    def position(self, obj):
        return obj.word.position

    def has_add_permission(self, request):
        return False


@admin.register(Claim)
class ClaimAdmin(admin.ModelAdmin):
    list_display = ["player", "hunt", "result", "created_at"]
    list_filter = ["result", "hunt"]
    search_fields = ["player__display_name", "player__user__username"]
    date_hierarchy = "created_at"
    readonly_fields = ["hunt", "player", "result", "created_at"]

    def has_add_permission(self, request):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "created_at", "last_used_at", "expires_at"]
    search_fields = ["user__username"]
    readonly_fields = ["user", "digest", "created_at", "last_used_at", "expires_at"]

    def has_add_permission(self, request):
        return False
