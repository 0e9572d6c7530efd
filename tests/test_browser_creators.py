"""The creator studio in a real browser (Debian's Chromium) against a real Daphne process with
the tiny random model: a creator imports a card, talks to the draft in the sandbox and
submits it; an organizer approves it into the hunt; a player sees it and chats with it."""

from __future__ import annotations

import re

import pytest

from avatars import studio
from avatars.models import Avatar, Conversation
from tests.conftest import BROWSER_PASSWORD, ROOT, sign_in
from tests.test_browser_hunt import in_thread

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CARD = ROOT / "tests" / "data" / "cards" / "v3_baker.png"
NAME = "Baker Lin of the PNG"


@pytest.fixture
def actors(demo_hunt, make_user, make_player):
    """Made before the browser starts: Django refuses ORM calls from Playwright's thread."""
    studio.grant_creator(make_user("maker", password=BROWSER_PASSWORD))
    make_user("boss", password=BROWSER_PASSWORD, is_staff=True, is_superuser=True)
    make_player("walker", password=BROWSER_PASSWORD)
    return demo_hunt


def sign_out(page) -> None:
    page.get_by_role("button", name=re.compile("Sign out")).click()
    page.wait_for_load_state()


def chat_once(page, text: str) -> str:
    page.wait_for_selector('#chat-status[data-state="open"]')
    box = page.locator("#chat-input")
    box.fill(text)
    box.press("Enter")
    reply = page.locator(".msg-avatar[data-id]").first
    reply.wait_for(timeout=120_000)
    return reply.locator(".msg-text").inner_text()


def test_a_card_goes_from_import_through_sandbox_and_review_to_players(
    actors, daphne_process, browser_page
):
    hunt = actors
    _server, host = daphne_process(redis=False, AVATAR_MODEL="tiny-random")
    base = f"http://{host}"
    page = browser_page

    # The creator imports a PNG card: a draft with the card's texts and portrait.
    sign_in(page, base, "maker", "/studio/")
    page.get_by_label("Character Card V2 or V3 (.json or .png)").set_input_files(CARD)
    page.get_by_role("button", name="Import").click()
    page.wait_for_url(re.compile(r".*/studio/baker-lin-of-the-png/$"))
    assert page.get_by_label("Name").input_value() == NAME
    assert page.get_by_label("Greeting").input_value() == "Fresh rye, still warm! Hungry?"
    assert page.locator("img.portrait").is_visible()
    # The live token meter answers as the persona changes.
    page.wait_for_function(
        "/ of \\d+ prompt tokens/.test(document.getElementById('meter').textContent)"
    )
    before = page.locator("#meter").inner_text()
    page.get_by_label("Persona").press("End")
    page.get_by_label("Persona").type(" She hums while kneading.")
    page.wait_for_function(
        f"document.getElementById('meter').textContent !== {before!r}", timeout=10_000
    )

    # The sandbox: the real chat page and socket, marked as not play.
    page.get_by_role("link", name="Talk to it in the sandbox").click()
    page.wait_for_url(f"{base}/chat/baker-lin-of-the-png/")
    assert page.locator("#sandbox-notice").is_visible()
    assert chat_once(page, "Good morning! What bread is fresh today?").strip()

    page.goto(f"{base}/studio/baker-lin-of-the-png/")
    page.get_by_role("button", name="Submit for review").click()
    page.wait_for_selector('#review-status[data-review="submitted"]')
    sign_out(page)

    # The organizer reviews: the transcript is there; approves into the hunt.
    sign_in(page, base, "boss", "/studio/review/")
    page.get_by_role("link", name=NAME).click()
    assert "What bread is fresh today?" in page.locator("#transcript").inner_text()
    # The attack prompts ran on the draft after the submission (in the server's job pool).
    for _ in range(60):
        if page.locator("#attacks li").count():
            break
        page.wait_for_timeout(1000)
        page.reload()
    assert page.locator("#attacks li").count() == 3
    page.get_by_label("Publish into hunt").select_option(label=hunt.title)
    page.get_by_role("button", name="Approve and publish").click()
    page.wait_for_url(f"{base}/studio/review/")
    assert page.get_by_text(f"“{NAME}” is live.").is_visible()
    sign_out(page)

    def published():
        avatar = Avatar.objects.get(slug="baker-lin-of-the-png")
        return avatar.published, avatar.hunt_id, Conversation.objects.filter(avatar=avatar).count()

    # Live in the hunt; the sandbox conversation is gone.
    assert in_thread(published) == (True, hunt.pk, 0)

    # A player finds it in the hunt's avatars, with its portrait, and talks to it.
    sign_in(page, base, "walker", f"/hunts/{hunt.slug}/avatars/")
    assert page.get_by_alt_text(f"Portrait of {NAME}").is_visible()
    page.get_by_role("link", name=f"Talk to {NAME}").click()
    page.wait_for_url(f"{base}/chat/baker-lin-of-the-png/")
    assert page.locator("#sandbox-notice").count() == 0
    assert chat_once(page, "Hello! Is the rye still warm?").strip()

    def played():
        return list(
            Conversation.objects.filter(avatar__slug="baker-lin-of-the-png").values_list(
                "player__user__username", "sandbox"
            )
        )

    assert in_thread(played) == [("walker", False)]
