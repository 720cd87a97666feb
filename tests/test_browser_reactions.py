"""Reactions in a real Chromium: a reaction chosen from a message's menu (React opens the emoji
picker) is seen live by the other person as a chip with its count; clicking a chip toggles
one's own, highlighted when mine, with who reacted on hover; after a lost event queue the page
catches up with messages.changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import (
    bubble,
    close_all,
    dm_from_api,
    launch,
    live_person,
    new_person,
    open_conversation,
    sign_in,
    wait_live,
)
from tests.conftest import RunningServer, ServerFactory
from tests.test_browser_realtime import cut_off, restore


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_a_reaction_is_seen_live_by_the_other_person(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    bob_api, _ = await dm_from_api(server, alice, "bob")  # bob wrote "first"
    bob = await new_person(browser, server, "bob", sign_up_now=False)
    await sign_in(bob.page, "bob", "correct horse")
    await wait_live(bob)
    await open_conversation(bob, "alice")

    # Bob: hover his message, its actions, React, then 👍 in the picker.
    first = bubble(bob.page, "first")
    await first.hover()
    await first.get_by_role("button", name="Message actions").click()
    await bob.page.get_by_role("menuitem", name="React").click()
    await bob.page.locator("#emoji-picker").get_by_role("button", name="thumbs up").click()
    mine = first.locator(".reaction", has_text="👍")
    await expect(mine).to_have_attribute("aria-pressed", "true")
    await expect(mine.locator(".reaction-count")).to_have_text("1")
    await expect(bob.page.locator("#composer-input")).to_have_value("")  # not typed in

    # Alice sees it live, not highlighted, with who reacted on hover; her click adds hers.
    chip = bubble(alice.page, "first").locator(".reaction", has_text="👍")
    await expect(chip.locator(".reaction-count")).to_have_text("1")
    await expect(chip).to_have_attribute("aria-pressed", "false")
    await expect(chip).to_have_attribute("title", "bob reacted with 👍")
    await chip.click()
    await expect(chip).to_have_attribute("aria-pressed", "true")
    await expect(chip.locator(".reaction-count")).to_have_text("2")
    await expect(mine.locator(".reaction-count")).to_have_text("2")
    await expect(mine).to_have_attribute("title", "You, alice reacted with 👍")

    # Bob's click takes his back: the count falls on both sides, live.
    await mine.click()
    await expect(mine).to_have_attribute("aria-pressed", "false")
    await expect(chip.locator(".reaction-count")).to_have_text("1")
    assert alice.errors == [] and bob.errors == []
    bob_api.close()
    await close_all(alice, bob)


async def test_after_a_lost_queue_the_page_gets_the_changes_it_missed(
    browser: Browser, make_server: ServerFactory
) -> None:
    # A queue holds 5 unacknowledged events here: a longer absence loses it.
    server = await make_server(queue_max_events=5)
    alice = await live_person(browser, server, "alice", sockets="proxy")
    bob, cid = await dm_from_api(server, alice, "bob")
    first = (await bob.get(f"/api/conversations/{cid}/messages")).body["messages"][0]
    await cut_off(alice)
    url = f"/api/conversations/{cid}/messages/{first['id']}"
    assert (await bob.patch(url, {"body": "first, edited"})).status == 200
    for emoji in ("👍", "🎉", "😀", "🚀", "👀", "❤️"):
        assert (await bob.put(f"{url}/reactions/{quote(emoji)}")).status == 200
    await expect(alice.page.locator("#transport")).to_have_attribute("data-mode", "longpoll")
    await restore(alice)
    await wait_live(alice, "longpoll")
    # No new message to read: only messages.changes brings the edit and the reactions.
    edited = bubble(alice.page, "first, edited")
    await expect(edited.locator(".reaction")).to_have_count(6)
    await expect(edited.locator(".reaction-count").first).to_have_text("1")
    assert alice.errors == []
    bob.close()
    await close_all(alice)
