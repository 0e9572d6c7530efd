"""The game: hunts, their 24 seed words, clues that guard them, players, discoveries, claims."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache as django_cache
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from hunt import crypto
from hunt.leaks import find_guarded_words

PHRASE_LENGTH = 24
DEFAULT_REVEAL_LINE = "Very well, you asked the right question. The word you seek is “{word}”."


def guarded_words_in(texts: Iterable[str], words: Iterable[str]) -> list[str]:
    """The guarded words that appear as whole words in any of `texts` (case-insensitive).

    A plural or possessive ("lamps", "lamp's") gives the word away too, so it counts, and so do
    zero-width characters, look-alike letters or spaced-out letters inside it: the check is
    hunt.leaks.find_guarded_words, shared with the gate.

    Used on every save of text the model or players see before an unlock (personas, greetings,
    hints, questions, keywords, descriptions): such a text would hand the word to everyone.
    """
    return find_guarded_words("\n".join(t for t in texts if t), words)


class HuntQuerySet(models.QuerySet):
    def with_winner(self) -> HuntQuerySet:
        """Hunts with their winner and the winner's account read in the same query (pages and
        REST answers that name the winner)."""
        return self.select_related("winner__user")


class Hunt(models.Model):
    class Status(models.TextChoices):
        UPCOMING = "upcoming", _("upcoming")
        LIVE = "live", _("live")
        ENDED = "ended", _("ended")

    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    prize = models.CharField(max_length=300, blank=True)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    # Django password-hasher format ("pbkdf2_sha256$..."): the full phrase is never stored.
    phrase_hash = models.CharField(max_length=256)
    registration_open = models.BooleanField(default=True)
    # An organizer's stop (an incident, a break in a live show): while paused the avatars take
    # no message and no claim is judged; the time window (status) is left as it was.
    paused = models.BooleanField(
        default=False, help_text=_("Chat and claims answer hunt_not_live while paused.")
    )
    organizers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="organized_hunts",
        help_text=_("Staff who run this hunt's live console (superusers always may)."),
    )

    chat_rate_per_minute = models.PositiveSmallIntegerField(
        default=10, help_text=_("Messages a player may send per minute.")
    )
    chat_burst = models.PositiveSmallIntegerField(
        default=3, help_text=_("Messages a player may send at once before the rate applies.")
    )
    claim_cooldown_seconds = models.PositiveIntegerField(
        default=60, help_text=_("First cooldown after a wrong claim; it doubles each time.")
    )
    gate_attempts = models.PositiveSmallIntegerField(
        default=5, help_text=_("Near misses a player may make before a cooldown.")
    )
    gate_cooldown_seconds = models.PositiveIntegerField(
        default=300, help_text=_("How long no clue opens for a player after too many near misses.")
    )
    # Without it, accounts being free, the last missing word or two could be brute-forced
    # through the checksum (one missing word leaves 6 to 9 valid phrases).
    claims_need_all_words = models.BooleanField(
        default=True,
        help_text=_(
            "A claim is judged only for a player who has found every word this server guards."
        ),
    )
    claims_per_address_per_hour = models.PositiveSmallIntegerField(
        default=10,
        help_text=_("Claims one client address may make per hour, whatever the account."),
    )

    winner = models.ForeignKey(
        "Player", null=True, blank=True, on_delete=models.PROTECT, related_name="hunts_won"
    )
    won_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = HuntQuerySet.as_manager()

    class Meta:
        ordering = ["-starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=models.F("starts_at")), name="hunt_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("hunt-detail", args=[self.slug])

    @property
    def status(self) -> str:
        now = timezone.now()
        if now < self.starts_at:
            return self.Status.UPCOMING
        if now >= self.ends_at:
            return self.Status.ENDED
        return self.Status.LIVE

    def is_live(self) -> bool:
        """Within its time window and not paused: words open and claims are judged."""
        return not self.paused and self.status == self.Status.LIVE

    def run_by(self, user) -> bool:
        """Whether `user` runs this hunt's live console: superusers, and the staff named among
        its organizers."""
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return False
        return user.is_superuser or self.organizers.filter(pk=user.pk).exists()

    def guarded_count(self) -> int:
        """How many of the phrase's words this server guards (the others are hidden elsewhere)."""
        return self.words.exclude(word_encrypted="").count()

    def guarded_words(self) -> dict[int, str]:
        """Position -> clear word, for the gate and the reply guard only (see hunt/crypto.py)."""
        return {w.position: w.reveal_word() for w in self.words.all() if w.has_word}


class SeedWord(models.Model):
    hunt = models.ForeignKey(Hunt, on_delete=models.CASCADE, related_name="words")
    position = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(PHRASE_LENGTH)]
    )
    # Fernet token, empty for a word hidden outside this server (see hunt/crypto.py).
    word_encrypted = models.TextField(blank=True, editable=False)
    world = models.CharField(max_length=120, blank=True)
    hint = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["hunt", "position"]
        constraints = [
            models.UniqueConstraint(fields=["hunt", "position"], name="seedword_unique_position"),
            models.CheckConstraint(
                condition=Q(position__gte=1) & Q(position__lte=PHRASE_LENGTH),
                name="seedword_position_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hunt.slug} #{self.position}"

    @property
    def has_word(self) -> bool:
        return bool(self.word_encrypted)

    def reveal_word(self) -> str:
        return crypto.decrypt_word(self.word_encrypted) if self.word_encrypted else ""

    def set_word(self, word: str) -> None:
        self.word_encrypted = crypto.encrypt_word(word.strip().lower()) if word.strip() else ""


class Player(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="player"
    )
    display_name = models.CharField(max_length=60, blank=True)
    hidden = models.BooleanField(
        default=False, help_text=_("Left out of leaderboards (staff, testers).")
    )
    # Set with the account's deactivation (console.actions.suspend_player), which is what
    # actually shuts the account out: sign-in, tokens and open sockets.
    suspended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return self.display_name or self.user.get_username()

    @property
    def plays(self) -> bool:
        """Whether this account may discover words and claim. Staff (organizers, creators)
        may not: they can read or shape what players must find, so the prize is not theirs."""
        return not self.user.is_staff

    @classmethod
    def for_user(cls, user) -> Player:
        """The player profile of an account, created on first use.

        Race: two first requests of a new account at once; the unique user column makes the
        loser's insert fail and get_or_create then reads the winner's row.
        """
        player, _created = cls.objects.get_or_create(user=user, defaults={"hidden": user.is_staff})
        return player


class Clue(models.Model):
    """An avatar guards one seed word: the right questions open it for a player."""

    avatar = models.ForeignKey("avatars.Avatar", on_delete=models.CASCADE, related_name="clues")
    word = models.ForeignKey(SeedWord, on_delete=models.CASCADE, related_name="clues")
    questions = models.JSONField(default=list, help_text=_("Example phrasings of the question."))
    keywords = models.JSONField(default=list, blank=True)
    requires = models.JSONField(
        default=list, blank=True, help_text=_("Positions the player must have discovered first.")
    )
    hints = models.JSONField(default=list, blank=True, help_text=_("Public steering lines."))
    examples = models.JSONField(default=list, blank=True, help_text=_("Must unlock."))
    counterexamples = models.JSONField(default=list, blank=True, help_text=_("Must not unlock."))
    threshold = models.FloatField(
        null=True,
        blank=True,
        help_text=_("Similarity needed to open; empty: calibrated from the examples on save."),
    )
    # The clue's operating point, calibrated from its questions, examples and counterexamples
    # whenever they change (hunt.gate.calibrate_clues), and what it gives on them.
    calibrated_threshold = models.FloatField(null=True, blank=True, editable=False)
    calibration = models.JSONField(default=dict, blank=True, editable=False)
    reveal_line = models.CharField(
        max_length=300,
        blank=True,
        help_text=_("Said when the word is revealed; {word} stands for the word."),
    )

    class Meta:
        ordering = ["word__position"]
        constraints = [
            models.UniqueConstraint(fields=["avatar", "word"], name="clue_unique_avatar_word"),
        ]

    def __str__(self) -> str:
        return f"{self.avatar} guards #{self.word.position}"

    def reveal_text(self, word: str) -> str:
        return (self.reveal_line or DEFAULT_REVEAL_LINE).replace("{word}", word)

    THRESHOLD_SOURCES = {
        "clue": _("set by hand"),
        "calibrated": _("calibrated"),
        "default": _("default"),
    }

    def threshold_source(self) -> str:
        """Where the clue's operating point comes from: "clue" (set by hand), "calibrated"
        or "default" (THRESHOLD_SOURCES holds how organizers read them)."""
        if self.threshold is not None:
            return "clue"
        return "calibrated" if self.calibrated_threshold is not None else "default"

    def threshold_source_label(self) -> str:
        return self.THRESHOLD_SOURCES[self.threshold_source()]

    def nudge(self, count: int) -> str:
        """What the avatar hints at after the player's `count`-th near miss: the clue's public
        hints in turn, else its topic (keywords). Never the word or a right question."""
        if self.hints:
            return self.hints[count % len(self.hints)]
        return ", ".join(self.keywords[:3])

    def public_texts(self) -> list[str]:
        """Every text of this clue that players or the model may see before unlock."""
        return [*self.questions, *self.keywords, *self.hints, self.reveal_line]


class DiscoveryQuerySet(models.QuerySet):
    def of(self, hunt, *, player=None, user=None) -> DiscoveryQuerySet:
        """The words found in `hunt` by `player` (or by the player of account `user`)."""
        mine = {"player": player} if user is None else {"player__user": user}
        return self.filter(word__hunt=hunt, **mine)


class Discovery(models.Model):
    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="discoveries")
    word = models.ForeignKey(SeedWord, on_delete=models.CASCADE, related_name="discoveries")
    clue = models.ForeignKey(Clue, null=True, blank=True, on_delete=models.SET_NULL)
    message = models.ForeignKey(
        "avatars.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    first = models.BooleanField(default=False)
    found_at = models.DateTimeField(default=timezone.now)

    objects = DiscoveryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "discoveries"
        ordering = ["-found_at"]
        constraints = [
            # Races: the same player asking twice at once, and two players claiming "first".
            models.UniqueConstraint(fields=["player", "word"], name="discovery_once_per_player"),
            models.UniqueConstraint(
                fields=["word"], condition=Q(first=True), name="discovery_one_first_finder"
            ),
        ]
        indexes = [
            models.Index(fields=["word", "found_at"], name="discovery_word_time"),
            # Covers the leaderboard's aggregate (hunt/leaderboard.py): counting a hunt's
            # discoveries per player reads this index only, never the table.
            models.Index(fields=["word", "player", "found_at"], name="discovery_word_player_time"),
            # The console's newest discoveries: read backwards, it stops after a few rows
            # instead of sorting a hunt's every discovery.
            models.Index(fields=["found_at"], name="discovery_time"),
        ]

    def __str__(self) -> str:
        return f"{self.player} found #{self.word.position}"


class Claim(models.Model):
    class Result(models.TextChoices):
        WINNER = "winner", _("winner")
        CORRECT = "correct", _("correct")
        WRONG = "wrong", _("wrong")
        INVALID = "invalid", _("invalid")

    hunt = models.ForeignKey(Hunt, on_delete=models.CASCADE, related_name="claims")
    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="claims")
    # The claimed phrase itself is never stored: a correct one is the wallet's key.
    result = models.CharField(max_length=10, choices=Result.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Race: two correct claims at once; only one row may say "winner".
            models.UniqueConstraint(
                fields=["hunt"], condition=Q(result="winner"), name="claim_one_winner"
            ),
        ]
        indexes = [
            models.Index(fields=["hunt", "player", "created_at"], name="claim_player_time"),
        ]

    def __str__(self) -> str:
        return f"{self.player} {self.result} on {self.hunt}"


class ApiTokenQuerySet(models.QuerySet):
    def live(self):
        """The tokens that have not expired."""
        return self.filter(expires_at__gt=timezone.now())


class ApiToken(models.Model):
    """Bearer tokens for AR clients and scripts, stored as SHA-256 digests only.

    A token lives API_TOKEN_TTL_DAYS days; its owner lists and revokes tokens (`GET`/`DELETE
    /api/v1/auth/tokens`, /account/tokens/), and a password change revokes them all
    (hunt/accounts.py): a token must not outlive the password that was given for it.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"token for {self.user} ({self.digest[:8]}…)"

    @staticmethod
    def _digest(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @classmethod
    def issue(cls, user) -> str:
        """Creates a token and returns its raw value, shown to the client once."""
        raw = secrets.token_urlsafe(32)
        now = timezone.now()
        # Housekeeping: expired tokens authenticate nobody, so they need not be kept.
        cls.objects.filter(user=user, expires_at__lte=now).delete()
        expires_at = now + timedelta(days=settings.API_TOKEN_TTL_DAYS)
        cls.objects.create(user=user, digest=cls._digest(raw), expires_at=expires_at)
        return raw

    @classmethod
    def revoke(cls, user, token_id: int) -> bool:
        """Deletes one of `user`'s tokens; False when `user` has no token `token_id`."""
        deleted, _ = cls.objects.filter(user=user, pk=token_id).delete()
        return deleted > 0

    @classmethod
    def authenticate(cls, raw: str):
        """The active user owning this raw, unexpired token, or None."""
        if not raw:
            return None
        token = (
            cls.objects.live()
            .select_related("user")
            .filter(digest=cls._digest(raw), user__is_active=True)
            .first()
        )
        if token is None:
            return None
        cls.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user


class ActivityQuerySet(models.QuerySet):
    def since(self, hunt, start):
        return self.filter(hunt=hunt, minute__gte=start)


class Activity(models.Model):
    """A hunt's counters for one minute: messages players sent, words they found.

    The console's charts and rates read these few rows instead of counting a million messages.
    `bump` adds to them in the writer's transaction, so a rolled-back say counts nothing.
    """

    hunt = models.ForeignKey(Hunt, on_delete=models.CASCADE, related_name="activity")
    minute = models.DateTimeField()
    messages = models.PositiveIntegerField(default=0)
    discoveries = models.PositiveIntegerField(default=0)

    objects = ActivityQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "activity"
        constraints = [
            models.UniqueConstraint(fields=["hunt", "minute"], name="activity_once_per_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.hunt_id} at {self.minute:%Y-%m-%d %H:%M}"

    @classmethod
    def bump(cls, hunt_id: int, **counts: int) -> None:
        """Adds `counts` (field=amount) to this minute's row of the hunt.

        Race: the first events of a minute, at once. Both updates find no row and both insert;
        the unique (hunt, minute) constraint lets one in, and the other adds to it.
        """
        minute = timezone.now().replace(second=0, microsecond=0)
        increments = {name: models.F(name) + n for name, n in counts.items()}
        rows = cls.objects.filter(hunt_id=hunt_id, minute=minute)
        if rows.update(**increments):
            return
        try:
            with transaction.atomic():  # a savepoint: a refused insert keeps the outer one
                cls.objects.create(hunt_id=hunt_id, minute=minute, **counts)
        except IntegrityError:
            rows.update(**increments)


class NearMiss(models.Model):
    """A player message that came close to a clue and did not open it: what the console's
    "stuck questions" list groups, and the near-miss budget's record (a cooldown it started)."""

    hunt = models.ForeignKey(Hunt, on_delete=models.CASCADE, related_name="near_misses")
    clue = models.ForeignKey(Clue, on_delete=models.CASCADE, related_name="near_misses")
    player = models.ForeignKey(Player, on_delete=models.CASCADE, related_name="near_misses")
    message = models.ForeignKey(
        "avatars.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    score = models.FloatField()
    cooldown_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "near misses"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["clue", "created_at"], name="nearmiss_clue_time"),
            models.Index(fields=["clue", "player"], name="nearmiss_clue_player"),
            models.Index(fields=["hunt", "cooldown_until"], name="nearmiss_cooldown"),
            # The console's stuck questions read a hunt's newest near misses with their
            # messages: without it, a sort of them all and a join over every message.
            models.Index(fields=["hunt", "created_at"], name="nearmiss_hunt_time"),
        ]

    def __str__(self) -> str:
        return f"{self.player} near #{self.clue_id} ({self.score:.2f})"


class Incident(models.Model):
    """Something the console's attack panel lists: the reply guard acting on a turn, a message
    that reads like an attack, a refused or closed socket, a suspension."""

    class Kind(models.TextChoices):
        GUARD = "guard", _("reply guard acted")
        ATTACK = "attack", _("attack-like message")
        RATE_LIMITED = "rate_limited", _("rate limited")
        FLOOD = "flood", _("socket closed for flooding")
        SUSPENDED = "suspended", _("player suspended")

    THROTTLED = frozenset({Kind.RATE_LIMITED})

    hunt = models.ForeignKey(
        Hunt, null=True, blank=True, on_delete=models.CASCADE, related_name="incidents"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    player = models.ForeignKey(
        Player, null=True, blank=True, on_delete=models.CASCADE, related_name="incidents"
    )
    address = models.CharField(max_length=64, blank=True)
    message = models.ForeignKey(
        "avatars.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A category or a short reason, never a guarded word nor the message itself.
    detail = models.CharField(max_length=120, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["hunt", "created_at"], name="incident_hunt_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.player_id or self.address}"

    @classmethod
    def note(
        cls,
        kind: str,
        hunt_id: int,
        player_id: int | None,
        address: str = "",
        message_id: int | None = None,
        detail: str = "",
    ) -> None:
        """Records an incident. A player's repeated refusals of one kind count once a minute
        (THROTTLED): a flood of refused frames must not become a flood of rows."""
        if kind in cls.THROTTLED and player_id is not None:
            if not django_cache.add(f"incident:{kind}:{player_id}", 1, timeout=60):
                return
        cls.objects.create(
            kind=kind,
            hunt_id=hunt_id,
            player_id=player_id,
            address=address[:64],
            message_id=message_id,
            detail=detail[:120],
        )


class Announcement(models.Model):
    """A line organizers broadcast to every player connected to the hunt's avatars."""

    hunt = models.ForeignKey(Hunt, on_delete=models.CASCADE, related_name="announcements")
    text = models.CharField(max_length=300)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text
