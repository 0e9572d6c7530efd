"""The organizers' gate playground in a real browser (Debian's Chromium) against a real Daphne
process: a superuser tries a message on Old Marta's clue, sees that it does not open, adds it
as an example, and sees the same message open the clue."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hunt.models import Clue
from tests.conftest import BROWSER_PASSWORD, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Not opened by the demo clue as it stands; it asks with "lamp", one of the clue's keywords.
NEW_PHRASING = "Does the lamp ever go out when the wind howls?"


@pytest.fixture
def playground_path(demo_hunt, make_user) -> str:
    """Made before the browser starts: Django refuses ORM calls from Playwright's thread."""
    make_user("boss", password=BROWSER_PASSWORD, is_staff=True, is_superuser=True)
    clue = Clue.objects.get(avatar__slug="old-marta")
    return reverse("admin:avatars_avatar_clue_gate", args=[clue.avatar_id, clue.pk])


def test_a_superuser_adds_a_message_as_an_example_and_sees_it_open_the_clue(
    playground_path, daphne_process, browser_page
):
    _server, host = daphne_process(redis=False)
    base = f"http://{host}"
    page = browser_page
    sign_in(page, base, "boss", playground_path)

    page.get_by_label("Message:", exact=True).fill(NEW_PHRASING)
    page.get_by_role("button", name="Try").click()
    decision = page.locator("#gate-decision")
    decision.wait_for()
    assert decision.inner_text() == "does not open"
    assert page.locator("#gate-anchors tbody tr").count() == 5  # two questions, three examples

    page.get_by_role("button", name="Add as example").click()
    page.get_by_text("is an example of this clue now").wait_for()
    assert page.locator("#gate-decision").inner_text() == "opens this clue"
    assert page.locator("#gate-anchors tbody tr").first.inner_text().startswith(NEW_PHRASING)
