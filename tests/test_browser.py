"""The browser client in a real Chromium: sign-up and sign-in, the page's security headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, expect

from tests.browser_helpers import (
    PASSWORD,
    close_all,
    code_of,
    launch,
    new_person,
    sign_in,
    sign_up,
    wait_live,
)
from tests.conftest import RunningServer


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_page_is_served_with_a_strict_policy_and_versioned_static_files(
    server: RunningServer,
) -> None:
    response = await server.client().get("/")
    assert response.status == 200
    policy = response.headers["Content-Security-Policy"]
    script_src = next(p for p in policy.split(";") if p.strip().startswith("script-src"))
    # Scripts from our origin only: no inline code, no eval; the one hash is the import map's.
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert re.fullmatch(r" script-src 'self' 'sha256-[A-Za-z0-9+/=]+'", script_src), script_src
    html = response.body
    assert re.search(r'<script type="module" src="/static/js/app\.js\?v=\w+">', html)
    assert re.search(r'href="/static/css/app\.css\?v=\w+"', html)
    # Every module imported by a relative path is mapped to its versioned URL.
    assert '"/static/js/api.js":"/static/js/api.js?v=' in html
    app_url = re.search(r"/static/js/app\.js\?v=\w+", html)
    assert app_url is not None
    static = await server.client().get(app_url.group(0))
    assert static.status == 200
    assert "max-age" in static.headers.get("Cache-Control", "")


async def test_sign_up_validates_like_the_server_and_keeps_the_session(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    page = alice.page
    await page.get_by_role("tab", name="Create account").click()

    # Client-side checks: messages next to each field, nothing sent.
    await page.get_by_label("Username", exact=True).fill("al")
    await page.get_by_label("Email", exact=True).fill("not-an-email")
    await page.locator("#signup-password").fill("short")
    await page.get_by_role("button", name="Create account", exact=True).click()
    await expect(page.locator("#signup-username-error")).to_have_text(
        "Username must be at least 3 characters."
    )
    await expect(page.locator("#signup-email-error")).to_have_text("Email address is not valid.")
    await expect(page.locator("#signup-password-error")).to_have_text(
        "Password must be at least 8 bytes."
    )
    await expect(page.get_by_label("Username", exact=True)).to_be_focused()
    await page.get_by_label("Username", exact=True).fill("bad name!")
    await expect(page.locator("#signup-username-error")).to_have_text(
        "Username may contain only letters, digits, '_', '.' and '-'."
    )
    # 72 bytes is bcrypt's limit: 25 three-byte characters are 75 bytes.
    await page.locator("#signup-password").fill("€" * 25)
    await expect(page.locator("#signup-password-error")).to_contain_text("at most 72 bytes")

    # A server-side error (the name is taken) shows in the same place.
    await server.client().register("Taken")
    await page.get_by_label("Username", exact=True).fill("taken")
    await page.get_by_label("Email", exact=True).fill("alice@example.com")
    await page.locator("#signup-password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account", exact=True).click()
    await expect(page.locator("#signup-username-error")).to_have_text("That username is taken.")

    await page.get_by_label("Username", exact=True).fill("alice")
    await page.get_by_role("button", name="Create account", exact=True).click()
    await expect(page.locator("#me-name")).to_have_text("alice")
    code = await code_of(alice)
    await wait_live(alice)

    # The session survives a reload.
    await page.reload()
    await expect(page.locator("#me-name")).to_have_text("alice")
    assert await code_of(alice) == code

    # Logout: back to the form, and a reload stays signed out.
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    assert await page.evaluate("localStorage.getItem('chat.token')") is None

    # Sign-in: the server's one error for a wrong password, then success by email.
    await sign_in(page, "alice", "wrong password")
    await expect(page.locator("#signin-form-error")).to_have_text(
        "Wrong username/email or password."
    )
    await sign_in(page, "alice@example.com")
    await expect(page.locator("#me-name")).to_have_text("alice")
    assert alice.errors == []
    await close_all(alice)


async def test_a_revoked_session_signs_the_page_out(
    browser: Browser, server: RunningServer
) -> None:
    bob = await new_person(browser, server, "bob", sign_up_now=False)
    await sign_up(bob.page, "bob")
    await wait_live(bob)
    token = await bob.page.evaluate("localStorage.getItem('chat.token')")
    # Signing out elsewhere with the same token ends this page's session at once.
    assert (await server.client(token).post("/api/auth/logout")).status == 200
    await expect(bob.page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    # One toast says why (not one per request that failed on the way out).
    await expect(bob.page.locator(".toast .toast-text")).to_have_text(
        ["Your session has ended. Please sign in again."]
    )
    assert bob.errors == []
    await close_all(bob)


async def test_modules_load_versioned_and_dates_read_like_a_person_would(
    browser: Browser, server: RunningServer
) -> None:
    page = await browser.new_page(locale="en-US")
    scripts: list[str] = []
    page.on("request", lambda r: r.resource_type == "script" and scripts.append(r.url))
    await page.goto(server.base_url + "/")
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    labels = await page.evaluate(
        """async () => {
        const f = await import('/static/js/format.js');
        const now = new Date(2026, 10, 20, 15, 0);
        const at = (d, h = 12) => new Date(2026, 10, d, h, 0);
        return [
          f.dayLabel(at(20), now), f.dayLabel(at(19), now), f.dayLabel(at(1), now),
          f.dayLabel(new Date(2024, 0, 5), now),
          f.dayKey(at(20, 0)) === f.dayKey(at(20, 23)), f.dayKey(at(20)) === f.dayKey(at(19)),
          f.presenceText('online', null, now), f.presenceText('offline', null, now),
          f.presenceText('offline', new Date(now - 5 * 60000).toISOString(), now),
          f.presenceText('offline', at(19, 9).toISOString(), now).startsWith('last seen yesterday'),
        ];
      }"""
    )
    assert labels[:2] == ["Today", "Yesterday"]
    assert "November" in labels[2] and "2024" in labels[3]
    assert labels[4:6] == [True, False]
    assert labels[6:9] == ["online", "offline", "last seen 5 min ago"]
    assert labels[9] is True
    # Every module, the entry's imports and a dynamic import too, came by its versioned URL.
    names = {url.split("/static/js/")[1].split("?")[0] for url in scripts}
    assert {"app.js", "api.js", "realtime.js", "views/chat.js", "format.js"} <= names
    assert all(re.search(r"\.js\?v=\w+$", url) for url in scripts), scripts
    await page.close()
