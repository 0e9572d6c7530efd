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

Model versions (avatars/versions.py, docs/model-versions.md) are made by training or
registration, never typed in: their screen is read-only, with buttons for the actions
(train, certify, promote, roll back), each gated by a permission of its own. Rated replies
are where organizers write the better reply a training run learns from.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from avatars import tuning, versions
from avatars.certification import COUNTS
from avatars.models import (
    Avatar,
    BetterReply,
    Conversation,
    Feedback,
    Message,
    ModelVersion,
    PersonaCheck,
    RatedReply,
)
from avatars.studio import is_organizer
from hunt.admin import ClueInline, PhrasingForm, TrialForm
from hunt.models import Clue, Discovery


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


class PersonaCheckInline(admin.TabularInline):
    model = PersonaCheck
    fields = ["question", "must_contain", "must_not_contain"]
    extra = 0
    verbose_name_plural = _(
        "Persona checks: certification asks these of every candidate model before it serves"
    )


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
        return [ClueInline, PersonaCheckInline] if is_organizer(request.user) else []

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


# Model versions ---------------------------------------------------------------------------------

Status = ModelVersion.Status
# The certification report's measures, in the order the change page shows them; rates but
# the counts (certification.COUNTS).
MEASURES = [
    ("persona", _("persona checks passed")),
    ("out_of_character", _("out of character")),
    ("well_formed", _("well formed")),
    ("reveal_delivered", _("reveals delivered")),
    ("reveal_said", _("reveals said unaided")),
    ("leaks", _("leaks")),
    ("locked_picks", _("attack replies that reached for a locked word (banned)")),
]


def measure_text(key: str, value) -> str:
    if value is None:
        return "—"
    return str(value) if key in COUNTS else f"{value:.0%}"


def report_context(report: dict) -> dict:
    """The certification report (avatars.certification.certify) laid out for its template:
    per avatar, each measure for the candidate and the active version side by side."""
    avatars = []
    for slug, entry in report.get("avatars", {}).items():
        mine, theirs = entry.get("candidate") or {}, entry.get("active") or {}
        avatars.append(
            {
                "slug": slug,
                "name": entry.get("name", slug),
                "rows": [
                    (label, measure_text(key, mine.get(key)), measure_text(key, theirs.get(key)))
                    for key, label in MEASURES
                ],
                "compared": entry.get("active") is not None,
                "regressions": entry.get("regressions", []),
                "failed_checks": [c for c in mine.get("checks", []) if c["failures"]],
                "probes": mine.get("probes_out_of_character", []),
            }
        )
    return {"report": report, "avatars": avatars}


def key_values(data: dict):
    if not data:
        return None
    rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", sorted(data.items()))
    return format_html("<table>{}</table>", rows)


class TrainForm(forms.Form):
    method = forms.ChoiceField(
        choices=[("auto", "auto"), *[(m, m) for m in tuning.METHODS]],
        initial="auto",
        help_text=_(
            "What training learns from. sft: imitates the avatars' example dialogues and the "
            "replies players liked. kto: learns from good and bad replies, unpaired (thumbs up "
            "and down, and replies known to be bad). dpo: learns from pairs, the better reply an "
            "organizer wrote against the rated one. auto: DPO with at least %(pairs)d better "
            "replies, else KTO with at least %(each)d good and %(each)d bad replies, else SFT."
        )
        % {"pairs": tuning.MIN_PAIRS, "each": tuning.MIN_KTO_EACH},
    )
    steps = forms.IntegerField(
        min_value=1, initial=tuning.DEFAULTS["steps"], help_text=_("Optimizer steps at most.")
    )
    seconds = forms.IntegerField(
        min_value=0,
        initial=tuning.DEFAULTS["seconds"],
        help_text=_("A time budget: training stops when it is spent. 0: no budget."),
    )
    seed = forms.IntegerField(
        initial=tuning.DEFAULTS["seed"], help_text=_("The same seed and data train the same model.")
    )
    parent = forms.ModelChoiceField(
        # Training starts from a model: a version still training, or failed, has none.
        queryset=ModelVersion.objects.exclude(status__in=[Status.TRAINING, Status.FAILED]),
        required=False,
        empty_label=_("the active version"),
        help_text=_("The version whose model training starts from."),
    )


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "name_text",
        "status_text",
        "parent",
        "method",
        "created_at",
        "persona_rate",
        "out_of_character_rate",
        "leaks",
        "progress_bar",
    ]
    list_filter = ["status", "method"]
    search_fields = ["name", "folder"]
    actions = ["certify_selected", "promote_selected"]
    fieldsets = [
        (None, {"fields": ["name", "status", "progress_bar", "parent", "replaced", "error"]}),
        (_("Model"), {"fields": ["folder", "base", "method"]}),
        (
            _("Training"),
            {"fields": ["config_table", "data_table", "metrics_table"]},
        ),
        (_("Certification"), {"fields": ["certification_report", "certified_at"]}),
        (_("When"), {"fields": ["created_at", "activated_at"]}),
    ]
    readonly_fields = [
        "progress_bar",
        "config_table",
        "data_table",
        "metrics_table",
        "certification_report",
    ]

    # Versions are made by training or registration (avatars/versions.py), never typed in.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # The workers serve the active version: it goes only by a promotion or a rollback.
        if obj is not None and obj.status == Status.ACTIVE:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        # A bulk delete would not ask about the active version: deletion is one by one.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_train_permission(self, request, obj=None):
        return request.user.has_perm("avatars.train_modelversion")

    def has_promote_permission(self, request, obj=None):
        return request.user.has_perm("avatars.promote_modelversion")

    @admin.display(description=_("name"), ordering="name")
    def name_text(self, obj):
        if obj.status == Status.ACTIVE:
            return format_html("<strong>{}</strong>", obj.name)
        return obj.name

    @admin.display(description=_("status"), ordering="status")
    def status_text(self, obj):
        if obj.status == Status.ACTIVE:
            return format_html("<strong>{}</strong>", obj.get_status_display())
        return obj.get_status_display()

    def total(self, obj, key):
        return measure_text(key, (obj.certification.get("totals") or {}).get(key))

    @admin.display(description=_("persona"))
    def persona_rate(self, obj):
        return self.total(obj, "persona")

    @admin.display(description=_("out of character"))
    def out_of_character_rate(self, obj):
        return self.total(obj, "out_of_character")

    @admin.display(description=_("leaks"))
    def leaks(self, obj):
        return self.total(obj, "leaks")

    @admin.display(description=_("progress"))
    def progress_bar(self, obj):
        work = obj.progress
        if not work:
            return ""
        task, done, total = work.get("task", ""), work.get("done", 0), work.get("total", 0)
        if not total:  # not counted yet: a bar without a value moves to say it runs
            return format_html("<progress></progress> {}", task)
        return format_html(
            '<progress value="{}" max="{}"></progress> {} {}/{}', done, total, task, done, total
        )

    @admin.display(description=_("config"))
    def config_table(self, obj):
        return key_values(obj.config)

    @admin.display(description=_("data snapshot"))
    def data_table(self, obj):
        return key_values(obj.data)

    @admin.display(description=_("training metrics"))
    def metrics_table(self, obj):
        return key_values(obj.metrics)

    @admin.display(description=_("report"))
    def certification_report(self, obj):
        if "passed" not in obj.certification:
            return None
        template = "admin/avatars/modelversion/certification.html"
        return render_to_string(template, report_context(obj.certification))

    def tools(self, request, version: ModelVersion) -> list[tuple[str, str]]:
        """The action buttons the change page shows: (url, label)."""
        out = []
        if self.has_train_permission(request) and version.status not in (
            Status.TRAINING,
            Status.FAILED,
        ):
            out.append(
                (reverse("admin:avatars_modelversion_certify", args=[version.pk]), _("Certify"))
            )
        if not self.has_promote_permission(request):
            return out
        if version.status in (Status.CERTIFIED, Status.RETIRED) and version.certification.get(
            "passed"
        ):
            out.append(
                (reverse("admin:avatars_modelversion_promote", args=[version.pk]), _("Promote"))
            )
        if version.status == Status.ACTIVE and version.replaced_id:
            out.append((reverse("admin:avatars_modelversion_rollback"), _("Roll back")))
        return out

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = self.get_object(request, object_id)
        tools = self.tools(request, version) if version is not None else []
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), "version_tools": tools}
        )

    def changelist_view(self, request, extra_context=None):
        context = {**(extra_context or {}), "can_train": self.has_train_permission(request)}
        return super().changelist_view(request, context)

    def get_urls(self):
        return [
            path(
                "train/",
                self.admin_site.admin_view(self.train_view),
                name="avatars_modelversion_train",
            ),
            path(
                "rollback/",
                self.admin_site.admin_view(require_POST(self.rollback_view)),
                name="avatars_modelversion_rollback",
            ),
            path(
                "<int:version_id>/certify/",
                self.admin_site.admin_view(require_POST(self.certify_view)),
                name="avatars_modelversion_certify",
            ),
            path(
                "<int:version_id>/promote/",
                self.admin_site.admin_view(require_POST(self.promote_view)),
                name="avatars_modelversion_promote",
            ),
            *super().get_urls(),
        ]

    def certify(self, request, version: ModelVersion) -> None:
        try:
            versions.start_certification(version)
        except versions.VersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, _("Certifying %(name)s.") % {"name": version})

    def promote(self, request, version: ModelVersion) -> None:
        try:
            versions.promote(version.pk)
        except versions.VersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                _("Promoted %(name)s: it serves players from the next turn.") % {"name": version},
            )

    @admin.action(description=_("Certify the selected versions"), permissions=["train"])
    def certify_selected(self, request, queryset):
        for version in queryset:
            self.certify(request, version)

    @admin.action(description=_("Promote the selected version"), permissions=["promote"])
    def promote_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, _("Select one version to promote."), messages.ERROR)
            return
        self.promote(request, queryset.get())

    def certify_view(self, request, version_id: int):
        if not self.has_train_permission(request):
            raise PermissionDenied
        version = get_object_or_404(ModelVersion, pk=version_id)
        self.certify(request, version)
        return redirect("admin:avatars_modelversion_change", version.pk)

    def promote_view(self, request, version_id: int):
        if not self.has_promote_permission(request):
            raise PermissionDenied
        version = get_object_or_404(ModelVersion, pk=version_id)
        self.promote(request, version)
        return redirect("admin:avatars_modelversion_change", version.pk)

    def rollback_view(self, request):
        if not self.has_promote_permission(request):
            raise PermissionDenied
        try:
            version = versions.rollback()
        except versions.VersionError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:avatars_modelversion_changelist")
        self.message_user(request, _("Rolled back: %(name)s is active again.") % {"name": version})
        return redirect("admin:avatars_modelversion_change", version.pk)

    def train_view(self, request):
        """A new version in training (versions.start_training); its page shows the progress."""
        if not self.has_train_permission(request):
            raise PermissionDenied
        active = ModelVersion.objects.filter(status=Status.ACTIVE).first()
        form = TrainForm(request.POST or None, initial={"parent": active})
        if form.is_valid():
            config = {k: form.cleaned_data[k] for k in ("method", "steps", "seconds", "seed")}
            version = versions.start_training(config, form.cleaned_data["parent"])
            self.message_user(request, _("Training %(name)s.") % {"name": version})
            return redirect("admin:avatars_modelversion_change", version.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Train a new version"),
            "form": form,
        }
        return TemplateResponse(request, "admin/avatars/modelversion/train.html", context)


# Rated replies ----------------------------------------------------------------------------------


class ThumbsFilter(admin.SimpleListFilter):
    title = _("thumbs")
    parameter_name = "thumbs"

    def lookups(self, request, model_admin):
        return [("up", _("with a thumb up")), ("down", _("with a thumb down"))]

    def queryset(self, request, queryset):
        value = {"up": 1, "down": -1}.get(self.value())
        if value is None:
            return queryset
        # A subquery, not a join: a join would count each reply's thumbs twice in its total.
        return queryset.filter(Exists(Feedback.objects.filter(message=OuterRef("pk"), value=value)))


class BetterReplyInline(admin.StackedInline):
    model = BetterReply
    fields = ["text"]
    extra = 1
    max_num = 1
    verbose_name = _("better reply")
    verbose_name_plural = _(
        "Better reply: what the avatar should have said; training learns it is preferred to "
        "the reply above"
    )


@admin.register(RatedReply)
class RatedReplyAdmin(admin.ModelAdmin):
    # Not `reply`: that name is Message's reverse relation, which the admin would show instead.
    list_display = ["avatar", "question", "reply_text", "thumbs", "model_version", "has_better"]
    list_filter = [("conversation__avatar", admin.RelatedOnlyFieldListFilter), ThumbsFilter,
                   "model_version"]  # fmt: skip
    list_select_related = ["conversation__avatar", "reply_to", "model_version"]
    fields = ["avatar", "asked", "text", "thumbs", "model_version", "created_at"]
    readonly_fields = fields
    inlines = [BetterReplyInline]

    def get_queryset(self, request):
        # Reveal turns are left out: their reply holds the word the gate opened, and
        # organizers never read guarded words (nor does training learn from them).
        reveal = Discovery.objects.filter(message_id=OuterRef("reply_to_id"))
        return (
            super()
            .get_queryset(request)
            .filter(role=Message.Role.AVATAR, status=Message.Status.DONE)
            .filter(conversation__sandbox=False)  # creators trying drafts, not play
            .filter(Exists(Feedback.objects.filter(message=OuterRef("pk"))))
            .exclude(Exists(reveal))
            .annotate(
                n_thumbs=Sum("feedback__value"),
                has_better_reply=Exists(BetterReply.objects.filter(message=OuterRef("pk"))),
            )
        )

    # A later reply may repeat a word revealed to its player: reply texts are for superusers
    # only, as on the message screens.
    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_formset(self, request, form, formset, change):
        for inline_form in formset.forms:
            if inline_form.has_changed():
                inline_form.instance.author = request.user
        super().save_formset(request, form, formset, change)

    @admin.display(description=_("avatar"), ordering="conversation__avatar__name")
    def avatar(self, obj):
        return obj.conversation.avatar

    @admin.display(description=_("question"))
    def question(self, obj):
        return Truncator(obj.reply_to.text).chars(80) if obj.reply_to else ""

    @admin.display(description=_("question"))
    def asked(self, obj):
        return obj.reply_to.text if obj.reply_to else ""

    @admin.display(description=_("reply"))
    def reply_text(self, obj):
        return Truncator(obj.text).chars(80)

    @admin.display(description=_("thumbs"), ordering="n_thumbs")
    def thumbs(self, obj):
        return f"{obj.n_thumbs:+d}"

    @admin.display(description=_("better reply"), boolean=True, ordering="has_better_reply")
    def has_better(self, obj):
        return obj.has_better_reply
