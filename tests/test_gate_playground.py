"""The organizers' gate playground in the admin: a superuser tries a message on a clue and sees
how the gate decides it, adds it as an example or a counterexample, and sees the decision
change; other staff get 403, and nothing a try does counts as play."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hunt.models import Activity, Clue, Discovery, NearMiss

pytestmark = pytest.mark.django_db

# Not opened by the demo clue as it stands (asked with "lamp", so the keyword check lets it in).
NEW_PHRASING = "Does the lamp ever go out when the wind howls?"


@pytest.fixture
def clue(demo_hunt) -> Clue:
    return Clue.objects.select_related("word").get(avatar__slug="old-marta")


@pytest.fixture
def superuser(make_user):
    return make_user("boss", is_staff=True, is_superuser=True)


def playground_url(clue: Clue) -> str:
    return reverse("admin:avatars_avatar_clue_gate", args=[clue.avatar_id, clue.pk])


def test_the_clue_inline_links_each_clue_to_its_playground(client, superuser, clue):
    client.force_login(superuser)
    page = client.get(reverse("admin:avatars_avatar_change", args=[clue.avatar_id]))
    assert playground_url(clue) in page.content.decode()


def test_a_superuser_sees_the_decision_and_the_score_against_each_anchor(client, superuser, clue):
    client.force_login(superuser)
    page = client.get(playground_url(clue), {"message": NEW_PHRASING})

    assert page.status_code == 200
    trial = page.context["trial"]
    assert not trial.opened
    assert {a.text for a in trial.anchors} == {*clue.questions, *clue.examples}
    html = page.content.decode()
    assert "does not open" in html
    assert "Home</a>" in html  # the admin's breadcrumbs
    for anchor in trial.anchors:
        assert anchor.text in html
    # The importer calibrated it from its examples and counterexamples.
    assert f"{clue.calibration['threshold']}" in html and "Examples opened" in html


def test_added_as_an_example_the_same_message_opens_the_clue(
    client, superuser, clue, django_capture_on_commit_callbacks
):
    client.force_login(superuser)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            playground_url(clue), {"message": NEW_PHRASING, "context": "", "kind": "examples"}
        )
    assert len(callbacks) == 1  # the recalibration, after commit

    assert response.status_code == 302
    clue.refresh_from_db()
    assert clue.examples[-1] == NEW_PHRASING
    assert clue.calibration["examples"][1] == len(clue.examples)
    page = client.get(response["Location"])
    assert page.context["trial"].opened
    assert page.context["trial"].anchors[0].score == 1.0
    html = page.content.decode()
    assert "opens this clue" in html
    assert "is an example of this clue now" in html


def test_added_as_a_counterexample_it_joins_the_clues_counterexamples_once(
    client, superuser, clue, django_capture_on_commit_callbacks
):
    client.force_login(superuser)
    form = {"message": "Where did you buy that old lamp?", "context": "", "kind": "counterexamples"}
    with django_capture_on_commit_callbacks(execute=True):
        client.post(playground_url(clue), form)
    client.post(playground_url(clue), form)

    clue.refresh_from_db()
    assert clue.counterexamples.count("Where did you buy that old lamp?") == 1
    assert clue.calibration["counterexamples"][1] == len(clue.counterexamples)
    page = client.get(playground_url(clue))
    assert "Counterexamples opened" in page.content.decode()


def test_an_example_added_as_a_counterexample_leaves_the_examples(client, superuser, clue):
    client.force_login(superuser)
    example = clue.examples[0]
    client.post(playground_url(clue), {"message": example, "kind": "counterexamples"})
    clue.refresh_from_db()
    assert example in clue.counterexamples
    assert example not in clue.examples


def test_staff_below_superuser_get_403(client, make_user, demo_hunt, clue):
    organizer = make_user("organizer", is_staff=True)
    demo_hunt.organizers.add(organizer)
    client.force_login(organizer)

    assert client.get(playground_url(clue), {"message": NEW_PHRASING}).status_code == 403
    form = {"message": NEW_PHRASING, "kind": "examples"}
    assert client.post(playground_url(clue), form).status_code == 403
    clue.refresh_from_db()
    assert NEW_PHRASING not in clue.examples


def test_a_clue_is_reached_only_through_its_own_avatar(client, superuser, clue):
    other = Clue.objects.exclude(avatar=clue.avatar_id).first()
    client.force_login(superuser)
    url = reverse("admin:avatars_avatar_clue_gate", args=[other.avatar_id, clue.pk])
    assert client.get(url).status_code == 404


def test_trying_messages_records_no_play(client, superuser, clue):
    def counts() -> tuple[int, int, int]:
        return NearMiss.objects.count(), Discovery.objects.count(), Activity.objects.count()

    before = counts()
    client.force_login(superuser)
    trials = [
        client.get(playground_url(clue), {"message": message}).context["trial"]
        for message in (clue.questions[0], NEW_PHRASING, "What keeps your lamp going at night?")
    ]
    assert trials[0].opened  # even a right question, which a player's would discover
    assert counts() == before
