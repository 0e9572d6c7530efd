"""Avatars (AI characters defined by a persona), their conversations with players, feedback."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from hunt.crypto import SealedTextField

CARD_PLACEHOLDERS = re.compile(r"\{\{(char|user)\}\}", re.IGNORECASE)


class Avatar(models.Model):
    class Review(models.TextChoices):
        """Where a creator's draft stands (avatars/studio.py); empty for avatars made in the
        admin or by a hunt file."""

        DRAFT = "draft", _("draft")
        SUBMITTED = "submitted", _("submitted for review")
        RETURNED = "returned", _("returned with a comment")
        APPROVED = "approved", _("approved")

    hunt = models.ForeignKey(
        "hunt.Hunt", null=True, blank=True, on_delete=models.CASCADE, related_name="avatars"
    )
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    persona = models.TextField(
        help_text=_("The magic formula: who this character is and how it behaves, in plain words.")
    )
    greeting = models.CharField(max_length=300, blank=True)
    examples = models.TextField(
        blank=True,
        help_text=_("Example dialogues showing how the character talks (part of the prompt)."),
    )
    # The digest of its Portrait row (below), or empty.
    portrait = models.CharField(max_length=64, blank=True, editable=False)
    land = models.CharField(max_length=200, blank=True, help_text=_("OVRLand hex id or place."))
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="avatars",
        help_text=_("The creator who may edit this avatar."),
    )
    published = models.BooleanField(default=True, help_text=_("Open to players."))
    # Studio (avatars/studio.py): a creator edits a live avatar through a working copy, an
    # unpublished avatar of no hunt that approval copies onto the live one.
    revision_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="revisions"
    )
    review = models.CharField(max_length=10, choices=Review.choices, blank=True)
    review_comment = models.TextField(blank=True)
    # What the organizers see at review: the checks run on submit and the sandbox transcript.
    review_record = models.JSONField(default=dict, blank=True, editable=False)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # Fields of an imported character card that this product does not use, kept so that an
    # export gives them back (avatars/cards.py). Never shown to players nor put in a prompt.
    card_extras = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(latitude__isnull=True, longitude__isnull=True)
                | Q(latitude__gte=-90, latitude__lte=90, longitude__gte=-180, longitude__lte=180),
                name="avatar_location_valid",
            ),
            # Race: a creator's two tabs starting a revision of the same live avatar at once.
            models.UniqueConstraint(fields=["revision_of"], name="avatar_one_working_copy"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def location(self) -> dict | None:
        if self.latitude is None or self.longitude is None:
            return None
        return {"lat": self.latitude, "lon": self.longitude}

    def public_texts(self) -> list[str]:
        """Texts the model or players see before any unlock."""
        return [self.persona, self.greeting, self.name, self.examples]

    @property
    def shown_greeting(self) -> str:
        """The greeting as players read it (card placeholders filled in)."""
        return self.prompt_text(self.greeting)

    def prompt_text(self, text: str) -> str:
        """`text` as the model reads it: character cards write {{char}} for the character's
        name and {{user}} for whoever talks to it."""
        return CARD_PLACEHOLDERS.sub(
            lambda m: self.name if m.group(1).lower() == "char" else "Visitor", text
        )

    def clean(self) -> None:
        from avatars.engine.prompts import check_persona_fits, hunt_context
        from hunt.models import guarded_words_in

        # Only a published avatar is checked: players and the model see nothing of a draft, and
        # a check on every save would let its editor test candidate words. Who may publish is
        # the admin's business (superusers only, avatars/admin.py). No count and no word in
        # the message: it must not help narrow a guess down.
        if self.hunt_id and self.published:
            if guarded_words_in(self.public_texts(), self.hunt.guarded_words().values()):
                raise ValidationError(
                    _(
                        "The persona, greeting, examples or name contains a guarded word of "
                        "the hunt."
                    )
                )
        context = hunt_context(self.hunt.title, self.hunt.description) if self.hunt_id else ""
        try:
            check_persona_fits(self.persona, self.greeting, context, examples=self.examples)
        except ValidationError as exc:
            raise ValidationError({"persona": exc}) from None


class Portrait(models.Model):
    """A resized avatar picture, a PNG (avatars/cards.py), stored once under its SHA-256 and
    served by avatars.views.portrait from the database: no media storage to share between web
    hosts. A table of its own, named by `Avatar.portrait`: avatar rows, read on every turn,
    carry 64 characters and not the image, and a draft, its working copy and the live avatar
    share one row. `clean_sandbox` deletes the rows no avatar names any more."""

    digest = models.CharField(max_length=64, primary_key=True)
    png = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.digest[:12]

    @classmethod
    def store(cls, png: bytes) -> str:
        """Stores `png` (if new) and returns its digest. Race: the same image stored twice at
        once; the primary key refuses the second insert and get_or_create reads the first."""
        digest = hashlib.sha256(png).hexdigest()
        cls.objects.get_or_create(digest=digest, defaults={"png": png})
        return digest

    @classmethod
    def png_of(cls, digest: str) -> bytes:
        """The PNG stored under `digest`; empty for none (or one cleaned up meanwhile)."""
        png = cls.objects.filter(digest=digest).values_list("png", flat=True).first()
        return bytes(png) if digest and png is not None else b""


class Conversation(models.Model):
    """One persistent conversation per (player, avatar)."""

    player = models.ForeignKey(
        "hunt.Player", on_delete=models.CASCADE, related_name="conversations"
    )
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="conversations")
    # A creator trying out an unpublished avatar: not play. The turn pipeline never asks the
    # gate for it (no clue opens, no hint), it counts nowhere, and `clean_sandbox` deletes it
    # after a while.
    sandbox = models.BooleanField(default=False)
    # A rolling summary of the messages up to `summary_upto` (a message id), so the prompt stays
    # bounded however long the conversation runs.
    # Quotes the turns it folds, reveal replies included: sealed at rest (hunt.crypto).
    summary = SealedTextField(blank=True)
    summary_upto = models.BigIntegerField(null=True, blank=True)
    # When the player last said something in play (opening a chat is not talking, a sandbox
    # is not play): the console's active players and "talked to the avatar" read this through
    # the index below.
    last_said_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            # Race: a player's two tabs opening the same avatar at once.
            models.UniqueConstraint(fields=["player", "avatar"], name="conversation_per_pair"),
        ]
        indexes = [
            models.Index(fields=["avatar", "last_said_at"], name="conversation_avatar_said"),
            models.Index(fields=["sandbox", "updated_at"], name="conversation_sandbox_age"),
        ]

    def __str__(self) -> str:
        return f"{self.player} × {self.avatar}"

    def group_name(self) -> str:
        return f"chat.conversation.{self.pk}"


class MessageQuerySet(models.QuerySet):
    def unsummarised(self, conversation: Conversation) -> MessageQuerySet:
        """The conversation's finished messages after its summary, oldest first: the turns a
        prompt quotes in full (failed and unanswered turns are left out)."""
        rows = self.filter(conversation=conversation, status=Message.Status.DONE)
        if conversation.summary_upto:
            rows = rows.filter(pk__gt=conversation.summary_upto)
        return rows.order_by("id")

    def thread(self, conversation_id: int) -> MessageQuerySet:
        """What the player sees of a conversation: their messages and the finished replies (a
        reply row still being written is not part of the thread yet)."""
        return self.filter(conversation_id=conversation_id).filter(
            Q(role=Message.Role.PLAYER) | Q(status=Message.Status.DONE)
        )

    def waiting(self) -> MessageQuerySet:
        """Player messages of every conversation whose reply is not written yet."""
        return self.filter(
            role=Message.Role.PLAYER,
            status__in=(Message.Status.PENDING, Message.Status.GENERATING),
        )

    def leased(self, message_id: int, claimed_at: datetime) -> MessageQuerySet:
        """The message while a generation job still holds its turn under the lease stamped
        `claimed_at`: empty once the turn was taken over (a newer stamp), failed or done."""
        return self.filter(pk=message_id, status=Message.Status.GENERATING, claimed_at=claimed_at)


class Message(models.Model):
    class Role(models.TextChoices):
        PLAYER = "player", _("player")
        AVATAR = "avatar", _("avatar")

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting for a reply")
        GENERATING = "generating", _("reply being generated")
        DONE = "done", _("done")
        FAILED = "failed", _("generation failed")

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    # A reveal turn's reply holds the word: sealed at rest (hunt.crypto), read in clear.
    text = SealedTextField()
    client_id = models.CharField(max_length=64, null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DONE)
    reply_to = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="reply"
    )
    # Set when a generation job claims the turn; lets a redelivered job take over a dead one.
    claimed_at = models.DateTimeField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    # On a reply: how long its player waited for the first streamed text, from the moment the
    # question was stored, and the model that wrote it (feedback belongs to a model).
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)  # the version's name, for display
    model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            # Race: a client resending its frame after a reconnect; one stored message per id.
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_once",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_conversation_id"),
            models.Index(fields=["status"], name="message_status"),
            # The console's service figures read the last minutes of replies and failures.
            models.Index(fields=["created_at"], name="message_created"),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


class Feedback(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    player = models.ForeignKey("hunt.Player", on_delete=models.CASCADE, related_name="feedback")
    value = models.SmallIntegerField(choices=[(1, "👍"), (-1, "👎")])
    # Copied from the rated reply, so the console's rates per avatar and per model read this
    # table alone instead of joining a million messages.
    avatar = models.ForeignKey(Avatar, null=True, on_delete=models.CASCADE, related_name="feedback")
    model = models.CharField(max_length=200, blank=True)
    model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="feedback"
    )
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "feedback"
        constraints = [
            # A player changing their mind updates the one row (update_or_create).
            models.UniqueConstraint(fields=["message", "player"], name="feedback_once"),
            models.CheckConstraint(condition=Q(value__in=[1, -1]), name="feedback_value_sign"),
        ]
        indexes = [
            # The console's thumbs per avatar and model, counted on this index alone.
            models.Index(fields=["avatar", "model", "value"], name="feedback_avatar_model"),
        ]

    def __str__(self) -> str:
        return f"{self.value:+d} on {self.message_id}"


class WorkerBeat(models.Model):
    """A generation worker process saying it is alive, every BEAT_SECONDS (avatars/tasks.py):
    the console's "workers alive" and the model each one serves."""

    BEAT_SECONDS = 15
    # Three beats missed: the process is gone or stuck.
    ALIVE_SECONDS = 3 * BEAT_SECONDS

    name = models.CharField(max_length=200, unique=True)  # host:pid
    model = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """A model that can play the avatars: a base model (`AVATAR_MODEL`, or any local folder)
    or one fine-tuned from another version on the product's own data (avatars/tuning.py).
    Exactly one is active: the generation workers serve it from the next turn on
    (`serving`). A version goes candidate -> certified (avatars/certification.py) -> active
    -> retired; promotion and rollback are the actions in avatars/versions.py."""

    class Status(models.TextChoices):
        TRAINING = "training", _("training")
        FAILED = "failed", _("training failed")
        CANDIDATE = "candidate", _("candidate")
        CERTIFIED = "certified", _("certified")
        ACTIVE = "active", _("active")
        RETIRED = "retired", _("retired")

    name = models.CharField(max_length=200, unique=True)
    # What the engine loads: a packaged model's name or a local model folder.
    folder = models.CharField(max_length=500)
    # The base model at the root of its lineage (the AVATAR_MODEL value it was trained from).
    base = models.CharField(max_length=500)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    method = models.CharField(max_length=8, blank=True)  # sft, kto or dpo; empty for a base
    # Training: the recipe (method, steps, seed, LoRA settings), the frozen data snapshot
    # (counts, hash, files) and what the run measured (loss, seconds per step).
    config = models.JSONField(default=dict, blank=True)
    data = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # The last certification's report, per avatar (avatars/certification.py).
    certification = models.JSONField(default=dict, blank=True)
    # Long work in progress on this version: {"task", "done", "total"}, for the admin's bar.
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    # The version this one replaced when it was promoted: what a rollback goes back to.
    replaced = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    certified_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("promote_modelversion", "Can promote and roll back model versions"),
            ("train_modelversion", "Can train and certify model versions"),
        ]
        constraints = [
            # Race: two organizers promoting two versions at once; one active version at most.
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="one_active_model_version"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def serving(cls) -> ModelVersion:
        """The active version. On a fresh install none is: the configured model
        (`AVATAR_MODEL`) gets a row and becomes active, so every reply names its version."""
        active = cls.objects.filter(status=cls.Status.ACTIVE).first()
        if active is not None:
            return active
        from django.db import IntegrityError, transaction
        from django.utils import timezone

        try:
            # Race: two workers starting at once on a fresh install; the unique name (and the
            # one-active constraint) refuse the second row, which then reads the first.
            with transaction.atomic():
                version, _ = cls.objects.get_or_create(
                    name=settings.AVATAR_MODEL,
                    defaults={
                        "folder": settings.AVATAR_MODEL,
                        "base": settings.AVATAR_MODEL,
                        "status": cls.Status.ACTIVE,
                        "activated_at": timezone.now(),
                    },
                )
        except IntegrityError:
            version = cls.objects.get(name=settings.AVATAR_MODEL)
        return version


class PersonaCheck(models.Model):
    """An organizer's test of an avatar's persona: a question and what the answer must (or
    must not) contain. Certification asks it of every candidate model (avatars/certification.py).
    Checks are never training data: they measure what training did."""

    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="persona_checks")
    question = models.CharField(max_length=300)
    must_contain = models.TextField(
        blank=True,
        help_text=_(
            "One requirement per line, all required; alternatives on a line separated by |, "
            'e.g. "fifty|50". Case does not matter.'
        ),
    )
    must_not_contain = models.TextField(
        blank=True, help_text=_("One text per line that the answer must not contain.")
    )

    class Meta:
        ordering = ["avatar", "id"]

    def __str__(self) -> str:
        return self.question

    def requirements(self) -> list[list[str]]:
        return [
            [alt.strip().lower() for alt in line.split("|") if alt.strip()]
            for line in self.must_contain.splitlines()
            if line.strip()
        ]

    def forbidden(self) -> list[str]:
        return [line.strip().lower() for line in self.must_not_contain.splitlines() if line.strip()]

    def failures(self, reply: str) -> list[str]:
        """What `reply` misses or holds against this check; empty when it passes."""
        text = reply.lower()
        missing = [
            " | ".join(alts) for alts in self.requirements() if not any(a in text for a in alts)
        ]
        return [f"missing {m}" for m in missing] + [
            f"holds {f}" for f in self.forbidden() if f in text
        ]


class BetterReply(models.Model):
    """A reply an organizer wrote in place of a rated one: a preference pair for training
    (DPO: the organizer's text is chosen, the model's rejected)."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="better")
    # Quotes the conversation's world; sealed at rest like the messages it answers.
    text = SealedTextField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "better replies"

    def __str__(self) -> str:
        return f"better reply to {self.message_id}"


class RatedReply(Message):
    """An avatar's reply players rated, as organizers review it to write a better one
    (`BetterReply`); its own admin screen with its own permissions (avatars/admin.py)."""

    class Meta:
        proxy = True
        verbose_name = "rated reply"
        verbose_name_plural = "rated replies"
