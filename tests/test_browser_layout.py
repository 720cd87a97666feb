"""The client's look and safety in a real Chromium: message text stays text, a 360 px phone
shows everything without sideways overflow, and the main screens are photographed for the docs.

Screenshots go to a temporary directory; with CHAT_SCREENSHOTS=1 they replace those under
docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser_helpers import (
    DESKTOP,
    PHONE,
    Person,
    befriend,
    bubble,
    close_all,
    conversation_row,
    expect_no_overflow,
    expect_sent,
    launch,
    new_person,
    open_conversation,
    open_dm_from_friends,
    send,
    tab,
    token_of,
    wait_live,
)
from tests.conftest import RunningServer

DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    if os.environ.get("CHAT_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path


async def test_message_text_is_never_html(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice")
    bob = await new_person(browser, server, "bob")
    await befriend(alice, bob)
    await open_dm_from_friends(alice, "bob")
    await send(alice, XSS)
    await expect_sent(alice.page, XSS)
    await open_conversation(bob, "alice")
    for person in (alice, bob):
        await expect(bubble(person.page, XSS).locator(".bubble")).to_have_text(XSS)
        assert await person.page.locator("#message-list img").count() == 0
    await expect(conversation_row(bob.page, "alice").locator(".preview")).to_have_text(XSS)
    # Markup in a username is impossible (the server's rules), but in a group name it is not.
    await tab(alice, "Chats")
    await alice.page.get_by_role("button", name="New group").click()
    dialog = alice.page.get_by_role("dialog", name="New group")
    await dialog.get_by_label("Group name").fill("<b>bold</b><script>alert(2)</script>")
    await dialog.get_by_label("bob").check()
    await dialog.get_by_role("button", name="Create group").click()
    await expect(alice.page.locator("#chat-title")).to_have_text(
        "<b>bold</b><script>alert(2)</script>"
    )
    await expect(conversation_row(bob.page, "<b>bold</b><script>alert(2)</script>")).to_be_visible()
    for person in (alice, bob):
        assert person.dialogs == []  # alert() never ran
        assert person.errors == []
        assert await person.page.locator("#app b, .conv b, #chat-title b").count() == 0
    await close_all(alice, bob)


async def screenshot(page: Page, directory: Path, name: str) -> None:
    # Toasts come and go with timing: the pictures show the screens without them.
    await page.locator("#toasts").evaluate("box => box.replaceChildren()")
    # The pointer left where the last click was would hover a message (its ⋯ button showing):
    # it goes to the bottom-left corner, over nothing that reacts to it.
    size = page.viewport_size
    await page.mouse.move(0, size["height"] - 1 if size else 0)
    # Animations (spinners, the pulse) are stopped so that the pictures are stable.
    await page.screenshot(path=str(directory / name), animations="disabled", caret="hide")


async def seed_story(server: RunningServer, alice: Person, bob: Person, carol: Person) -> None:
    """A little history worth a picture: a DM, a group, a request, people online and not."""
    await befriend(alice, bob)
    await befriend(carol, alice)
    await open_dm_from_friends(alice, "bob")
    lines = [
        (alice, "Hey Bob! Are we still on for Saturday?"),
        (bob, "Yes! I booked the cabin by the lake."),
        (alice, "Perfect. I'll bring the board games 🎲"),
        (bob, "Great, and I'll take care of food.\nAnything you don't eat?"),
        (alice, "Everything's fine — see you at 9! The map: https://example.com/lake"),
    ]
    for n, (person, text) in enumerate(lines):
        if n == 1:
            await open_conversation(bob, "alice")  # bob learns of the DM from its first message
        await send(person, text)
        await expect_sent(person.page, text)
    carol_api = server.client(await token_of(carol.page))
    bob_api = server.client(await token_of(bob.page))
    me = {
        p.username: (await server.client(await token_of(p.page)).get("/api/me")).body["user"]
        for p in (alice, bob)
    }
    group = await carol_api.post(
        "/api/groups",
        {"name": "Weekend trip", "member_ids": [me["alice"]["id"], me["bob"]["id"]]},
    )
    assert group.status == 201, group.body
    group_id = group.body["conversation"]["id"]
    await carol_api.post(f"/api/conversations/{group_id}/messages", {"body": "Who drives?"})
    dave = server.client()
    await dave.register("dave")
    await dave.post("/api/friends/requests", {"friend_code": me["alice"]["friend_code"]})
    for name in ("erin", "frank"):
        await server.client().register(name)
    assert bob_api is not None


async def test_screens_on_desktop_and_on_a_360_px_phone(
    browser: Browser, server: RunningServer, shots: Path
) -> None:
    # The sign-in screen.
    visitor = await new_person(browser, server, "visitor", sign_up_now=False)
    await expect(visitor.page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    await screenshot(visitor.page, shots, "sign-in.png")
    await close_all(visitor)

    alice = await new_person(browser, server, "alice")
    bob = await new_person(browser, server, "bob", viewport=PHONE)
    carol = await new_person(browser, server, "carol")
    await seed_story(server, alice, bob, carol)
    await carol.page.get_by_role("button", name="Log out").click()
    await wait_live(alice)

    # Desktop: the conversation list next to the open chat, then the people directory.
    await open_conversation(alice, "bob")
    await expect(
        conversation_row(alice.page, "Weekend trip").locator(".unread-badge")
    ).to_be_visible()
    await screenshot(alice.page, shots, "chat-desktop.png")
    await tab(alice, "People")
    await expect(alice.page.locator("#directory-list li")).to_have_count(3)  # dave, erin, frank
    await screenshot(alice.page, shots, "people-desktop.png")
    await expect_no_overflow(alice.page)

    # Phone: one pane at a time, nothing wider than the screen.
    page = bob.page
    await page.get_by_role("button", name="Back to conversations").click()
    await expect(page.locator("#conversation-list")).to_be_visible()
    await expect(page.locator("#chat-pane")).to_be_hidden()
    await expect_no_overflow(page)
    await screenshot(page, shots, "phone-list.png")
    await conversation_row(page, "alice").click()
    await expect(page.locator("#conversation-list")).to_be_hidden()
    await expect_no_overflow(page)
    await screenshot(page, shots, "phone-chat.png")
    # The same screens in the dark palette (prefers-color-scheme: dark).
    for person in (alice, bob):
        await person.page.emulate_media(color_scheme="dark")
    await screenshot(page, shots, "phone-chat-dark.png")
    await tab(alice, "Chats")
    await open_conversation(alice, "bob")
    await screenshot(alice.page, shots, "chat-desktop-dark.png")
    for person in (alice, bob):
        await person.page.emulate_media(color_scheme="light")
    long_word = "x" * 300
    await send(bob, long_word)
    await expect_sent(page, long_word)
    await expect_no_overflow(page)
    await expect(bubble(page, long_word).locator(".bubble")).to_have_text(long_word)
    # Every bubble, the 300-letter word too, wraps inside the screen.
    edges = await page.locator("#message-list .bubble").evaluate_all(
        "els => els.map(e => [e.getBoundingClientRect().left, e.getBoundingClientRect().right])"
    )
    assert edges and all(left >= 0 and right <= PHONE["width"] for left, right in edges), edges
    await page.get_by_role("button", name="Back to conversations").click()
    for section in ("People", "Requests"):
        await tab(bob, section)
        await expect_no_overflow(page)
    await tab(bob, "Chats")
    await page.get_by_role("button", name="New group").click()
    await expect(page.get_by_role("dialog", name="New group")).to_be_visible()
    await expect_no_overflow(page)
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog", name="New group")).to_be_hidden()
    # The desktop layout at phone width is the phone layout: the same page, resized.
    await alice.page.set_viewport_size(PHONE)
    await expect_no_overflow(alice.page)
    await alice.page.set_viewport_size(DESKTOP)
    for person in (alice, bob):
        assert person.errors == [], person.errors
    await close_all(alice, bob, carol)


async def test_usable_with_the_keyboard_alone(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice")
    page = alice.page
    bob = server.client()
    await bob.register("bob")
    me = (await server.client(await token_of(page)).get("/api/me")).body["user"]
    conv = (await bob.post("/api/conversations/dm", {"user_id": me["id"]})).body["conversation"]
    await bob.post(f"/api/conversations/{conv['id']}/messages", {"body": "ping"})
    await expect(conversation_row(page, "bob")).to_be_visible()

    # Tabs follow the arrow keys.
    await page.get_by_role("tab", name="Chats").focus()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("tab", name="People")).to_be_focused()
    await expect(page.locator("#panel-people")).to_be_visible()
    await page.keyboard.press("ArrowLeft")
    await expect(page.locator("#panel-chats")).to_be_visible()

    # Tab to the conversation (the focus is visible), Enter opens it, the box takes the focus.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="New group")).to_be_focused()
    await page.keyboard.press("Tab")
    row = conversation_row(page, "bob")
    await expect(row).to_be_focused()
    ring = await row.evaluate("el => getComputedStyle(el).boxShadow")
    assert ring != "none", ring
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    await page.keyboard.type("pong")
    await page.keyboard.press("Enter")
    await expect_sent(page, "pong")

    # A dialog opens and closes from the keyboard, and gives the focus back.
    await page.get_by_role("button", name="New group").focus()
    await page.keyboard.press("Enter")
    await expect(
        page.get_by_role("dialog", name="New group").get_by_label("Group name")
    ).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog", name="New group")).to_be_hidden()
    await expect(page.get_by_role("button", name="New group")).to_be_focused()
    # The skip link leads to the message box.
    await page.locator(".skip-link").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Message", exact=True)).to_be_focused()
    await expect(page.locator("#chat-title")).to_have_text("bob")
    assert alice.errors == []
    await close_all(alice)
