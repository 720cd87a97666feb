"""Invitations in a real Chromium: one sent from the composer's dialog shows as a card in both
browsers, accepted in one it changes in the other live; a hidden tab shows a desktop
notification for a new invitation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import (
    close_all,
    dm_pair,
    launch,
    new_person,
    sign_up,
    token_of,
    wait_live,
)
from tests.conftest import RunningServer
from tests.test_browser_a11y import AXE, Audit
from tests.test_browser_settings import RECORDER, expect_notes, stranger


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_an_invitation_accepted_in_one_browser_changes_in_the_other(
    browser: Browser, server: RunningServer
) -> None:
    alice, bob, _, _ = await dm_pair(browser, server)
    await alice.page.get_by_role("button", name="Invite to a game").click()
    dialog = alice.page.get_by_role("dialog", name="Invite to a game")
    await dialog.get_by_label("Game").fill("chess")
    await dialog.get_by_role("button", name="Send invitation").click()
    mine = alice.page.locator(".invitation-card")
    theirs = bob.page.locator(".invitation-card")
    await expect(mine).to_contain_text("You invited bob to chess")
    await expect(mine).to_contain_text("left")
    await expect(mine.get_by_role("button", name="Cancel the invitation to chess")).to_be_visible()
    await expect(theirs).to_contain_text("alice invited you to chess")
    # axe finds nothing serious on the cards, nor on the dialog (light and dark).
    audit = Audit(bob.page)
    await bob.page.evaluate(AXE.read_text())  # evaluate is not held to the page's CSP
    await audit.check("a pending invitation")
    await bob.page.get_by_role("button", name="Invite to a game").click()
    await audit.check("the invitation dialog")
    await (
        bob.page.get_by_role("dialog", name="Invite to a game")
        .get_by_role("button", name="Cancel")
        .click()
    )
    await theirs.get_by_role("button", name="Accept the invitation to chess").click()
    await expect(theirs).to_have_attribute("data-status", "accepted")
    await expect(mine).to_have_attribute("data-status", "accepted")
    await expect(mine).to_contain_text("Accepted")
    await expect(mine.get_by_role("button")).to_have_count(0)
    await close_all(alice, bob)


async def test_a_hidden_tab_notifies_a_new_invitation(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    await alice.context.grant_permissions(["notifications"], origin=server.base_url)
    await alice.context.add_init_script(RECORDER)
    page = alice.page
    await page.reload()
    await sign_up(page, "alice")
    await wait_live(alice)
    alice_id = (await server.client(await token_of(page)).get("/api/me")).body["user"]["id"]
    await page.evaluate("__setHidden(true)")
    bob, dm = await stranger(server, "bob", alice_id)
    reply = await bob.post(f"/api/conversations/{dm}/invitations", {"game": "chess"})
    assert reply.status == 201, reply.body
    [note] = await expect_notes(page, 1)
    assert note["title"] == "bob invited you" and note["tag"] == dm
    await close_all(alice)
