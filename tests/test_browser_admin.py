"""The Admin view in a real Chromium: shown to moderators and administrators only; a member
reports a message from its menu (a reason dialog), the report waits in the queue with the
message and its context; the admin suspends a user, whose other browser is signed out at once
and, signing in again, is told why and until when; the audit log lists every act. axe finds
no serious violation in the dialogs."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser_helpers import (
    bob_sends,
    close_all,
    dm_from_api,
    launch,
    live_person,
    new_person,
    open_conversation,
    sign_in,
    token_of,
    wait_live,
)
from tests.conftest import RunningServer
from tests.test_browser_a11y import AXE, Audit


async def test_the_admin_view_suspends_a_user_signed_out_at_once(server: RunningServer) -> None:
    async with launch() as browser:
        boss = await live_person(browser, server, "boss")
        page = boss.page
        await expect(page.get_by_role("button", name="Admin")).to_be_hidden()
        me = await server.client(await token_of(page)).get("/api/me")
        await server.service.set_site_role("cli", me.body["user"]["id"], "admin")
        await boss.context.add_init_script(path=str(AXE))
        await page.reload()
        await wait_live(boss)
        await expect(page.get_by_role("button", name="Admin")).to_be_visible()
        audit = Audit(page)

        # bob, in his own browser, reports a message carol sent him.
        bob = await live_person(browser, server, "bob")
        await expect(bob.page.get_by_role("button", name="Admin")).to_be_hidden()
        carol, cid = await dm_from_api(server, bob, "carol")
        await bob_sends(carol, cid, "buy cheap pills")
        await open_conversation(bob, "carol")
        spam = bob.page.locator("#message-list li.msg", has_text="buy cheap pills")
        await spam.hover()
        await spam.get_by_role("button", name="Message actions").click()
        await bob.page.get_by_role("menuitem", name="Report").click()
        report = bob.page.get_by_role("dialog", name="Report this message")
        await expect(report).to_be_visible()
        await report.get_by_label("Reason").fill("spam")
        await report.get_by_role("button", name="Report").click()
        await expect(report).to_be_hidden()
        await expect(bob.page.locator("#toasts")).to_contain_text("moderators will look")

        # The queue shows it with the message and its context; the admin dismisses it.
        await page.get_by_role("button", name="Admin").click()
        admin = page.get_by_role("dialog", name="Admin")
        await expect(admin).to_be_visible()
        await audit.check("admin users")
        await admin.get_by_role("tab", name="Reports").click()
        queued = admin.locator(".admin-report")
        await expect(queued).to_have_count(1)
        await expect(queued.locator(".admin-evidence")).to_have_text("buy cheap pills")
        await expect(queued.locator(".admin-context li")).to_contain_text(["first", "buy cheap"])
        await audit.check("admin reports")
        await queued.get_by_role("button", name="Dismiss").click()
        await expect(admin.get_by_text("No open reports.")).to_be_visible()

        # Suspend bob for a day: his browser is signed out at once and says why.
        await admin.get_by_role("tab", name="Users").click()
        await admin.get_by_label("Search users by name").fill("bob")
        await expect(admin.locator(".admin-user")).to_have_count(1)
        await admin.get_by_role("button", name="Suspend bob").click()
        suspend = page.get_by_role("dialog", name="Suspend bob")
        await expect(suspend).to_be_visible()
        await audit.check("suspend dialog")
        await suspend.get_by_label("Reason (the user is told)").fill("flooding the chat")
        await suspend.get_by_label("For").select_option(label="1 day")
        await suspend.get_by_role("button", name="Suspend").click()
        await expect(bob.page.locator("#auth-view")).to_be_visible()
        await expect(bob.page.locator("#toasts")).to_contain_text("suspended")
        await expect(admin.locator(".admin-user")).to_contain_text("flooding the chat")
        await sign_in(bob.page, "bob")
        refused = bob.page.locator("#signin-form-error")
        await expect(refused).to_contain_text("Your account is suspended until")
        await expect(refused).to_contain_text("Reason: flooding the chat")

        # Lifted: bob signs in again; the audit log has every act.
        await admin.get_by_role("button", name="Unsuspend bob").click()
        await expect(admin.get_by_role("button", name="Suspend bob")).to_be_visible()
        await bob.page.get_by_role("button", name="Sign in", exact=True).click()
        await wait_live(bob)
        await admin.get_by_role("tab", name="Audit log").click()
        entries = admin.locator(".admin-entry")
        await expect(entries).to_have_count(4)
        await expect(entries.nth(0)).to_contain_text("Suspension lifted: bob, by boss")
        await expect(entries.nth(1)).to_contain_text("Suspended (flooding the chat)")
        await expect(entries.nth(2)).to_contain_text("Report resolved")
        await expect(entries.nth(3)).to_contain_text("Role given (admin): boss, by the command")
        await audit.check("audit log")
        audit.assert_clean()
        assert not boss.errors and not bob.errors, boss.errors + bob.errors
        carol.close()
        await close_all(boss, bob)


async def test_a_plain_user_sees_no_admin_button(server: RunningServer) -> None:
    async with launch() as browser:
        plain = await new_person(browser, server, "plain")
        await expect(plain.page.get_by_role("button", name="Admin")).to_be_hidden()
        await close_all(plain)
