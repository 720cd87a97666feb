"""Editing and deleting a message in a real Chromium, seen live by the other person: the
actions menu by keyboard and by pointer, Enter saves and Escape cancels an edit, the "edited"
marker, a confirmed delete and its tombstone."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import (
    bubble,
    close_all,
    conversation_row,
    dm_pair,
    expect_sent,
    launch,
    send,
)
from tests.conftest import RunningServer

TOMBSTONE = "This message was deleted"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_edit_and_delete_are_seen_live_by_the_other_person(
    browser: Browser, server: RunningServer
) -> None:
    alice, bob, _, _ = await dm_pair(browser, server)  # bob wrote "first"
    page = bob.page
    await send(bob, "teh typo")
    await expect_sent(page, "teh typo")
    await expect(bubble(alice.page, "teh typo")).to_be_visible()
    # My own stored messages have the menu (with Edit and Delete).
    await expect(
        bubble(page, "first").get_by_role("button", name="Message actions")
    ).to_be_visible()

    # By keyboard: focus the message, Tab to its actions, Enter opens the menu on Edit.
    mine = bubble(page, "teh typo")
    await mine.focus()
    await page.keyboard.press("Tab")
    await expect(mine.get_by_role("button", name="Message actions")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("menuitem", name="Edit")).to_be_focused()
    await page.keyboard.press("Enter")
    editor = page.get_by_label("Edit message")
    await expect(editor).to_be_focused()
    await editor.fill("discarded")
    await editor.press("Escape")  # cancels: nothing changes, anywhere
    await expect(editor).to_have_count(0)
    await expect(bubble(page, "teh typo")).to_be_visible()

    # By pointer: hover, the menu, Edit; Enter saves.
    await mine.hover()
    await mine.get_by_role("button", name="Message actions").click()
    await page.get_by_role("menuitem", name="Edit").click()
    await editor.fill("the typo, fixed")
    await editor.press("Enter")
    fixed = bubble(page, "the typo, fixed")
    await expect(fixed.locator(".edited")).to_have_text("edited")
    seen = bubble(alice.page, "the typo, fixed")
    await expect(seen.locator(".edited")).to_have_text("edited")
    await expect(bubble(alice.page, "teh typo")).to_have_count(0)
    # The others' messages offer Reply, React, Copy and Report.
    await seen.hover()
    await seen.get_by_role("button", name="Message actions").click()
    await expect(alice.page.get_by_role("menuitem")).to_have_text(
        ["Reply", "React", "Copy", "Report"]
    )
    await alice.page.keyboard.press("Escape")
    await expect(alice.page.get_by_role("menuitem")).to_have_count(0)

    # Delete asks first; the tombstone replaces the message on both sides, live.
    await fixed.hover()
    await fixed.get_by_role("button", name="Message actions").click()
    await page.get_by_role("menuitem", name="Delete").click()
    dialog = page.locator("#confirm-dialog")
    await expect(dialog).to_contain_text("Delete this message?")
    await dialog.get_by_role("button", name="Delete").click()
    for viewer in (page, alice.page):
        await expect(viewer.locator("#message-list li.msg .tombstone")).to_have_text(TOMBSTONE)
        await expect(bubble(viewer, "the typo, fixed")).to_have_count(0)
    row = conversation_row(alice.page, "bob")
    await expect(row.locator(".preview")).to_have_text(re.compile("Message deleted"))
    await expect(
        page.locator("#message-list li.msg .tombstone").get_by_role("button")
    ).to_have_count(0)
    assert alice.errors == [] and bob.errors == [] and bob.dialogs == []
    await close_all(alice, bob)


async def test_an_open_menu_keeps_its_focus_while_an_earlier_message_redraws(
    browser: Browser, server: RunningServer
) -> None:
    """A reaction on an earlier message redraws that message: the menu open below it, and the
    item focused in it, stay as they were (the redraw had moved the later nodes, and moving a
    node drops the focus inside it)."""
    alice, bob, api, conversation_id = await dm_pair(browser, server)  # bob wrote "first"
    page = bob.page
    await send(bob, "second")
    await expect_sent(page, "second")
    first = (await api.get(f"/api/conversations/{conversation_id}/messages")).body["messages"][0]
    assert first["body"] == "first"

    mine = bubble(page, "second")
    await mine.focus()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    edit = page.get_by_role("menuitem", name="Edit")
    await expect(edit).to_be_focused()
    # bob reacts to "first" from his other device: the view redraws it, above the open menu.
    reacted = await api.request(
        "PUT", f"/api/conversations/{conversation_id}/messages/{first['id']}/reactions/%F0%9F%91%8D"
    )
    assert reacted.status == 200, reacted.body
    await expect(bubble(page, "first").locator(".reaction")).to_have_count(1)
    await expect(edit).to_be_focused()
    await page.keyboard.press("ArrowDown")  # the menu still answers the keys
    await expect(page.get_by_role("menuitem", name="Reply")).to_be_focused()
    assert alice.errors == [] and bob.errors == []
    await close_all(alice, bob)


async def test_typing_into_the_editor_before_its_first_frame_replaces_the_text(
    browser: Browser, server: RunningServer
) -> None:
    """The editor put its caret at the end one frame after it opened, even when the user (or
    Playwright's fill) had already focused it and selected the text: what was then typed went
    after the old text (a CI run saved "teh typothe typo, fixed")."""
    alice, bob, _, _ = await dm_pair(browser, server)  # bob wrote "first"
    page = bob.page
    mine = bubble(page, "first")
    await mine.hover()
    await mine.get_by_role("button", name="Message actions").click()
    # Open the editor, focus it and select its text in the same task, then let two frames
    # pass before typing: the steps of a fill, with the editor's first frame in between.
    body = await page.evaluate(
        """async () => {
            const items = [...document.querySelectorAll('[role=menuitem]')];
            items.find((b) => b.textContent === 'Edit').click();
            const input = document.querySelector('textarea.msg-editor');
            input.focus();
            input.select();
            for (let i = 0; i < 2; i += 1) await new Promise((r) => requestAnimationFrame(r));
            document.execCommand('insertText', false, 'replaced');
            return input.value;
        }"""
    )
    assert body == "replaced"
    await page.get_by_label("Edit message").press("Enter")
    await expect(bubble(alice.page, "replaced")).to_be_visible()
    assert alice.errors == [] and bob.errors == []
    await close_all(alice, bob)
