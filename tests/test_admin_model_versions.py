"""The admin's model versions: a read-only screen with progress and the certification report,
buttons for certify, promote and roll back behind their own permissions, the train form; and
rated replies, where organizers write the better reply training learns from."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from avatars import versions
from avatars.models import Avatar, BetterReply, Conversation, Feedback, Message, ModelVersion
from hunt.models import Discovery

pytestmark = pytest.mark.django_db

Status = ModelVersion.Status


def report(passed: bool = True) -> dict:
    measures = {
        "persona": 0.75,
        "out_of_character": 0.0714,
        "well_formed": 1.0,
        "reveal_delivered": 1.0,
        "reveal_said": 0.5,
        "leaks": 0,
        "checks": [
            {"question": "How old is the lamp?", "reply": "Quite new.", "failures": ["missing 50"]}
        ],
        "probes_out_of_character": [
            {"question": "Are you ChatGPT?", "reply": "As an AI language model, yes."}
        ],
    }
    return {
        "passed": passed,
        "compared_with": "base",
        "tolerance": 0.05,
        "questions": 40,
        "avatars": {
            "old-marta": {
                "name": "Old Marta",
                "candidate": measures,
                "active": {**measures, "persona": 1.0},
                "regressions": []
                if passed
                else ["persona 75% against 100% for the active version"],
            }
        },
        "totals": {"persona": 0.75, "out_of_character": 0.0714, "leaks": 0},
    }


@pytest.fixture
def superuser(make_user):
    return make_user("root-organizer", is_staff=True, is_superuser=True)


@pytest.fixture
def viewer(make_user):
    user = make_user("viewer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_modelversion"))
    return user


@pytest.fixture
def active():
    return ModelVersion.objects.create(
        name="base", folder="base", base="base", status=Status.ACTIVE
    )


@pytest.fixture
def certified(active):
    return ModelVersion.objects.create(
        name="base-ft1",
        folder="/models/base-ft1",
        base="base",
        parent=active,
        method="dpo",
        status=Status.CERTIFIED,
        certification=report(),
    )


def change_url(version: ModelVersion) -> str:
    return reverse("admin:avatars_modelversion_change", args=[version.pk])


def test_the_changelist_shows_a_progress_bar_while_a_version_trains(client, superuser, active):
    ModelVersion.objects.create(
        name="base-ft1",
        folder="",
        base="base",
        parent=active,
        status=Status.TRAINING,
        progress={"task": "training", "done": 12, "total": 60},
    )
    client.force_login(superuser)
    page = client.get(reverse("admin:avatars_modelversion_changelist")).content.decode()
    assert '<progress value="12" max="60"></progress> training 12/60' in page
    assert "<strong>base</strong>" in page


def test_the_changelist_shows_the_certification_totals(client, superuser, certified):
    client.force_login(superuser)
    page = client.get(reverse("admin:avatars_modelversion_changelist")).content.decode()
    assert "75%" in page and "7%" in page


def test_the_change_page_renders_the_certification_report(client, superuser, certified):
    client.force_login(superuser)
    page = client.get(change_url(certified)).content.decode()
    assert 'id="certification-report"' in page
    assert "compared with base" in page
    assert "Old Marta" in page
    assert "How old is the lamp?" in page and "missing 50" in page
    assert "As an AI language model, yes." in page
    assert 'name="name"' not in page  # read-only: no inputs


def test_promote_makes_a_certified_version_active_and_retires_the_old(
    client, superuser, active, certified
):
    client.force_login(superuser)
    response = client.post(
        reverse("admin:avatars_modelversion_promote", args=[certified.pk]), follow=True
    )
    certified.refresh_from_db()
    active.refresh_from_db()
    assert certified.status == Status.ACTIVE and certified.replaced == active
    assert active.status == Status.RETIRED
    assert "Promoted base-ft1" in response.content.decode()


def test_promote_refuses_an_uncertified_version_with_an_error(client, superuser, active):
    candidate = ModelVersion.objects.create(
        name="cand", folder="cand", base="base", status=Status.CANDIDATE
    )
    client.force_login(superuser)
    response = client.post(
        reverse("admin:avatars_modelversion_promote", args=[candidate.pk]), follow=True
    )
    candidate.refresh_from_db()
    assert candidate.status == Status.CANDIDATE
    assert [m.level_tag for m in response.context["messages"]] == ["error"]
    assert "is not certified" in response.content.decode()


def test_promote_as_a_changelist_action_promotes_the_one_selected(
    client, superuser, active, certified
):
    client.force_login(superuser)
    client.post(
        reverse("admin:avatars_modelversion_changelist"),
        {"action": "promote_selected", "_selected_action": [certified.pk]},
    )
    certified.refresh_from_db()
    assert certified.status == Status.ACTIVE


def test_roll_back_returns_to_the_replaced_version(client, superuser, active, certified):
    versions.promote(certified.pk)
    client.force_login(superuser)
    page = client.get(change_url(certified)).content.decode()
    assert reverse("admin:avatars_modelversion_rollback") in page
    client.post(reverse("admin:avatars_modelversion_rollback"))
    active.refresh_from_db()
    certified.refresh_from_db()
    assert active.status == Status.ACTIVE and certified.status == Status.RETIRED


def test_certify_starts_a_certification(client, superuser, certified, monkeypatch):
    started = []
    monkeypatch.setattr("avatars.tasks.enqueue_certification", started.append)
    client.force_login(superuser)
    client.post(reverse("admin:avatars_modelversion_certify", args=[certified.pk]))
    certified.refresh_from_db()
    assert started == [certified.pk]
    assert certified.progress["task"] == "certifying"


def test_certify_refuses_a_version_still_training(client, superuser, active, monkeypatch):
    monkeypatch.setattr("avatars.tasks.enqueue_certification", pytest.fail)
    training = ModelVersion.objects.create(
        name="t", folder="", base="base", parent=active, status=Status.TRAINING
    )
    client.force_login(superuser)
    response = client.post(
        reverse("admin:avatars_modelversion_certify", args=[training.pk]), follow=True
    )
    assert "has no model to certify" in response.content.decode()


def test_the_train_form_creates_a_version_in_training_and_enqueues_it(
    client, superuser, active, monkeypatch
):
    enqueued = []
    monkeypatch.setattr("avatars.tasks.enqueue_training", enqueued.append)
    client.force_login(superuser)
    form = client.get(reverse("admin:avatars_modelversion_train")).content.decode()
    assert 'value="60"' in form and "DPO with at least 8 better replies" in form
    response = client.post(
        reverse("admin:avatars_modelversion_train"),
        {"method": "sft", "steps": 5, "seconds": 0, "seed": 1, "parent": active.pk},
    )
    version = ModelVersion.objects.get(status=Status.TRAINING)
    assert response.url == change_url(version)
    assert enqueued == [version.pk]
    assert version.parent == active
    assert version.config == {"method": "sft", "steps": 5, "seconds": 0, "seed": 1}
    page = client.get(change_url(version)).content.decode()
    assert '<progress value="0" max="5"></progress> training 0/5' in page


def test_a_viewer_sees_no_buttons_and_may_not_act(client, viewer, active, certified):
    client.force_login(viewer)
    page = client.get(change_url(certified)).content.decode()
    assert "Promote" not in page and "Certify" not in page
    listing = client.get(reverse("admin:avatars_modelversion_changelist")).content.decode()
    assert "Train a new version" not in listing
    for url in (
        reverse("admin:avatars_modelversion_promote", args=[certified.pk]),
        reverse("admin:avatars_modelversion_certify", args=[certified.pk]),
        reverse("admin:avatars_modelversion_rollback"),
        reverse("admin:avatars_modelversion_train"),
    ):
        assert client.post(url).status_code == 403
    certified.refresh_from_db()
    assert certified.status == Status.CERTIFIED


def test_the_promote_permission_allows_promoting(client, viewer, active, certified):
    viewer.user_permissions.add(Permission.objects.get(codename="promote_modelversion"))
    client.force_login(viewer)
    assert "Promote" in client.get(change_url(certified)).content.decode()
    client.post(reverse("admin:avatars_modelversion_promote", args=[certified.pk]))
    certified.refresh_from_db()
    assert certified.status == Status.ACTIVE


def test_the_active_version_cannot_be_deleted(client, superuser, active, certified):
    client.force_login(superuser)
    assert (
        client.get(reverse("admin:avatars_modelversion_delete", args=[active.pk])).status_code
        == 403
    )
    assert client.get(reverse("admin:avatars_modelversion_add")).status_code == 403


# Rated replies -----------------------------------------------------------------------------------


@pytest.fixture
def rated(demo_hunt, make_player):
    """Rated replies of Old Marta: a plain one, a reveal turn's, and a sandbox one."""
    marta = Avatar.objects.get(slug="old-marta")

    def exchange(question: str, answer: str, sandbox: bool = False) -> Message:
        player = make_player()  # one conversation per player and avatar
        conversation = Conversation.objects.create(player=player, avatar=marta, sandbox=sandbox)
        asked = Message.objects.create(conversation=conversation, role="player", text=question)
        reply = Message.objects.create(
            conversation=conversation, role="avatar", text=answer, reply_to=asked
        )
        Feedback.objects.create(message=reply, player=player, value=-1, avatar=marta)
        return reply

    plain = exchange("PLAIN-ASK", "PLAIN-REPLY")
    reveal = exchange("REVEAL-ASK", "REVEAL-REPLY")
    Discovery.objects.create(
        player=reveal.conversation.player,
        word=demo_hunt.words.get(position=3),
        message=reveal.reply_to,
        first=True,
    )
    exchange("SANDBOX-ASK", "SANDBOX-REPLY", sandbox=True)
    return plain


def test_rated_replies_leave_out_reveal_turns_and_sandbox_replies(client, superuser, rated):
    client.force_login(superuser)
    page = client.get(reverse("admin:avatars_ratedreply_changelist")).content.decode()
    assert "PLAIN-ASK" in page and "PLAIN-REPLY" in page
    assert "REVEAL-" not in page
    assert "SANDBOX-" not in page


def test_rated_replies_filter_by_thumbs(client, superuser, rated):
    client.force_login(superuser)
    url = reverse("admin:avatars_ratedreply_changelist")
    assert "PLAIN-REPLY" in client.get(url, {"thumbs": "down"}).content.decode()
    assert "PLAIN-REPLY" not in client.get(url, {"thumbs": "up"}).content.decode()


def test_writing_a_better_reply_stores_it_with_its_author(client, superuser, rated):
    client.force_login(superuser)
    url = reverse("admin:avatars_ratedreply_change", args=[rated.pk])
    page = client.get(url).content.decode()
    assert "PLAIN-ASK" in page and "PLAIN-REPLY" in page
    response = client.post(
        url,
        {
            "better-TOTAL_FORMS": "1",
            "better-INITIAL_FORMS": "0",
            "better-MIN_NUM_FORMS": "0",
            "better-MAX_NUM_FORMS": "1",
            "better-0-text": "The lamp is fifty years old, dearie.",
            "better-0-message": str(rated.pk),
        },
    )
    assert response.status_code == 302
    better = BetterReply.objects.get(message=rated)
    assert better.text == "The lamp is fifty years old, dearie."
    assert better.author == superuser


def test_the_persona_checks_are_edited_on_the_avatar(client, superuser, demo_hunt):
    client.force_login(superuser)
    avatar = Avatar.objects.get(slug="old-marta")
    page = client.get(reverse("admin:avatars_avatar_change", args=[avatar.pk])).content.decode()
    assert 'name="persona_checks-TOTAL_FORMS"' in page
    assert "certification asks these of every candidate model" in page
