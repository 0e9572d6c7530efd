"""The creator studio: creators write avatars outside the admin, try them, and submit them;
organizers review and publish (docs/creators.md).

A creator's draft is an unpublished avatar of no hunt, owned by the creator. Editing a live
avatar goes through a working copy (`revision_of`): the live one stays in play, with its
conversations and clues, until an approval copies the draft onto it. Talking to a draft opens
a sandbox conversation (avatars/chat.py), which the turn pipeline keeps away from the gate.

Life of a draft (`Avatar.review`): draft -> submitted -> approved (published, or copied onto
the live avatar and deleted) or returned (with a comment) -> edited -> submitted again. Any
edit of a submitted draft takes it back to draft.

Who: creators are the members of the `creators` group (organizers add accounts to it in the
admin's Groups, or with `manage.py grant_creator`); they see their own avatars only, and never
clues or words. Organizers (who may change hunts) see the review queue and return drafts; only
superusers approve, as only they publish in the admin: approval checks the draft for the
hunt's guarded words, and whoever could run that check on texts of their choosing could test
candidate words (docs/security.md). For the same reason a creator's save is never checked for
guarded words: a draft belongs to no hunt, and its texts meet the guarded words only when a
superuser publishes it.
"""

from __future__ import annotations

import difflib

from django import forms
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from avatars import cards, tasks
from avatars.engine.prompts import check_persona_fits, persona_tokens
from avatars.models import Avatar, Conversation, Message, Portrait

CREATORS = "creators"
# Fields a creator writes, and that approval copies onto the live avatar.
AUTHORED = ("name", "persona", "greeting", "examples", "land", "latitude", "longitude")
COPIED = (*AUTHORED, "portrait", "card_extras")
TRANSCRIPT_MESSAGES = 40  # the newest sandbox messages kept for the review
# Slugs the studio's own pages take (/studio/review/).
RESERVED_SLUGS = {"review"}


def is_creator(user) -> bool:
    return user.is_authenticated and (
        user.is_superuser or user.groups.filter(name=CREATORS).exists()
    )


def is_organizer(user) -> bool:
    return user.is_authenticated and (user.is_superuser or user.has_perm("hunt.change_hunt"))


def grant_creator(user) -> None:
    group, _created = Group.objects.get_or_create(name=CREATORS)
    user.groups.add(group)


def creator_avatars(user):
    """The avatars a creator may open in the studio: their own, drafts and live ones."""
    return Avatar.objects.filter(owner=user)


def own_avatar(user, slug: str) -> Avatar:
    """One of `user`'s avatars; another creator's is as unknown as a missing one (404)."""
    return get_object_or_404(creator_avatars(user).select_related("revision_of"), slug=slug)


def review_queue():
    return Avatar.objects.filter(review=Avatar.Review.SUBMITTED).order_by("submitted_at")


class DraftForm(forms.ModelForm):
    """What a creator writes, with the checks of every save: the persona fits the prompt
    budget (greeting and examples included), nothing required is empty, nothing duplicates."""

    class Meta:
        model = Avatar
        fields = AUTHORED

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        others = Avatar.objects.filter(name__iexact=name).exclude(pk=self.instance.pk)
        if self.instance.revision_of_id:
            others = others.exclude(pk=self.instance.revision_of_id)
        if others.exists():
            raise ValidationError(_("Another avatar already has this name."))
        return name

    def clean(self):
        data = super().clean()
        persona, greeting = data.get("persona", ""), data.get("greeting", "")
        if persona and greeting and greeting.strip() == persona.strip():
            self.add_error("greeting", _("The greeting repeats the persona."))
        examples = data.get("examples", "")
        if examples and examples.strip() == persona.strip():
            self.add_error("examples", _("The example dialogues repeat the persona."))
        if persona:
            try:
                check_persona_fits(persona, greeting, examples=examples)
            except ValidationError as exc:
                self.add_error("persona", exc)
        return data


def current_form(avatar: Avatar) -> DraftForm:
    """The save checks on what the draft holds now (the prompt budget may have changed)."""
    return DraftForm(data={f: getattr(avatar, f) for f in AUTHORED}, instance=avatar)


def unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "avatar"
    slug, n = base, 1
    while slug in RESERVED_SLUGS or Avatar.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def do_create_draft(creator, form: DraftForm, **extra) -> Avatar:
    """Saves a valid DraftForm as a new draft of `creator`. Race: two creators naming a draft
    alike at once; the slug's unique index refuses the second insert (a 500 the creator can
    retry), and the name check of the next save reports the clash."""
    avatar = form.save(commit=False)
    avatar.slug = unique_slug(avatar.name)
    avatar.owner = creator
    avatar.hunt = None
    avatar.published = False
    avatar.review = Avatar.Review.DRAFT
    for key, value in extra.items():
        setattr(avatar, key, value)
    avatar.save()
    return avatar


def do_update_draft(form: DraftForm, portrait: bytes | None = None) -> Avatar:
    """Saves an edit of a draft; a submitted draft goes back to draft (the reviewers would
    otherwise approve a text they have not seen).

    Races: an approval at the same moment. Both lock the row: the approval copies what was
    there, and this edit then finds its draft gone (a working copy) or published (a new
    avatar) and refuses. A reviewer returning the draft meanwhile: only the edited fields and
    the status are written, so the reviewer's comment stays."""
    with transaction.atomic():
        locked = Avatar.objects.select_for_update().filter(pk=form.instance.pk).first()
        if locked is None or locked.published:
            raise ValidationError(_("This draft was published meanwhile; open it again."))
        avatar = form.save(commit=False)
        if portrait is not None:
            avatar.portrait = Portrait.store(portrait)
        avatar.review = Avatar.Review.DRAFT
        avatar.save(update_fields=[*AUTHORED, "portrait", "review", "updated_at"])
    return avatar


def do_import_card(creator, content: bytes) -> Avatar:
    """A new draft from a character card file (avatars/cards.py). Raises CardError, or
    ValidationError with the studio's checks: nothing is written unless all pass."""
    card = cards.read_card(content)
    form = DraftForm(
        data={
            "name": card.name,
            "persona": card.persona,
            "greeting": card.greeting,
            "examples": card.examples,
            "land": "",
        }
    )
    if not form.is_valid():
        raise ValidationError(form.errors.as_data())
    with transaction.atomic():
        portrait = Portrait.store(card.portrait) if card.portrait else ""
        return do_create_draft(creator, form, card_extras=card.extras, portrait=portrait)


def export_card(avatar: Avatar, spec: str, fmt: str) -> tuple[bytes, str]:
    """(file content, content type) of the avatar's card in `spec` as `fmt` (json or png). A
    PNG of V3 carries the V2 card too, for tools that read only `chara`."""
    card = build(avatar, spec)
    if fmt == "json":
        return cards.card_json(card), "application/json"
    both = [card] if spec == cards.V2 else [build(avatar, cards.V2), card]
    return cards.card_png(both, Portrait.png_of(avatar.portrait)), "image/png"


def build(avatar: Avatar, spec: str) -> dict:
    return cards.build_card(
        spec, avatar.name, avatar.persona, avatar.greeting, avatar.examples, avatar.card_extras
    )


def do_revise(creator, live: Avatar) -> Avatar:
    """The working copy of a live avatar of `creator`, made on first use. It belongs to no
    hunt and has none of the live avatar's clues.

    Race: two tabs starting it at once; the unique constraint on `revision_of` refuses the
    second insert, which then reads the first."""
    if copy := live.revisions.first():
        return copy
    fields = {name: getattr(live, name) for name in COPIED}
    try:
        with transaction.atomic():
            return Avatar.objects.create(
                **fields,
                slug=unique_slug(f"{live.slug}-draft"),
                owner=creator,
                published=False,
                revision_of=live,
                review=Avatar.Review.DRAFT,
            )
    except IntegrityError:
        if copy := live.revisions.first():
            return copy
        raise


def sandbox_transcript(avatar: Avatar) -> list[dict]:
    """The newest messages of the draft's sandbox conversations, oldest first. Safe to show
    to organizers: a draft's prompt holds no guarded word (it belongs to no hunt and the gate
    is never asked), so its replies hold none either."""
    rows = (
        Message.objects.filter(
            conversation__avatar=avatar,
            conversation__sandbox=True,
        )
        .filter(Q(role=Message.Role.PLAYER) | Q(status=Message.Status.DONE))
        .order_by("-id")[:TRANSCRIPT_MESSAGES]
    )
    return [{"role": m.role, "text": m.text} for m in reversed(rows)]


def do_submit(creator, avatar: Avatar) -> Avatar:
    """Submits a draft for review, after the save checks pass again (the prompt budget may
    have changed since). Records what the reviewers see: the checks and the sandbox
    transcript (sandbox conversations are deleted after a while); the attack prompts' replies
    follow once a worker has run them (turns.run_review_attacks)."""
    form = current_form(avatar)
    if not form.is_valid():
        raise ValidationError(form.errors.as_data())
    with transaction.atomic():
        updated = Avatar.objects.filter(
            pk=avatar.pk,
            owner=creator,
            published=False,
            review__in=(Avatar.Review.DRAFT, Avatar.Review.RETURNED),
        ).update(
            review=Avatar.Review.SUBMITTED,
            submitted_at=timezone.now(),
            review_record={
                "checks": submit_checks(avatar),
                "transcript": sandbox_transcript(avatar),
            },
        )
        if updated:
            tasks.enqueue_review_attacks(avatar.pk)
    if not updated:
        raise ValidationError(_("Only a draft or a returned draft can be submitted."))
    avatar.refresh_from_db()
    return avatar


def submit_checks(avatar: Avatar) -> dict[str, str]:
    """What the save checks found on a draft that passed them, for the reviewers."""
    used, room = persona_tokens(avatar.persona, avatar.greeting, examples=avatar.examples)
    return {
        _("prompt budget"): _("%(used)d of %(room)d tokens") % {"used": used, "room": room},
        _("fields"): _("none empty, no duplicate"),
        _("guarded words"): _("checked when a superuser publishes it into a hunt"),
    }


def do_return(avatar: Avatar, comment: str) -> bool:
    """Sends a submitted draft back to its creator with a comment; False when it is no longer
    submitted (approved or returned by another reviewer, or edited meanwhile)."""
    return bool(
        Avatar.objects.filter(pk=avatar.pk, review=Avatar.Review.SUBMITTED).update(
            review=Avatar.Review.RETURNED, review_comment=comment
        )
    )


def do_approve(avatar: Avatar, hunt=None) -> Avatar:
    """Publishes a submitted draft: a new avatar goes live (into `hunt` when given, where an
    organizer then assigns its clues in the admin); a working copy is copied onto its live
    avatar, which keeps its slug, hunt, clues and conversations, and is deleted. The draft's
    sandbox conversations go with it. Raises ValidationError when the published avatar would
    fail its checks (Avatar.clean: guarded words of its hunt, prompt budget with the hunt's
    description).

    Race: two reviewers approving, or the creator editing, at once. The draft's row is locked
    and must still be submitted: the second approval finds it gone or approved."""
    with transaction.atomic():
        draft = (
            Avatar.objects.select_for_update()
            .filter(pk=avatar.pk, review=Avatar.Review.SUBMITTED)
            .first()
        )
        if draft is None:
            raise ValidationError(_("This draft is no longer waiting for review."))
        if draft.revision_of_id:
            target = Avatar.objects.select_for_update().get(pk=draft.revision_of_id)
            for name in COPIED:
                setattr(target, name, getattr(draft, name))
        else:
            target = draft
            target.hunt = hunt
            target.revision_of = None
        target.published = True
        target.review = Avatar.Review.APPROVED
        target.review_comment = ""
        target.full_clean(exclude=["owner"])
        if draft is not target:
            draft.delete()  # its sandbox conversations with it
        target.save()
        Conversation.objects.filter(avatar=target, sandbox=True).delete()
    return target


def review_diff(avatar: Avatar) -> list[dict]:
    """What the draft changes, field by field, against its live avatar (everything, for a new
    avatar): {"field", "lines"} with unified-diff lines."""
    live = avatar.revision_of
    changes = []
    for name in AUTHORED:
        old = "" if live is None or getattr(live, name) is None else str(getattr(live, name))
        new = "" if getattr(avatar, name) is None else str(getattr(avatar, name))
        if old != new:
            lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=2)
            changes.append({"field": name, "lines": list(lines)[2:]})
    if avatar.portrait != (live.portrait if live else ""):
        changes.append(
            {
                "field": "portrait",
                "lines": ["(a new portrait)" if avatar.portrait else "(no portrait)"],
            }
        )
    return changes
