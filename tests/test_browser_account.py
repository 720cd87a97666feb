"""The Account dialog in a real Chromium: change the password (a wrong one keeps the session;
the other session is signed out), the sessions list with a revoke button each, and deleting
the account, after which its messages show from "Deleted user"."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.browser_helpers import (
    PASSWORD,
    bubble,
    close_all,
    conversation_row,
    dm_from_api,
    launch,
    live_person,
    send,
    sign_in,
    token_of,
)
from tests.conftest import RunningServer

NEW_PASSWORD = "a brand new passphrase"


async def open_account(page: Page) -> None:
    await page.get_by_role("button", name="Settings").click()
    await page.get_by_role("button", name="Account and sessions…").click()
    await expect(page.get_by_role("dialog", name="Account")).to_be_visible()


async def test_account_dialog_password_sessions_and_deletion(server: RunningServer) -> None:
    async with launch() as browser:
        alice = await live_person(browser, server, "alice")
        page = alice.page
        api = server.client()
        other = await api.post(
            "/api/auth/login",
            {"login": "alice", "password": PASSWORD},
            headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/130.0"},
        )
        other_token = other.body["token"]

        # Both sessions listed, this one marked; the other can be revoked.
        await open_account(page)
        rows = page.locator("#session-list li")
        await expect(rows).to_have_count(2)
        await expect(page.locator('#session-list li[data-current="true"]')).to_contain_text(
            "This session"
        )
        other_row = page.locator('#session-list li[data-current="false"]')
        await expect(other_row).to_contain_text("Firefox on Windows")
        await expect(other_row.get_by_role("button", name="Revoke")).to_be_visible()

        # A wrong current password: said at the field, and the session stays signed in.
        dialog = page.get_by_role("dialog", name="Account")
        await dialog.get_by_label("Current password").fill("not my password")
        await dialog.get_by_label("New password").fill(NEW_PASSWORD)
        await dialog.get_by_role("button", name="Change password").click()
        await expect(page.locator("#password-current-error")).to_have_text(
            "That is not your password."
        )
        await expect(page.locator("#main-view")).to_be_visible()
        # Too short: refused before it is sent.
        await dialog.get_by_label("Current password").fill(PASSWORD)
        await dialog.get_by_label("New password").fill("short")
        await dialog.get_by_role("button", name="Change password").click()
        await expect(page.locator("#password-new-error")).to_contain_text("at least 8")
        # The right one: the other session is signed out, this one goes on.
        await dialog.get_by_label("New password").fill(NEW_PASSWORD)
        await dialog.get_by_role("button", name="Change password").click()
        await expect(page.locator("#toasts")).to_contain_text("1 other session was signed out")
        await expect(rows).to_have_count(1)
        assert (await api.get("/api/me", token=other_token)).status == 401
        assert (await api.get("/api/me", token=await token_of(page))).status == 200

        # A new session elsewhere, revoked from the list.
        third = await api.post("/api/auth/login", {"login": "alice", "password": NEW_PASSWORD})
        await dialog.get_by_role("button", name="Close").click()
        await open_account(page)
        await expect(rows).to_have_count(2)
        await other_row.get_by_role("button", name="Revoke").click()
        await expect(rows).to_have_count(1)
        assert (await api.get("/api/me", token=third.body["token"])).status == 401
        await dialog.get_by_role("button", name="Close").click()

        # Bob writes to alice, she answers; then she deletes her account.
        bob, _ = await dm_from_api(server, alice, "bob")
        await send(alice, "bye bob")
        await expect(bubble(page, "bye bob")).to_have_attribute("data-state", "sent")
        await open_account(page)
        await dialog.get_by_label("Password", exact=True).fill("wrong password")
        await dialog.get_by_role("button", name="Delete my account").click()
        await page.get_by_role("button", name="Delete account").click()  # confirm
        await expect(page.locator("#delete-password-error")).to_have_text(
            "That is not your password."
        )
        await dialog.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
        await dialog.get_by_role("button", name="Delete my account").click()
        await page.get_by_role("button", name="Delete account").click()
        await expect(page.locator("#auth-view")).to_be_visible()
        await expect(page.locator("#toasts")).to_contain_text("Your account was deleted.")

        # Bob, signed in on the same page: the conversation and its messages are there, from
        # a deleted user.
        await sign_in(page, "bob", "correct horse")
        await expect(page.locator("#me-name")).to_have_text("bob")
        await conversation_row(page, "Deleted user").click()
        await expect(page.locator("#chat-title")).to_have_text("Deleted user")
        await expect(bubble(page, "bye bob")).to_be_visible()
        await expect(page.locator("#chat-subtitle")).to_have_text("account deleted")
        await expect(page.locator("#composer-notice")).to_contain_text("This account was deleted")
        await expect(page.locator("#composer")).to_be_hidden()
        assert alice.errors == []
        bob.close()
        api.close()
        await close_all(alice)
