"""The hunt pages in a real browser (Debian's Chromium) against a real Daphne process:
sign in, the dashboard, the live leaderboard and the claim page."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from hunt.models import Hunt
from tests.conftest import BROWSER_PASSWORD, sign_in
from tests.hunt_helpers import demo_phrase, discover, wrong_phrase

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def players(demo_hunt, make_player):
    """Made before the browser starts: Playwright's sync API runs an event loop in this thread,
    and Django refuses ORM calls from a thread with a running loop."""
    walker = make_player("walker", password=BROWSER_PASSWORD)
    runner = make_player("runner", password=BROWSER_PASSWORD)
    discover(walker, demo_hunt, 3)
    # This walk is about the pages; the rule that a claim needs every word found has its
    # own tests (tests/test_claims.py, tests/test_pages.py).
    Hunt.objects.filter(pk=demo_hunt.pk).update(claims_need_all_words=False)
    return walker, runner


def in_thread(fn):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def test_a_player_follows_progress_watches_the_board_and_claims(
    demo_hunt, players, daphne_process, browser_page
):
    _walker, runner = players
    _server, host = daphne_process(redis=False)
    base = f"http://{host}"
    hunt_path = f"/hunts/{demo_hunt.slug}/"
    page = browser_page

    # The dashboard: the found word in its slot, where to go for the others.
    sign_in(page, base, "walker", hunt_path)
    assert page.locator("#word-3 .slot-word").inner_text() == demo_phrase()[2]
    assert page.get_by_text("1 of 24 words found").is_visible()
    page.locator("#word-7").get_by_role("link", name="Captain Rook").click()
    page.wait_for_url(f"{base}/chat/captain-rook/")

    # The leaderboard, live over its socket.
    board = page.context.new_page()
    board.goto(f"{base}{hunt_path}leaderboard/")
    board.wait_for_selector('#lb-status[data-state="live"]')
    assert board.locator("#lb-rows tr").first.inner_text().split("\t")[:3] == ["1", "walker", "1"]
    assert board.locator("#winner").is_hidden()

    # A wrong claim: the result, then the cooldown with the button disabled.
    page.goto(f"{base}{hunt_path}claim/")
    page.get_by_label("The 24 words").fill(" ".join(wrong_phrase()))
    assert page.locator("#word-count").inner_text() == "24 of 24 words"
    page.get_by_role("button", name="Claim").click()
    page.wait_for_selector(".result-wrong")
    assert re.search(r"You can claim again in \d+ seconds", page.locator("#cooldown").inner_text())
    assert page.get_by_role("button", name="Claim").is_disabled()

    # Another player wins; the open leaderboard announces it without a reload.
    other = page.context.browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    sign_in(other, base, "runner", f"{hunt_path}claim/")
    other.get_by_label("The 24 words").fill("\n".join(demo_phrase()))
    other.get_by_role("button", name="Claim").click()
    other.wait_for_selector(".result-winner")
    board.wait_for_selector("#winner:not([hidden])")
    assert "runner opened the wallet!" in board.locator("#winner").inner_text()
    assert in_thread(lambda: Hunt.objects.get(pk=demo_hunt.pk).winner_id) == runner.pk
