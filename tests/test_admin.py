"""The admin works for organizers; guarded words are visible to superusers only; creators see
their own avatars; saves that would expose a guarded word are refused, and nobody below superuser
can use a save to test candidate words."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from avatars.models import Avatar
from hunt.models import Clue

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser(make_user):
    return make_user("root-organizer", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_organizer(make_user):
    user = make_user("helper-organizer", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=["hunt", "avatars"])
    )
    return user


@pytest.fixture
def creator(make_user):
    user = make_user("creator", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_avatar", "change_avatar", "add_avatar"])
    )
    return user


def guarded(hunt, position=3) -> str:
    return hunt.words.get(position=position).reveal_word()


@pytest.mark.parametrize(
    "name",
    [
        "admin:hunt_hunt_changelist",
        "admin:hunt_player_changelist",
        "admin:hunt_discovery_changelist",
        "admin:hunt_claim_changelist",
        "admin:hunt_seedword_changelist",
        "admin:hunt_apitoken_changelist",
        "admin:avatars_avatar_changelist",
        "admin:avatars_conversation_changelist",
        "admin:avatars_message_changelist",
        "admin:avatars_feedback_changelist",
    ],
)
def test_every_screen_opens_for_the_organizer(client, superuser, demo_hunt, name):
    client.force_login(superuser)
    response = client.get(reverse(name), {"q": "marta"})
    assert response.status_code == 200


def test_a_superuser_sees_and_edits_guarded_words(client, superuser, demo_hunt):
    client.force_login(superuser)
    page = client.get(reverse("admin:hunt_hunt_change", args=[demo_hunt.pk])).content.decode()
    assert guarded(demo_hunt) in page


def test_other_staff_never_see_guarded_words(client, staff_organizer, demo_hunt):
    client.force_login(staff_organizer)
    hunt_page = client.get(reverse("admin:hunt_hunt_change", args=[demo_hunt.pk]))
    avatar = Avatar.objects.get(slug="old-marta")
    avatar_page = client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk]))
    assert hunt_page.status_code == avatar_page.status_code == 200
    for word in demo_hunt.guarded_words().values():
        assert word not in hunt_page.content.decode()
        assert word not in avatar_page.content.decode()
    assert client.get(reverse("admin:avatars_message_changelist")).status_code == 403


def test_a_creator_sees_only_their_own_avatars(client, creator, demo_hunt):
    Avatar.objects.filter(slug="nia-neon").update(owner=creator)
    client.force_login(creator)
    page = client.get(reverse("admin:avatars_avatar_changelist")).content.decode()
    assert "Nia Neon" in page
    assert "Old Marta" not in page
    marta = Avatar.objects.get(slug="old-marta")
    assert client.get(reverse("admin:avatars_avatar_change", args=[marta.pk])).status_code == 302


def test_a_new_avatar_belongs_to_its_creator(client, creator):
    client.force_login(creator)
    response = client.post(
        reverse("admin:avatars_avatar_add"),
        {
            "name": "Pip",
            "slug": "pip",
            "persona": "You are Pip, a cheerful robot.",
            "greeting": "Beep!",
            "published": "on",
            "land": "",
            "latitude": "",
            "longitude": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Avatar.objects.get(slug="pip").owner == creator


def post_persona(client, avatar, persona: str):
    """Saves `avatar` through its admin page with a new persona; returns the response."""
    return client.post(
        reverse("admin:avatars_avatar_change", args=[avatar.pk]),
        {
            "name": avatar.name,
            "slug": avatar.slug,
            "hunt": avatar.hunt_id,
            "published": "on",
            "persona": persona,
            "greeting": avatar.greeting,
            "land": avatar.land,
            "latitude": "",
            "longitude": "",
            "clues-TOTAL_FORMS": "0",
            "clues-INITIAL_FORMS": "0",
        },
    )


def test_a_persona_with_a_guarded_word_is_refused(client, superuser, demo_hunt):
    client.force_login(superuser)
    avatar = Avatar.objects.get(slug="captain-rook")
    response = post_persona(client, avatar, f"You adore the word {guarded(demo_hunt, 7)}.")
    assert response.status_code == 200
    assert "contains a guarded word" in response.content.decode()
    avatar.refresh_from_db()
    assert guarded(demo_hunt, 7) not in avatar.persona


def test_a_clue_question_with_a_guarded_word_is_refused(superuser, demo_hunt):
    from hunt.admin import ClueForm

    clue = Clue.objects.get(avatar__slug="old-marta")
    form = ClueForm(
        instance=clue,
        data={
            "word": clue.word_id,
            "questions": f"is it {guarded(demo_hunt, 18)}?",
            "keywords": "",
            "hints": "",
            "examples": "",
            "counterexamples": "",
            "requires": "",
            "threshold": "",
            "reveal_line": "",
        },
    )
    assert not form.is_valid()
    assert "guarded word" in str(form.errors)


def test_clue_lists_are_edited_one_per_line(superuser, demo_hunt):
    from hunt.admin import ClueForm

    clue = Clue.objects.get(avatar__slug="professor-quill", word__position=15)
    form = ClueForm(
        instance=clue,
        data={
            "word": clue.word_id,
            "questions": "Why do the clocks run backwards?\nWhy reverse?",
            "keywords": "clock\nclocks",
            "hints": "",
            "examples": "",
            "counterexamples": "",
            "requires": "12, 3",
            "threshold": "0.7",
            "reveal_line": "It is {word}.",
        },
    )
    assert form.is_valid(), form.errors
    form.save()
    clue.refresh_from_db()
    assert clue.questions == ["Why do the clocks run backwards?", "Why reverse?"]
    assert clue.requires == [12, 3]
    assert clue.threshold == 0.7


def test_a_discovered_word_cannot_be_changed_in_the_admin(superuser, demo_hunt, make_player):
    from hunt.admin import SecretSeedWordForm
    from hunt.models import Discovery

    seed = demo_hunt.words.get(position=3)
    Discovery.objects.create(player=make_player(), word=seed, first=True)
    form = SecretSeedWordForm(
        instance=seed, data={"position": 3, "word": "zebra", "world": "", "hint": ""}
    )
    assert not form.is_valid()
    assert "already discovered" in str(form.errors)


def test_a_persona_too_long_for_the_prompt_budget_is_refused(client, superuser, demo_hunt):
    client.force_login(superuser)
    avatar = Avatar.objects.get(slug="sage-of-the-dome")
    response = post_persona(
        client, avatar, "You are a gardener who describes every leaf at length. " * 120
    )
    assert response.status_code == 200
    assert "The persona is too long" in response.content.decode()


# Staff below superuser can test no candidate word ------------------------------------------------


def test_a_creators_save_reads_the_same_whether_the_persona_holds_a_guarded_word(
    client, creator, demo_hunt
):
    """A refusal (or a count) only for guarded words would let a creator test candidates."""
    avatar = Avatar.objects.get(slug="nia-neon")
    Avatar.objects.filter(pk=avatar.pk).update(owner=creator)
    client.force_login(creator)
    pages = []
    for word in (guarded(demo_hunt, 7), "lantern"):  # a guarded word, then an ordinary one
        Avatar.objects.filter(pk=avatar.pk).update(published=True)
        response = post_persona(client, avatar, f"You adore the word {word}.")
        assert response.status_code == 302
        avatar.refresh_from_db()
        assert avatar.persona.endswith(f"{word}.") and not avatar.published
        page = client.get(response["Location"]).content.decode().replace(word, "WORD")
        pages.append(re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", page))
    assert "a superuser publishes it" in pages[0]
    assert pages[0] == pages[1]


def test_only_a_superuser_publishes_and_publishing_checks_for_guarded_words(
    client, superuser, creator, demo_hunt
):
    avatar = Avatar.objects.get(slug="nia-neon")
    Avatar.objects.filter(pk=avatar.pk).update(owner=creator, published=False)
    client.force_login(creator)
    post_persona(client, avatar, "You paint trains.")  # the form says published: ignored
    avatar.refresh_from_db()
    assert not avatar.published
    client.force_login(superuser)
    response = post_persona(client, avatar, f"You adore {guarded(demo_hunt, 7)}.")
    assert response.status_code == 200 and "contains a guarded word" in response.content.decode()


def test_texts_checked_for_guarded_words_are_read_only_below_superuser(
    client, staff_organizer, demo_hunt
):
    client.force_login(staff_organizer)
    page = client.get(reverse("admin:hunt_hunt_change", args=[demo_hunt.pk])).content.decode()
    assert 'name="title"' not in page and 'name="words-0-hint"' not in page
    marta = Avatar.objects.get(slug="old-marta")
    page = client.get(reverse("admin:avatars_avatar_change", args=[marta.pk])).content.decode()
    assert 'name="clues-0-questions"' not in page and 'name="clues-0-threshold"' not in page
    assert 'name="published"' not in page


def test_discovery_and_feedback_screens_show_no_message_text_below_superuser(
    client, staff_organizer, demo_hunt, make_player
):
    from avatars.models import Conversation, Feedback, Message
    from hunt.models import Discovery

    player = make_player()
    marta = Avatar.objects.get(slug="old-marta")
    conversation = Conversation.objects.create(player=player, avatar=marta)
    asked = Message.objects.create(conversation=conversation, role="player", text="SECRET-ASK")
    reply = Message.objects.create(
        conversation=conversation, role="avatar", text="SECRET-REPLY", reply_to=asked
    )
    seed = demo_hunt.words.get(position=3)
    found = Discovery.objects.create(player=player, word=seed, message=asked, first=True)
    rated = Feedback.objects.create(message=reply, player=player, value=1)
    client.force_login(staff_organizer)
    for url in (
        reverse("admin:hunt_discovery_change", args=[found.pk]),
        reverse("admin:avatars_feedback_change", args=[rated.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200
        assert "SECRET-" not in response.content.decode()


def test_editing_a_clue_on_its_avatars_page_recalibrates_the_avatars_clues(
    client, superuser, demo_hunt, django_capture_on_commit_callbacks
):
    clue = Clue.objects.select_related("avatar").get(avatar__slug="old-marta")
    avatar = clue.avatar
    Clue.objects.filter(avatar=avatar).update(calibration={}, calibrated_threshold=None)
    client.force_login(superuser)
    lines = "\n".join
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:avatars_avatar_change", args=[avatar.pk]),
            {
                "name": avatar.name,
                "slug": avatar.slug,
                "hunt": avatar.hunt_id,
                "published": "on",
                "persona": avatar.persona,
                "greeting": avatar.greeting,
                "land": avatar.land,
                "latitude": "",
                "longitude": "",
                "clues-TOTAL_FORMS": "1",
                "clues-INITIAL_FORMS": "1",
                "clues-0-id": clue.pk,
                "clues-0-avatar": avatar.pk,
                "clues-0-word": clue.word_id,
                "clues-0-questions": lines(clue.questions),
                "clues-0-keywords": lines(clue.keywords),
                "clues-0-requires": "",
                "clues-0-hints": lines(clue.hints),
                "clues-0-examples": lines(clue.examples),
                "clues-0-counterexamples": lines([*clue.counterexamples, "Who lit it first?"]),
                "clues-0-threshold": "",
                "clues-0-reveal_line": clue.reveal_line,
                "persona_checks-TOTAL_FORMS": "0",
                "persona_checks-INITIAL_FORMS": "0",
            },
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    clue.refresh_from_db()
    assert clue.counterexamples[-1] == "Who lit it first?"
    assert clue.calibration["counterexamples"][1] == len(clue.counterexamples)
    assert clue.threshold_source() == "calibrated"
