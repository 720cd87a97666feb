"""Settings in a real Chromium: notifications and sound for a hidden tab, the unread count in
the title, message requests and the friends-only setting, and the theme (dark mode)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser_helpers import (
    bubble,
    close_all,
    code_of,
    conversation_row,
    launch,
    new_person,
    person_row,
    send,
    sign_up,
    tab,
    token_of,
    wait_live,
)
from tests.client import ApiClient
from tests.conftest import RunningServer

# Headless Chromium never hides a tab (a second page brought to the front leaves the first
# "visible"), so the test makes the page hidden itself: document.visibilityState and
# document.hidden answer from a flag, and __setHidden() flips it and fires visibilitychange
# as the browser would. The Notification constructor and OscillatorNode.start are wrapped to
# record their calls; the real ones still run.
RECORDER = """
(() => {
  window.__notes = [];
  window.__beeps = 0;
  const Real = window.Notification;
  if (Real) {
    class Recording extends Real {
      constructor(title, options) {
        window.__notes.push({ title, body: options?.body ?? null, tag: options?.tag ?? null });
        super(title, options);
      }
    }
    window.Notification = Recording;
  }
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...args) {
    window.__beeps += 1;
    return start.apply(this, args);
  };
  let hidden = false;
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true, get: () => (hidden ? 'hidden' : 'visible'),
  });
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => hidden });
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event('visibilitychange'));
  };
})();
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def notes(page: Page) -> list[dict[str, Any]]:
    found = await page.evaluate("window.__notes")
    assert isinstance(found, list)
    return found


async def expect_notes(page: Page, count: int) -> list[dict[str, Any]]:
    await page.wait_for_function("n => window.__notes.length >= n", arg=count)
    found = await notes(page)
    assert len(found) == count, found
    return found


async def stranger(server: RunningServer, name: str, to_id: str) -> tuple[ApiClient, str]:
    """A user made over the API, with a DM open to `to_id`."""
    api = server.client()
    await api.register(name)
    reply = await api.post("/api/conversations/dm", {"user_id": to_id})
    assert reply.status == 200, reply.body
    return api, reply.body["conversation"]["id"]


async def api_send(api: ApiClient, conversation_id: str, body: str) -> None:
    reply = await api.post(f"/api/conversations/{conversation_id}/messages", {"body": body})
    assert reply.status == 201, reply.body


async def open_settings(page: Page) -> None:
    await page.get_by_role("button", name="Settings").click()
    await expect(page.get_by_role("dialog", name="Settings")).to_be_visible()


async def test_hidden_tab_notifies_dm_mention_and_sounds_until_turned_off(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    await alice.context.grant_permissions(["notifications"], origin=server.base_url)
    await alice.context.add_init_script(RECORDER)
    page = alice.page
    await page.reload()
    await sign_up(page, "alice")
    await wait_live(alice)
    token = await token_of(page)
    alice_id = (await server.client(token).get("/api/me")).body["user"]["id"]
    alice_api = server.client(token)
    await page.evaluate("__setHidden(true)")

    # A DM from a stranger: a notification, a beep, a toast, the count in the title.
    bob, dm = await stranger(server, "bob", alice_id)
    await api_send(bob, dm, "hello alice")
    [note] = await expect_notes(page, 1)
    assert note == {"title": "bob", "body": "hello alice", "tag": dm}
    assert await page.evaluate("window.__beeps") == 1
    await expect(page.locator(".toast")).to_contain_text("bob wants to message you.")
    await expect(page).to_have_title("(1) Chat")
    await api_send(bob, dm, "are you there?")
    await expect_notes(page, 2)
    await expect(page).to_have_title("(2) Chat")

    # A group: a plain message does not notify, a mention of alice does.
    carol = server.client()
    await carol.register("carol")
    request = (await carol.post("/api/friends/requests", {"user_id": alice_id})).body["request"]
    assert (await alice_api.post(f"/api/friends/requests/{request['id']}/accept")).status == 200
    group = await carol.post("/api/groups", {"name": "Climbing", "member_ids": [alice_id]})
    gid = group.body["conversation"]["id"]
    await api_send(carol, gid, "hi all, and @alicex too")
    await api_send(carol, gid, "@alice are you coming?")
    found = await expect_notes(page, 3)
    assert found[2]["title"] == "carol mentioned you in Climbing"
    assert found[2]["body"] == "@alice are you coming?"
    await expect(page).to_have_title("(4) Chat")  # every unread message counts
    assert await page.evaluate("window.__beeps") == 3

    # In front of the user: nothing to announce.
    await page.evaluate("__setHidden(false)")
    await api_send(bob, dm, "seen?")
    await expect(page).to_have_title("(5) Chat")
    assert len(await notes(page)) == 3

    # Both off in Settings, kept across a reload.
    await open_settings(page)
    await page.get_by_label("Desktop notifications").uncheck()
    await page.get_by_label("Sound").uncheck()
    await page.get_by_role("button", name="Close").click()
    await page.reload()
    await expect(page.locator("#me-name")).to_have_text("alice")
    await open_settings(page)
    await expect(page.get_by_label("Desktop notifications")).not_to_be_checked()
    await expect(page.get_by_label("Sound")).not_to_be_checked()
    await page.get_by_role("button", name="Close").click()
    await wait_live(alice)
    await page.evaluate("__setHidden(true)")
    await api_send(bob, dm, "still nothing?")
    await expect(page).to_have_title("(6) Chat")
    await page.wait_for_timeout(300)  # an announcement would come with the count
    assert await notes(page) == [] and await page.evaluate("window.__beeps") == 0
    assert alice.errors == []
    await close_all(alice)


async def test_message_requests_and_friends_only(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice")
    bob = await new_person(browser, server, "bob")
    await wait_live(alice)
    await wait_live(bob)
    code = await code_of(alice)

    # bob, a stranger, finds alice by code and writes: a request on her side.
    await tab(bob, "People")
    await bob.page.get_by_label("Find by friend code").fill(code)
    await bob.page.get_by_role("button", name="Find", exact=True).click()
    await person_row(bob.page, "code-result", "alice").get_by_role("button", name="Message").click()
    await expect(bob.page.locator("#chat-title")).to_have_text("alice")
    await send(bob, "hi alice, bob from the meetup")
    await expect(alice.page.locator(".toast")).to_contain_text("bob wants to message you.")
    requests = alice.page.locator("#dm-request-list .conv")
    await expect(requests).to_have_count(1)
    await expect(alice.page.get_by_role("heading", name="Message requests")).to_be_visible()
    await expect(alice.page.locator("#conversation-list .conv")).to_have_count(0)
    await expect(bob.page.locator("#conversation-list .conv")).to_have_count(1)  # his is normal

    await requests.click()
    await expect(bubble(alice.page, "hi alice, bob from the meetup")).to_be_visible()
    bar = alice.page.locator("#request-bar")
    await expect(bar).to_contain_text("bob wants to message you.")
    await bar.get_by_role("button", name="Accept").click()
    await expect(bar).to_be_hidden()
    await expect(alice.page.locator("#dm-request-list .conv")).to_have_count(0)
    await expect(alice.page.locator("#dm-requests")).to_be_hidden()
    await expect(conversation_row(alice.page, "bob")).to_have_count(1)

    # Friends only: carol, a stranger, is refused and told why; bob's DM goes on.
    await open_settings(alice.page)
    policy = alice.page.get_by_label("Who may start a conversation with me")
    await expect(policy).to_be_enabled()
    await expect(policy).to_have_value("everyone")
    await policy.select_option("friends")
    await expect(policy).to_be_enabled()
    await alice.page.get_by_role("button", name="Close").click()
    settings = await server.client(await token_of(alice.page)).get("/api/me/settings")
    assert settings.body == {"settings": {"dm_policy": "friends"}}

    carol = await new_person(browser, server, "carol")
    await tab(carol, "People")
    await carol.page.get_by_label("Find by friend code").fill(code)
    await carol.page.get_by_role("button", name="Find", exact=True).click()
    await (
        person_row(carol.page, "code-result", "alice").get_by_role("button", name="Message").click()
    )
    await expect(carol.page.locator(".toast.error")).to_contain_text("friends only")
    await expect(carol.page.locator("#chat-pane")).to_be_hidden()
    await send(bob, "thanks for accepting")
    await expect(bubble(alice.page, "thanks for accepting")).to_be_visible()

    await alice.page.reload()
    await open_settings(alice.page)
    await expect(policy).to_have_value("friends")
    for person in (alice, bob, carol):
        assert person.errors == [], person.errors
    await close_all(alice, bob, carol)


async def expect_background(page: Page, colour: str) -> None:
    await page.wait_for_function(
        "c => getComputedStyle(document.body).backgroundColor === c", arg=colour
    )


LIGHT_BG = "rgb(244, 245, 250)"
DARK_BG = "rgb(11, 17, 32)"


async def test_theme_follows_the_system_and_the_toggle(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    page = alice.page
    await page.emulate_media(color_scheme="dark")
    await expect_background(page, DARK_BG)
    await page.emulate_media(color_scheme="light")
    await expect_background(page, LIGHT_BG)

    await open_settings(page)
    await expect(page.get_by_label("Same as the system")).to_be_checked()
    await page.get_by_label("Dark", exact=True).check()
    await expect_background(page, DARK_BG)
    await page.keyboard.press("Escape")
    await page.reload()
    await expect(page.locator("#me-name")).to_have_text("alice")
    await expect_background(page, DARK_BG)
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"

    # Light wins over a dark system; "system" follows it again.
    await page.emulate_media(color_scheme="dark")
    await open_settings(page)
    await page.get_by_label("Light", exact=True).check()
    await expect_background(page, LIGHT_BG)
    await page.get_by_label("Same as the system").check()
    await expect_background(page, DARK_BG)
    stored = await page.evaluate("localStorage.getItem('chat.theme')")
    assert stored == "system"
    # The form controls and dialogs follow too.
    scheme = await page.evaluate("getComputedStyle(document.documentElement).colorScheme")
    assert re.search("dark", scheme), scheme
    assert alice.errors == []
    await close_all(alice)
