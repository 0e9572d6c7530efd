"""The organizers' console in a real browser (Debian's Chromium) against a real Daphne process.

One organizer watches the console while a player chats in another browser: the player's
discovery appears on the console without a reload; the organizer pauses the hunt and the
player's next message is refused with `hunt_not_live`; the organizer's announcement shows on
the player's chat page. With CONSOLE_SCREENSHOTS=<folder> it also saves the screenshots of
docs/console.md there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hunt.models import Clue
from tests.conftest import BROWSER_PASSWORD, sign_in

pytest_plugins = ["tests.chat_support"]
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1280, "height": 900}


@pytest.fixture
def accounts(demo_hunt, make_player, make_user) -> int:
    """Made before the browser starts: Django refuses ORM calls from Playwright's thread.
    Returns the position Old Marta guards."""
    make_player("walker", password=BROWSER_PASSWORD)
    organizer = make_user("organizer", password=BROWSER_PASSWORD, is_staff=True)
    demo_hunt.organizers.add(organizer)
    return Clue.objects.select_related("word").get(avatar__slug="old-marta").word.position


def shoot(page, name: str, **options) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), **options)


def test_an_organizer_watches_a_discovery_pauses_the_hunt_and_announces(
    accounts, demo_hunt, daphne_process, browser_page
):
    position = accounts
    _server, host = daphne_process(
        redis=False, AVATAR_MODEL="tiny-random", CONSOLE_POLL_SECONDS="1", CONSOLE_CACHE_SECONDS="0"
    )
    base = f"http://{host}"
    console_path = f"/console/{demo_hunt.slug}/"

    desk = browser_page.context.browser.new_context(viewport=LAPTOP).new_page()
    desk.set_default_timeout(30_000)
    desk.on("dialog", lambda dialog: dialog.accept())
    sign_in(desk, base, "organizer", console_path)
    desk.wait_for_selector('#console[data-loaded="1"]')
    assert desk.locator("#hunt-status").inner_text() == "live"
    assert desk.locator("#discoveries li[data-id]").count() == 0

    player = browser_page
    frames: list[str] = []
    player.on(
        "websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload))
    )
    sign_in(player, base, "walker", "/chat/old-marta/")
    player.wait_for_selector('#chat-status[data-state="open"]')
    box = player.get_by_label("Your message to Old Marta")
    box.fill("What keeps the lighthouse lamp burning at night?")
    box.press("Enter")
    player.locator(f'.discovery-card[data-position="{position}"]').wait_for(timeout=120_000)
    player.locator(".msg-avatar[data-id]").first.wait_for(timeout=120_000)

    # The console shows it on its next poll, without a reload.
    found = desk.locator("#discoveries li[data-id]", has_text="walker")
    found.wait_for(timeout=20_000)
    assert f"#{position}" in found.inner_text()
    row = desk.locator(f'#funnel tr[data-position="{position}"] td.found')
    assert row.inner_text().startswith("1")
    shoot(desk, "console-laptop.png", full_page=True)

    desk.get_by_role("button", name="Pause the hunt").click()
    desk.wait_for_selector('#hunt-status[data-status="paused"]')
    desk.get_by_role("button", name="Resume the hunt").wait_for()

    # The player's next message is refused with hunt_not_live: nothing is stored.
    box.fill("Are you still there, Marta?")
    box.press("Enter")
    player.wait_for_selector(".msg-refused")
    notice = player.locator("#hunt-notice")
    assert notice.is_visible()
    assert "paused" in notice.inner_text()
    assert any('"hunt_not_live"' in f and "client_id" in f for f in frames), frames

    desk.get_by_label("Announcement to every connected player").fill(
        "Short break: the lighthouse is back in ten minutes."
    )
    desk.get_by_role("button", name="Broadcast").click()
    desk.wait_for_selector("#announce-status:has-text('Sent')")
    announcement = player.locator("#hunt-announcement")
    announcement.wait_for(state="visible", timeout=10_000)
    assert announcement.inner_text() == "Short break: the lighthouse is back in ten minutes."
    shoot(player, "player-announcement.png")

    phone = browser_page.context.browser.new_context(
        viewport={"width": 390, "height": 844}, storage_state=desk.context.storage_state()
    ).new_page()
    phone.goto(f"{base}{console_path}")
    phone.wait_for_selector('#console[data-loaded="1"]')
    assert re.search(r"paused", phone.locator("#hunt-status").inner_text())
    shoot(phone, "console-phone.png", full_page=True)
