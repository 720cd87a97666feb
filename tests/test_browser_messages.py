"""The message view in a real Chromium: links and formatting built as nodes (never HTML), the
emoji picker, groups of one sender's messages, the unread divider, the "New messages" pill,
system lines of groups, delivery states, and a phone's keyboard and zoom."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.browser_helpers import (
    PHONE,
    bubble,
    close_all,
    conversation_row,
    dm_from_api,
    expect_sent,
    launch,
    live_person,
    messages,
    new_person,
    open_conversation,
    send,
    token_of,
)
from tests.client import ApiClient
from tests.conftest import RunningServer

ALLOWED_TAGS = {"A", "CODE", "EM", "PRE", "STRONG"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def user_id(server: RunningServer, page: Page) -> str:
    me = await server.client(await token_of(page)).get("/api/me")
    return str(me.body["user"]["id"])


async def post(api: ApiClient, conversation_id: str, body: str, key: str) -> dict[str, Any]:
    reply = await api.post(
        f"/api/conversations/{conversation_id}/messages", {"body": body, "client_msg_id": key}
    )
    assert reply.status == 201, reply.body
    return dict(reply.body["message"])


def by_seq(page: Page, seq: int) -> Any:
    return page.locator(f"#message-list li.msg[data-seq='{seq}']")


async def test_links_and_formatting_are_nodes_never_html(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    bob, conv = await dm_from_api(server, alice, "bob")
    page = alice.page
    rich = await post(
        bob,
        conv,
        "see https://example.com/a_(b)_c. and *bold* _it_ `x<y>` mailto:bob@example.com"
        " *bold with http://example.org/x_y_z*",
        "rich",
    )
    block = await post(bob, conv, "```\n<b>not bold</b> *x*\n```", "block")
    hostile_body = (
        '<img src=x onerror=alert(1)> javascript:alert(1) [x](javascript:alert(2)) <a href="'
        'javascript:alert(3)">y</a> data:text/html,<script>alert(4)</script> vbscript:x'
        " file:///etc/passwd https://"
    )
    hostile = await post(bob, conv, hostile_body, "hostile")
    plain = await post(bob, conv, "snake_case_name, 2 * 3 * 4, **not** and __not__", "plain")

    rich_bubble = by_seq(page, rich["seq"]).locator(".bubble")
    await expect(rich_bubble).to_be_visible()
    links = rich_bubble.locator("a")
    await expect(links).to_have_count(3)
    await expect(links).to_have_text(
        ["https://example.com/a_(b)_c", "mailto:bob@example.com", "http://example.org/x_y_z"]
    )
    for i in range(3):
        await expect(links.nth(i)).to_have_attribute("rel", "noopener noreferrer")
        await expect(links.nth(i)).to_have_attribute("target", "_blank")
    await expect(links.first).to_have_attribute("href", "https://example.com/a_(b)_c")
    await expect(rich_bubble.locator("strong")).to_have_text(
        ["bold", "bold with http://example.org/x_y_z"]
    )
    await expect(rich_bubble.locator("strong").nth(1).locator("a")).to_have_count(1)
    await expect(rich_bubble.locator("em")).to_have_text("it")
    await expect(rich_bubble.locator("code")).to_have_text("x<y>")
    # The marks are gone, the sentence's dot stays outside the link.
    await expect(rich_bubble).to_contain_text("see https://example.com/a_(b)_c. and bold it x<y>")

    block_bubble = by_seq(page, block["seq"]).locator(".bubble")
    await expect(block_bubble.locator("pre > code")).to_have_text("<b>not bold</b> *x*")
    await expect(block_bubble.locator("b, strong")).to_have_count(0)

    # HTML and other schemes stay text, character for character.
    hostile_bubble = by_seq(page, hostile["seq"]).locator(".bubble")
    await expect(hostile_bubble).to_have_text(hostile_body)
    await expect(hostile_bubble.locator("*")).to_have_count(0)
    plain_bubble = by_seq(page, plain["seq"]).locator(".bubble")
    await expect(plain_bubble).to_have_text("snake_case_name, 2 * 3 * 4, **not** and __not__")
    await expect(plain_bubble.locator("*")).to_have_count(0)

    # No element but the allowed ones inside any bubble; every link http(s) or mailto.
    tags = await page.locator("#message-list .bubble *").evaluate_all(
        "els => els.map(e => e.tagName)"
    )
    assert set(tags) <= ALLOWED_TAGS, tags
    hrefs = await page.locator("#message-list a").evaluate_all("els => els.map(e => e.href)")
    assert hrefs and all(h.split(":")[0] in ("http", "https", "mailto") for h in hrefs), hrefs
    assert await page.locator("#message-list :is(img, script, iframe)").count() == 0
    # The preview in the list is text too.
    await expect(conversation_row(page, "bob").locator(".preview")).to_have_text(
        "snake_case_name, 2 * 3 * 4, **not** and __not__"
    )

    # The sender sees the same: formatting of her own message, as nodes.
    await send(alice, "I *agree*, see https://example.net")
    mine = page.locator("#message-list li.msg.mine").last
    await expect(mine).to_have_attribute("data-state", "sent")
    await expect(mine.locator(".bubble strong")).to_have_text("agree")
    await expect(mine.locator(".bubble a")).to_have_attribute("href", "https://example.net/")
    assert alice.dialogs == []  # alert() never ran
    assert alice.errors == []
    await close_all(alice)


async def test_emoji_picker_inserts_at_the_caret(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice")
    await dm_from_api(server, alice, "bob")
    page = alice.page
    box = page.get_by_label("Message", exact=True)
    await box.fill("Hello world")
    await box.evaluate("el => el.setSelectionRange(5, 5)")  # after "Hello"

    toggle = page.get_by_role("button", name="Insert emoji")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    await toggle.click()
    picker = page.get_by_role("dialog", name="Emoji")
    await expect(picker).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    search = picker.get_by_label("Search emoji")
    await expect(search).to_be_focused()
    # A few hundred, in groups.
    count = await picker.locator("button.emoji").count()
    assert 200 <= count <= 1000, count
    headings = await picker.locator("h3").all_text_contents()
    assert len(headings) >= 6 and "Smileys" in headings, headings

    # Searchable by name: every word a prefix of a word of the name.
    await search.fill("thumbs up")
    await expect(picker.locator("button.emoji:visible")).to_have_count(1)
    await expect(picker.get_by_role("button", name="thumbs up")).to_be_visible()
    await search.fill("nothing like this")
    await expect(picker.get_by_text("No emoji found.")).to_be_visible()
    await search.fill("thumbs up")
    await search.press("Enter")
    await expect(picker).to_be_hidden()
    await expect(box).to_have_value("Hello👍 world")
    await expect(box).to_be_focused()
    await page.keyboard.type("!")  # the caret is right after the emoji
    await expect(box).to_have_value("Hello👍! world")

    # With the keyboard alone: Tab to the button, arrows through the grid, Enter inserts, and
    # Escape closes with the focus back in the box.
    await box.evaluate("el => el.setSelectionRange(el.value.length, el.value.length)")
    await box.press("Shift+Tab")
    await expect(toggle).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(search).to_be_focused()
    await page.keyboard.press("ArrowDown")
    first = picker.locator("button.emoji").first
    await expect(first).to_be_focused()
    await page.keyboard.press("ArrowRight")
    second = picker.locator("button.emoji").nth(1)
    await expect(second).to_be_focused()
    await page.keyboard.press("ArrowDown")
    below = await page.evaluate("document.activeElement.getAttribute('aria-label')")
    await page.keyboard.press("ArrowUp")
    await expect(second).to_be_focused()
    emoji = await second.get_attribute("data-emoji")
    await page.keyboard.press("Enter")
    assert emoji and below
    await expect(box).to_have_value(f"Hello👍! world{emoji}")
    await toggle.click()
    await expect(search).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(picker).to_be_hidden()
    await expect(box).to_be_focused()

    await box.press("Enter")
    await expect_sent(page, f"Hello👍! world{emoji}")
    assert alice.errors == []
    await close_all(alice)


async def test_one_senders_messages_are_grouped(browser: Browser, server: RunningServer) -> None:
    alice = await live_person(browser, server, "alice")
    page = alice.page
    bob = server.client()
    await bob.register("bob")
    carol = server.client()
    await carol.register("carol")
    carol_id = (await carol.get("/api/me")).body["user"]["id"]
    members = [await user_id(server, page), carol_id]
    created = await bob.post("/api/groups", {"name": "Trio", "member_ids": members})
    assert created.status == 201, created.body
    conv = created.body["conversation"]["id"]
    await post(bob, conv, "bob one", "b1")
    await post(bob, conv, "bob two", "b2")
    await post(bob, conv, "bob three", "b3")
    await open_conversation(alice, "Trio")
    await send(alice, "alice one")
    await expect_sent(page, "alice one")
    await send(alice, "alice two")
    await expect_sent(page, "alice two")
    await post(carol, conv, "carol one", "c1")
    await post(bob, conv, "bob four", "b4")
    await expect(bubble(page, "bob four")).to_be_visible()

    starts = await messages(page).evaluate_all(
        "els => els.map(e => [e.querySelector('.bubble').textContent,"
        " e.classList.contains('group-start'), e.querySelector('.sender')?.textContent ?? null])"
    )
    assert starts == [
        ["bob one", True, "bob"],
        ["bob two", False, None],
        ["bob three", False, None],
        ["alice one", True, None],
        ["alice two", False, None],
        ["carol one", True, "carol"],
        ["bob four", True, "bob"],
    ], starts

    # The time shows once per group; for the others on hover or focus.
    await expect(bubble(page, "bob one").locator("time")).to_be_visible()
    later = bubble(page, "bob two")
    await expect(later.locator("time")).to_be_hidden()
    await later.hover()
    await expect(later.locator("time")).to_be_visible()
    await page.mouse.move(1, 1)
    await expect(later.locator("time")).to_be_hidden()
    title = await later.get_attribute("title")
    assert title and title.startswith("bob, "), title

    # Messages are focusable with one tab stop (the newest); arrows move between them.
    tab_stops = await messages(page).evaluate_all("els => els.filter(e => e.tabIndex === 0).length")
    assert tab_stops == 1
    await bubble(page, "bob four").focus()
    for _ in range(5):
        await page.keyboard.press("ArrowUp")
    await expect(later).to_be_focused()
    await expect(later.locator("time")).to_be_visible()
    await page.keyboard.press("End")
    await expect(bubble(page, "bob four")).to_be_focused()
    assert alice.errors == []
    await close_all(alice)


async def test_a_pause_of_five_minutes_starts_a_new_group(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    page = alice.page
    bob = server.client()
    await bob.register("bob")
    reply = await bob.post("/api/conversations/dm", {"user_id": await user_id(server, page)})
    conv = reply.body["conversation"]["id"]
    for key in ("p1", "p2", "p3", "p4"):
        await post(bob, conv, f"pause {key}", key)
    # Stored as if the first two had been sent 8 and 6 minutes earlier: 2 min, then 6 min apart.
    for key, minutes in (("p1", 8), ("p2", 6)):
        doc = await server.store.db["messages"].find_one({"client_msg_id": key})
        assert doc is not None
        moved = doc["created_at"] - datetime.timedelta(minutes=minutes)
        await server.store.db["messages"].update_one(
            {"_id": doc["_id"]}, {"$set": {"created_at": moved}}
        )
    await page.reload()  # the page read them live: now from the history
    await open_conversation(alice, "bob")
    await expect(messages(page)).to_have_count(4)
    starts = await messages(page).evaluate_all(
        "els => els.map(e => e.classList.contains('group-start'))"
    )
    assert starts == [True, False, True, False], starts
    assert alice.errors == []
    await close_all(alice)


async def test_unread_divider_before_the_first_unread(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    page = alice.page
    bob, bob_conv = await dm_from_api(server, alice, "bob")
    carol, _ = await dm_from_api(server, alice, "carol")  # opens carol's: bob's is left
    await post(bob, bob_conv, "while away 1", "w1")
    await post(bob, bob_conv, "while away 2", "w2")
    await expect(conversation_row(page, "bob").locator(".unread-badge")).to_have_text("2")

    await open_conversation(alice, "bob")
    divider = page.locator("#message-list .unread-divider")
    await expect(divider).to_have_count(1)
    await expect(divider).to_have_text("New messages")
    order = await page.locator("#message-list > li").evaluate_all(
        "els => els.map(e => e.classList.contains('unread-divider') ? '--' :"
        " e.querySelector('.bubble')?.textContent ?? e.textContent)"
    )
    assert order == ["Today", "first", "--", "while away 1", "while away 2"], order
    await expect(conversation_row(page, "bob").locator(".unread-badge")).to_have_count(0)
    # A message arriving now goes below it; the divider stays where it was.
    await post(bob, bob_conv, "live", "live")
    await expect(bubble(page, "live")).to_be_visible()
    await expect(divider).to_have_count(1)

    # Opened again with nothing unread: no divider.
    await open_conversation(alice, "carol")
    await open_conversation(alice, "bob")
    await expect(bubble(page, "live")).to_be_visible()
    await expect(divider).to_have_count(0)

    # After a reload the server's unread count places it.
    await open_conversation(alice, "carol")
    await post(bob, bob_conv, "after reload", "r1")
    await expect(conversation_row(page, "bob").locator(".unread-badge")).to_have_text("1")
    await page.reload()
    await open_conversation(alice, "bob")
    await expect(divider).to_have_count(1)
    after = await page.locator("#message-list .unread-divider + li .bubble").text_content()
    assert after == "after reload"
    assert carol and alice.errors == []
    await close_all(alice)


async def test_new_messages_pill(browser: Browser, server: RunningServer) -> None:
    alice = await live_person(browser, server, "alice")
    page = alice.page
    bob, conv = await dm_from_api(server, alice, "bob")
    for n in range(40):  # one after the other: "filler 39" is the newest
        await post(bob, conv, f"filler {n:02d}", f"f{n}")
    await expect(messages(page)).to_have_count(41)
    await expect(bubble(page, "filler 39")).to_be_in_viewport()
    pill = page.get_by_role("button", name="New messages")
    scroller = page.locator("#messages")

    # At the bottom a new message simply shows.
    await post(bob, conv, "at the bottom", "a1")
    await expect(bubble(page, "at the bottom")).to_be_in_viewport()
    await expect(pill).to_be_hidden()

    # Scrolled up: the pill says something came; clicking it goes to the bottom and it goes.
    await scroller.evaluate("el => { el.scrollTop = el.scrollHeight - el.clientHeight - 600 }")
    await expect(bubble(page, "at the bottom")).not_to_be_in_viewport()
    await post(bob, conv, "while up", "u1")
    await expect(pill).to_be_visible()
    await expect(bubble(page, "while up")).not_to_be_in_viewport()
    await pill.click()
    await expect(bubble(page, "while up")).to_be_in_viewport()
    await expect(pill).to_be_hidden()

    # Scrolling down by hand hides it too; my own message does not raise it.
    await scroller.evaluate("el => { el.scrollTop = el.scrollHeight - el.clientHeight - 600 }")
    await post(bob, conv, "again", "u2")
    await expect(pill).to_be_visible()
    await scroller.evaluate("el => { el.scrollTop = el.scrollHeight }")
    await expect(pill).to_be_hidden()
    await send(alice, "mine")
    await expect_sent(page, "mine")
    await expect(bubble(page, "mine")).to_be_in_viewport()
    await expect(pill).to_be_hidden()
    assert alice.errors == []
    await close_all(alice)


async def test_system_lines_from_group_events(browser: Browser, server: RunningServer) -> None:
    bob = await live_person(browser, server, "bob")
    page = bob.page
    alice = server.client()
    await alice.register("alice")
    carol = server.client()
    carol_id = (await carol.register("carol"))["user"]["id"]
    bob_id = await user_id(server, page)
    created = await alice.post("/api/groups", {"name": "Team", "member_ids": [bob_id]})
    conv = created.body["conversation"]["id"]
    await post(alice, conv, "hello team", "h1")
    await open_conversation(bob, "Team")
    await expect(bubble(page, "hello team")).to_be_visible()

    assert (await alice.patch(f"/api/groups/{conv}", {"name": "Crew"})).status == 200
    assert (await alice.post(f"/api/groups/{conv}/members", {"user_ids": [carol_id]})).status == 200
    await post(alice, conv, "welcome carol", "h2")
    role = await alice.patch(f"/api/groups/{conv}/members/{bob_id}", {"role": "admin"})
    assert role.status == 200
    assert (await carol.delete(f"/api/groups/{conv}/members/{carol_id}")).status == 200
    # Bob's own change, whose reply reaches his page before the event does.
    await page.get_by_role("button", name="Members").click()
    panel = page.get_by_role("dialog", name="Crew")
    await panel.get_by_label("Group name").fill("Crew 2")
    await panel.get_by_role("button", name="Rename").click()
    await expect(page.locator("#chat-title")).to_have_text("Crew 2")
    await panel.get_by_role("button", name="Close").click()

    lines = page.locator("#message-list li.system-line")
    await expect(lines).to_have_text(
        [
            "alice created the group",
            "alice renamed the group to “Crew”",
            "alice added carol",
            "alice made you an admin",
            "carol left",
            "You renamed the group to “Crew 2”",
        ]
    )
    order = await page.locator("#message-list > li:not(.day, .unread-divider)").evaluate_all(
        "els => els.map(e => e.querySelector('.bubble')?.textContent ?? e.textContent)"
    )
    assert order == [
        "alice created the group",
        "hello team",
        "alice renamed the group to “Crew”",
        "alice added carol",
        "welcome carol",
        "alice made you an admin",
        "carol left",
        "You renamed the group to “Crew 2”",
    ], order
    # They come from events, not from history: a reload does not bring them back.
    await page.reload()
    await expect(bubble(page, "welcome carol")).to_be_visible()
    await expect(lines).to_have_count(0)
    assert bob.errors == []
    await close_all(bob)


async def test_delivery_states(browser: Browser, server: RunningServer) -> None:
    alice = await live_person(browser, server, "alice")
    page = alice.page
    bob, dm = await dm_from_api(server, alice, "bob")

    # Sending (the request held), then sent, then read when bob's read pointer passes it.
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        if route.request.method == "POST":
            await release.wait()
        await route.fallback()

    url = f"**/api/conversations/{dm}/messages"
    await page.route(url, hold)
    await send(alice, "are you there")
    mine = bubble(page, "are you there")
    await expect(mine).to_have_attribute("data-delivery", "sending")
    await expect(mine.locator(".status")).to_have_text("Sending…")
    release.set()
    await expect(mine).to_have_attribute("data-delivery", "sent")
    await expect(mine.locator(".status")).to_have_text("Sent")
    await page.unroute(url)
    await send(alice, "hello?")
    await expect(bubble(page, "hello?")).to_have_attribute("data-delivery", "sent")
    # Only the newest says "Sent" in words; the older keeps its tick.
    await expect(mine.locator(".status")).to_have_count(0)
    await expect(mine.locator(".tick")).to_have_attribute("data-delivery", "sent")
    seq = int(await bubble(page, "are you there").get_attribute("data-seq") or 0)
    assert (await bob.post(f"/api/conversations/{dm}/read", {"seq": seq})).status == 200
    await expect(mine).to_have_attribute("data-delivery", "read")
    await expect(mine.locator(".receipt")).to_have_text("Read")
    await expect(bubble(page, "hello?")).to_have_attribute("data-delivery", "sent")
    await expect(bubble(page, "hello?").locator(".status")).to_have_text("Sent")

    # In a group: read by how many.
    carol = server.client()
    await carol.register("carol")
    bob_id = (await bob.get("/api/me")).body["user"]["id"]
    carol_id = (await carol.get("/api/me")).body["user"]["id"]
    alice_api = server.client(await token_of(page))
    group = await alice_api.post("/api/groups", {"name": "Three", "member_ids": [bob_id, carol_id]})
    gid = group.body["conversation"]["id"]
    await open_conversation(alice, "Three")
    await send(alice, "group hello")
    said = bubble(page, "group hello")
    await expect(said).to_have_attribute("data-delivery", "sent")
    await expect(said.locator(".status")).to_have_text("Sent")
    gseq = int(await said.get_attribute("data-seq") or 0)
    assert (await bob.post(f"/api/conversations/{gid}/read", {"seq": gseq})).status == 200
    await expect(said.locator(".receipt")).to_have_text("Read by 1")
    await expect(said).to_have_attribute("data-delivery", "read")
    assert (await carol.post(f"/api/conversations/{gid}/read", {"seq": gseq})).status == 200
    await expect(said.locator(".receipt")).to_have_text("Read by 2")
    assert alice.errors == []
    await close_all(alice)


async def test_phone_keyboard_zoom_and_members_dialog(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice", viewport=PHONE)
    page = alice.page
    bob, conv = await dm_from_api(server, alice, "bob")
    for n in range(30):  # one after the other: "line 29" is the newest
        await post(bob, conv, f"line {n:02d}", f"l{n}")
    newest = bubble(page, "line 29")
    await expect(newest).to_be_in_viewport()

    # The on-screen keyboard takes the lower half: the newest message stays in view.
    await page.get_by_label("Message", exact=True).focus()
    await page.set_viewport_size({"width": 360, "height": 400})
    await expect(newest).to_be_in_viewport()
    await page.set_viewport_size(PHONE)
    await expect(newest).to_be_in_viewport()
    # Scrolled up it is left where the reader is.
    scroller = page.locator("#messages")
    await scroller.evaluate("el => { el.scrollTop = 0 }")
    top = bubble(page, "first")
    await expect(top).to_be_in_viewport()
    await page.set_viewport_size({"width": 360, "height": 400})
    await expect(top).to_be_in_viewport()
    await expect(newest).not_to_be_in_viewport()
    await page.set_viewport_size(PHONE)

    # Fields at 16 px or more: focusing one does not zoom a phone's page.
    sizes = await page.locator("input:not([type=checkbox]), textarea, select").evaluate_all(
        "els => els.map(e => [e.id, parseFloat(getComputedStyle(e).fontSize)])"
    )
    small = [s for s in sizes if s[1] < 16]
    assert sizes and not small, small

    # The Members dialog opens without focusing a text field (no keyboard popping up).
    alice_api = server.client(await token_of(page))
    bob_id = (await bob.get("/api/me")).body["user"]["id"]
    group = await alice_api.post("/api/groups", {"name": "Pair", "member_ids": [bob_id]})
    assert group.status == 201
    await page.get_by_role("button", name="Back to conversations").click()
    await open_conversation(alice, "Pair")
    await page.get_by_role("button", name="Members").click()
    dialog = page.get_by_role("dialog", name="Pair")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("button", name="Close")).to_be_focused()
    focused = await page.evaluate("document.activeElement.tagName")
    assert focused not in ("INPUT", "TEXTAREA", "SELECT"), focused
    await dialog.get_by_role("button", name="Close").click()

    # The emoji picker fits the phone's screen.
    await page.get_by_role("button", name="Insert emoji").click()
    picker = page.get_by_role("dialog", name="Emoji")
    await expect(picker).to_be_visible()
    box = await picker.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360, box
    assert alice.errors == []
    await close_all(alice)
