"""Replies and mentions in a real Chromium: Reply from the message menu with the reply bar
(Escape cancels it), the reply seen live by the other person with its quote, the quote that
jumps to the original and highlights it (loaded with around_seq when it was not), a deleted
original shown as "deleted message", and the mention autocomplete in a group."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import (
    bob_sends,
    bubble,
    close_all,
    dm_pair,
    expect_sent,
    launch,
    live_person,
    open_conversation,
    send,
    token_of,
    wait_live,
)
from tests.conftest import RunningServer
from tests.test_browser_a11y import AXE, Audit


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_a_reply_is_seen_live_and_its_quote_jumps_to_the_original(
    browser: Browser, server: RunningServer
) -> None:
    alice, bob, api, cid = await dm_pair(browser, server)  # bob wrote "first"
    page = alice.page

    # Reply from the menu of bob's message; Escape cancels, a second Reply sticks.
    first = bubble(page, "first")
    await first.hover()
    await first.get_by_role("button", name="Message actions").click()
    await page.get_by_role("menuitem", name="Reply").click()
    bar = page.locator("#reply-bar")
    await expect(bar).to_contain_text("Replying to bob")
    box = page.get_by_label("Message", exact=True)
    await expect(box).to_be_focused()
    await box.press("Escape")
    await expect(bar).to_be_hidden()
    await first.hover()
    await first.get_by_role("button", name="Message actions").click()
    await page.get_by_role("menuitem", name="Reply").click()
    await send(alice, "an answer")
    await expect_sent(page, "an answer")
    await expect(bar).to_be_hidden()
    mine = bubble(page, "an answer")
    await expect(mine.locator(".reply-quote")).to_contain_text("first")
    seen = bubble(bob.page, "an answer")  # live, on the other side, with the quote
    await expect(seen.locator(".reply-quote")).to_contain_text("first")

    # The quote jumps to the original (loaded) and highlights it.
    await seen.locator(".reply-quote").click()
    await expect(bubble(bob.page, "first")).to_have_class(re.compile(r"\bhighlighted\b"))

    # An original far back, not loaded: the quote loads its page (around_seq) and shows it.
    original = await api.post(
        f"/api/conversations/{cid}/messages", {"body": "way back", "client_msg_id": "old"}
    )
    await bob_sends(api, cid, *[f"filler {i}" for i in range(80)])
    await api.post(
        f"/api/conversations/{cid}/messages",
        {"body": "remember?", "client_msg_id": "r", "reply_to": original.body["message"]["id"]},
    )
    await alice.page.reload()
    await wait_live(alice)
    await open_conversation(alice, "bob")
    latest = bubble(page, "remember?")
    await expect(latest.locator(".reply-quote")).to_contain_text("way back")
    await expect(bubble(page, "way back")).to_have_count(0)  # not in the newest page
    await latest.locator(".reply-quote").click()
    back = bubble(page, "way back")
    await expect(back).to_have_class(re.compile(r"\bhighlighted\b"))
    await expect(back).to_be_in_viewport()

    # The original deleted: the quotes say so, live.
    await api.delete(f"/api/conversations/{cid}/messages/{original.body['message']['id']}")
    await expect(latest.locator(".reply-quote")).to_have_text("deleted message")
    assert alice.errors == [] and bob.errors == []
    api.close()
    await close_all(alice, bob)


async def test_mention_autocomplete_inserts_a_member_and_mentions_of_me_stand_out(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    await alice.context.add_init_script(path=str(AXE))  # the open list and bar are audited
    await alice.page.reload()
    await wait_live(alice)
    me = await server.client(await token_of(alice.page)).get("/api/me")
    others = []
    for name in ("carol", "caroline", "dave"):
        api = server.client()
        await api.register(name)
        others.append(api)
    carol, _, dave = others
    ids = [(await a.get("/api/me")).body["user"]["id"] for a in others]
    group = await carol.post(
        "/api/groups", {"name": "team", "member_ids": [me.body["user"]["id"], *ids[1:]]}
    )
    assert group.status == 201, group.body
    gid = group.body["conversation"]["id"]
    await open_conversation(alice, "team")
    page = alice.page
    box = page.get_by_label("Message", exact=True)
    await box.fill("")
    await box.press_sequentially("hi @car")
    listbox = page.get_by_role("listbox", name="Members to mention")
    await expect(listbox.get_by_role("option")).to_have_text(["@carol", "@caroline"])
    await expect(box).to_have_attribute("aria-activedescendant", "mention-option-0")
    audit = Audit(page)
    await audit.check("mention list")
    await box.press("ArrowDown")
    await expect(listbox.get_by_role("option", name="@caroline")).to_have_attribute(
        "aria-selected", "true"
    )
    await box.press("Escape")  # closes the list, sends nothing
    await expect(listbox).to_be_hidden()
    await box.press("Backspace")
    await expect(listbox.get_by_role("option")).to_have_count(2)
    await box.press("Enter")  # inserts the active one (carol), does not send
    await expect(box).to_have_value("hi @carol ")
    await box.press_sequentially("and @da")
    await box.press("Tab")
    await expect(box).to_have_value("hi @carol and @dave ")
    await box.press("Enter")
    await expect_sent(page, "hi @carol and @dave")
    history = await carol.get(f"/api/conversations/{gid}/messages")
    assert history.body["messages"][-1]["mentions"] == [ids[0], ids[2]]

    # A message that mentions me stands out; one that does not, does not.
    await bob_sends(dave, gid, "@alice have a look", "nothing for you")
    await expect(bubble(page, "@alice have a look")).to_have_class(re.compile(r"\bmentions-me\b"))
    await expect(bubble(page, "nothing for you")).not_to_have_class(re.compile("mentions-me"))
    mentioning = bubble(page, "@alice have a look")
    await mentioning.hover()
    await mentioning.get_by_role("button", name="Message actions").click()
    await page.get_by_role("menuitem", name="Reply").click()
    await expect(page.locator("#reply-bar")).to_contain_text("Replying to dave")
    await audit.check("reply bar")
    audit.assert_clean()
    assert alice.errors == []
    for api in others:
        api.close()
    await close_all(alice)
