"""What organizers do from the console: pause and resume the hunt, open and close registration,
broadcast an announcement, suspend (and reinstate) a player, add a stuck question as an example
or a counterexample of its clue. Thin views call these; each checks its input and raises
ValidationError with a message for the organizer.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from hunt.models import Announcement, Clue, Hunt, Incident, NearMiss, Player
from lostwallet.wire import announcement_frame, hunt_players_group

ANNOUNCEMENT_MAX_CHARS = Announcement._meta.get_field("text").max_length


def set_paused(hunt: Hunt, paused: bool) -> None:
    """While paused no say is taken (chat answers `hunt_not_live`), no clue opens and no claim
    is judged; turns already being answered finish."""
    Hunt.objects.filter(pk=hunt.pk).update(paused=paused, updated_at=timezone.now())
    hunt.paused = paused


def set_registration(hunt: Hunt, open_: bool) -> None:
    Hunt.objects.filter(pk=hunt.pk).update(registration_open=open_, updated_at=timezone.now())
    hunt.registration_open = open_


def announce(hunt: Hunt, text: str, author) -> Announcement:
    """Stores the announcement and sends it, once committed, to every chat socket open on an
    avatar of the hunt (the `announcement` frame)."""
    text = " ".join((text or "").split())
    if not text:
        raise ValidationError(_("Write the announcement first."))
    if len(text) > ANNOUNCEMENT_MAX_CHARS:
        raise ValidationError(
            _("An announcement has at most %(n)d characters.") % {"n": ANNOUNCEMENT_MAX_CHARS}
        )
    announcement = Announcement.objects.create(hunt=hunt, text=text, author=author)
    event = {
        "type": "hunt.announcement",
        "frame": announcement_frame(hunt.slug, text, announcement.created_at),
    }

    def send() -> None:
        async_to_sync(get_channel_layer().group_send)(hunt_players_group(hunt.pk), event)

    transaction.on_commit(send)
    return announcement


def suspend_player(hunt: Hunt, player: Player, suspended: bool = True) -> None:
    """Shuts the player's account out (or lets it back in). Deactivating the account is what
    does it everywhere at once: sign-in, API tokens, and the open sockets, which close with 4401
    after commit (hunt/accounts.py)."""
    user = player.user
    if user.is_staff:
        raise ValidationError(_("Staff accounts are not suspended from the console."))
    with transaction.atomic():
        user.is_active = not suspended
        user.save(update_fields=["is_active"])
        player.suspended_at = timezone.now() if suspended else None
        player.save(update_fields=["suspended_at"])
        if suspended:
            Incident.note(Incident.Kind.SUSPENDED, hunt.pk, player.pk)


def add_example(hunt: Hunt, near_miss_id: int) -> Clue:
    """Adds a near miss's message to its clue's examples: the gate reads a clue's examples as
    more right questions from the next message on (hunt.matcher.ClueSpec.of)."""
    return _add_near_miss(hunt, near_miss_id, "examples")


def add_counterexample(hunt: Hunt, near_miss_id: int) -> Clue:
    """Adds a near miss's message to its clue's counterexamples: a message that is a near copy
    of one stays shut from the next message on (hunt.matcher.Counterexample)."""
    return _add_near_miss(hunt, near_miss_id, "counterexamples")


def _add_near_miss(hunt: Hunt, near_miss_id: int, kind: str) -> Clue:
    """Both add the message through hunt.gate.add_phrasing, which recalibrates the avatar's
    clues once committed."""
    from hunt.gate import add_phrasing  # numpy: loaded when the gate is used only

    near = (
        NearMiss.objects.filter(pk=near_miss_id, hunt=hunt, message__isnull=False)
        .select_related("message")
        .first()
    )
    if near is None:
        raise ValidationError(_("That message is no longer there."))
    return add_phrasing(near.clue_id, near.message.text, kind)
