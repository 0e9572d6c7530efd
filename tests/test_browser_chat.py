"""The chat page in a real browser (Debian's Chromium) against a real Daphne process.

Daphne runs embedded (in-memory channel layer, generation jobs in-process) with the tiny random
model, and the real gate: the right question to Old Marta opens her word.
"""

from __future__ import annotations

import re

import pytest

from hunt.models import Clue
from tests.conftest import BROWSER_PASSWORD

pytest_plugins = ["tests.chat_support"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Remembers the longest text a reply bubble showed while it was still streaming.
WATCH_STREAMING = """
window.streamedChars = 0;
new MutationObserver(() => {
  for (const el of document.querySelectorAll('.msg-streaming .msg-text')) {
    window.streamedChars = Math.max(window.streamedChars, el.textContent.length);
  }
}).observe(document.getElementById('thread'),
           {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture
def marta_word(demo_hunt, make_player) -> str:
    """Made before the browser starts: Django refuses ORM calls from Playwright's thread."""
    make_player("walker", password=BROWSER_PASSWORD)
    return Clue.objects.select_related("word").get(avatar__slug="old-marta").word.reveal_word()


def test_a_player_chats_sees_streamed_text_and_finds_a_word(
    marta_word, daphne_process, browser_page
):
    _server, host = daphne_process(redis=False, AVATAR_MODEL="tiny-random")
    base = f"http://{host}"
    page = browser_page

    page.goto(f"{base}/chat/old-marta/")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))
    page.get_by_label("Username").fill("walker")
    page.get_by_label("Password").fill(BROWSER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/chat/old-marta/")
    page.wait_for_selector('#chat-status[data-state="open"]')
    # The avatar picker lists the hunt's avatars; this one is the current page.
    assert page.locator('.chat-picker a[aria-current="page"]').inner_text().startswith("Old Marta")

    page.evaluate(WATCH_STREAMING)
    box = page.get_by_label("Your message to Old Marta")
    box.fill("Good evening, Marta! How is the sea today?")
    box.press("Enter")
    first_reply = page.locator(".msg-avatar[data-id]").first
    first_reply.wait_for(timeout=120_000)
    assert page.evaluate("window.streamedChars") > 0, "no text appeared before the reply ended"
    assert first_reply.locator(".msg-text").inner_text().strip()
    # Focus stays in the message box for the next question (keyboard users).
    assert page.evaluate("document.activeElement.id") == "chat-input"

    box.fill("What keeps the lighthouse lamp burning at night?")
    page.get_by_role("button", name="Send").click()
    card = page.locator('.discovery-card[data-position="3"]')
    card.wait_for(timeout=120_000)
    assert card.locator(".discovery-word").inner_text() == marta_word
    page.locator(".msg-avatar[data-id]").nth(1).wait_for(timeout=120_000)
    assert marta_word in page.locator(".msg-avatar[data-id]").nth(1).inner_text().lower()
    # Screen readers hear the discovery through the live region.
    page.wait_for_function(
        "document.getElementById('announcer').textContent.length > 0", timeout=10_000
    )

    # Thumbs up on the last reply, confirmed by the server.
    thumb = page.locator(".msg-avatar[data-id]").nth(1).get_by_role("button", name="Good answer")
    thumb.click()
    page.wait_for_function(
        "document.querySelectorAll('.thumb[aria-pressed=\"true\"]').length === 1"
    )

    # A reload (or a reconnect) restores the thread and the word from hello.
    page.reload()
    page.wait_for_selector('#chat-status[data-state="open"]')
    page.locator(".msg-avatar[data-id]").nth(1).wait_for()
    assert page.locator(".msg-player").count() == 2
    assert page.locator(".discovery-card .discovery-word").inner_text() == marta_word
