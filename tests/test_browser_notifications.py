"""The notification bell in a real Chromium: its count updates live when a friend request
and a group arrive, the list shows them newest first, an entry opens its conversation, "Mark
all read" clears the count (and it stays cleared after a reload); axe finds nothing with the
list open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import close_all, launch, live_person, token_of, wait_live
from tests.conftest import RunningServer
from tests.test_browser_a11y import AXE, Audit


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_the_bell_counts_live_lists_opens_and_marks_all_read(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    page = alice.page
    await alice.context.add_init_script(path=str(AXE))  # the open list is audited
    await page.reload()
    await wait_live(alice)
    bell = page.locator("#notifications-bell")
    badge = page.locator("#notifications-badge")
    await expect(bell).to_have_attribute("aria-label", "Notifications")
    await expect(badge).to_be_hidden()

    me = await server.client(await token_of(page)).get("/api/me")
    alice_id = me.body["user"]["id"]
    bob = server.client()
    await bob.register("bob")
    assert (await bob.post("/api/friends/requests", {"user_id": alice_id})).status == 201
    await expect(bell).to_have_attribute("aria-label", "Notifications, 1 unread")
    await expect(badge).to_have_text("1")
    reply = await bob.post("/api/groups", {"name": "Raid", "member_ids": [alice_id]})
    assert reply.status == 201
    await expect(bell).to_have_attribute("aria-label", "Notifications, 2 unread")

    await bell.click()
    await expect(bell).to_have_attribute("aria-expanded", "true")
    entries = page.locator("#notification-list li")
    await expect(entries).to_have_count(2)
    await expect(entries.nth(0)).to_contain_text("bob added you to Raid")
    await expect(entries.nth(1)).to_contain_text("bob sent you a friend request")
    await expect(entries.nth(0).locator("time")).not_to_be_empty()
    audit = Audit(page)
    await audit.check("notifications open")
    audit.assert_clean()

    await entries.nth(0).get_by_role("button").click()  # the group's entry opens it
    await expect(page.locator("#chat-title")).to_have_text("Raid")
    await expect(page.locator("#notifications-panel")).to_be_hidden()
    await expect(bell).to_have_attribute("aria-label", "Notifications, 1 unread")

    await bell.click()
    await page.get_by_role("button", name="Mark all read").click()
    await expect(bell).to_have_attribute("aria-label", "Notifications")
    await expect(badge).to_be_hidden()
    await page.keyboard.press("Escape")
    await expect(page.locator("#notifications-panel")).to_be_hidden()

    await page.reload()
    await wait_live(alice)
    await expect(bell).to_have_attribute("aria-label", "Notifications")
    await bell.click()
    await expect(entries).to_have_count(2)
    assert alice.errors == []
    bob.close()
    await close_all(alice)
