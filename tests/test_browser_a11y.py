"""Accessibility in a real Chromium: axe-core finds no serious or critical violation on any
screen or dialog, in light and in dark mode; landmarks, focus after sign-in, presence in text.

axe-core comes from npm and serves the tests only: ./test.sh installs it into tests/.node/
(`npm install --prefix tests/.node axe-core@4`; gitignored, never served to users). It is
injected with an init script, which the page's Content-Security-Policy does not apply to.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.browser_helpers import (
    PHONE,
    bubble,
    close_all,
    conversation_row,
    expect_sent,
    launch,
    new_person,
    open_conversation,
    send,
    sign_in,
    sign_up,
    tab,
    token_of,
    wait_live,
)
from tests.client import ApiClient
from tests.conftest import RunningServer
from tests.test_browser_defects import start_server, stop_server

AXE = Path(__file__).resolve().parent / ".node" / "node_modules" / "axe-core" / "axe.min.js"

# The serious and critical violations of the page as it is now: [{id, impact, nodes}].
RUN_AXE = """
async () => {
  const result = await axe.run(document, { resultTypes: ['violations'] });
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({
      id: v.id,
      impact: v.impact,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


class Audit:
    """Runs axe on each screen in both colour schemes and keeps what it finds."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.found: list[str] = []
        self.scanned: list[str] = []

    async def check(self, where: str) -> None:
        for scheme in ("light", "dark"):
            await self.page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
            await self.page.wait_for_function(
                "s => matchMedia(`(prefers-color-scheme: ${s})`).matches", arg=scheme
            )
            violations: list[dict[str, Any]] = await self.page.evaluate(RUN_AXE)
            self.scanned.append(f"{where} ({scheme})")
            for v in violations:
                self.found.append(f"{where} ({scheme}): {v['id']} [{v['impact']}] {v['nodes']}")
        await self.page.emulate_media(color_scheme="light")

    def assert_clean(self) -> None:
        assert not self.found, "\n".join(self.found)


async def api_user(server: RunningServer, name: str) -> tuple[ApiClient, str]:
    api = server.client()
    reply = await api.register(name)
    return api, reply["user"]["id"]


async def api_send(api: ApiClient, conversation_id: str, body: str) -> None:
    reply = await api.post(f"/api/conversations/{conversation_id}/messages", {"body": body})
    assert reply.status == 201, reply.body


async def test_no_serious_violation_anywhere_in_light_and_dark(
    browser: Browser, server: RunningServer
) -> None:
    assert AXE.is_file(), f"{AXE} is missing: ./test.sh installs it (npm, axe-core@4)"
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    await alice.context.add_init_script(path=str(AXE))
    page = alice.page
    await page.reload()
    audit = Audit(page)

    # Sign-in and sign-up: a main landmark and an h1.
    await expect(page.get_by_role("main")).to_have_count(1)
    await expect(page.get_by_role("heading", level=1)).to_have_count(1)
    await audit.check("sign-in")
    await page.get_by_role("tab", name="Create account").click()
    await audit.check("sign-up")

    await sign_up(page, "alice")
    await wait_live(alice)
    # Focus moved into the app, not left on the form that went away.
    assert await page.evaluate(
        "document.getElementById('main-view').contains(document.activeElement)"
    )
    await expect(page.get_by_role("main")).to_have_count(1)
    await expect(page.get_by_role("heading", level=1)).to_have_count(1)

    # A friend with a DM and a group, a stranger's request, an incoming friend request.
    token = await token_of(page)
    alice_api = server.client(token)
    alice_id = (await alice_api.get("/api/me")).body["user"]["id"]
    bob, bob_id = await api_user(server, "bob")
    request = (await bob.post("/api/friends/requests", {"user_id": alice_id})).body["request"]
    assert (await alice_api.post(f"/api/friends/requests/{request['id']}/accept")).status == 200
    dm = (await bob.post("/api/conversations/dm", {"user_id": alice_id})).body["conversation"]
    for body in ("hi alice 👋", "shall we climb on Saturday? 🧗", "bring the rope"):
        await api_send(bob, dm["id"], body)
    group = await alice_api.post("/api/groups", {"name": "Climbing", "member_ids": [bob_id]})
    assert group.status == 201, group.body
    carol, _ = await api_user(server, "carol")
    stranger_dm = (await carol.post("/api/conversations/dm", {"user_id": alice_id})).body
    await api_send(carol, stranger_dm["conversation"]["id"], "hello, we have not met")
    dave, _ = await api_user(server, "dave")
    assert (await dave.post("/api/friends/requests", {"user_id": alice_id})).status == 201

    await page.reload()  # what alice did over the API, read by the page
    await expect(conversation_row(page, "bob")).to_have_count(1)
    await expect(conversation_row(page, "carol")).to_have_count(1)
    await expect(page.locator("#requests-badge")).to_have_text("1")
    # Presence is said in words, not only by the dot's colour.
    await expect(conversation_row(page, "bob").locator(".sr-only")).to_have_text(", offline")
    await audit.check("conversation list")

    await open_conversation(alice, "bob")
    await expect(page.locator("#message-list li.msg")).to_have_count(3)
    await audit.check("DM")
    await page.get_by_role("button", name="Insert emoji").click()
    await expect(page.get_by_role("dialog", name="Emoji")).to_be_visible()
    await audit.check("emoji picker")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog", name="Emoji")).to_be_hidden()
    await open_conversation(alice, "carol")
    await expect(page.locator("#request-bar")).to_be_visible()
    await audit.check("message request")
    await open_conversation(alice, "Climbing")
    await page.get_by_role("button", name="Members").click()
    await expect(page.locator("#members-dialog")).to_be_visible()
    await audit.check("members dialog")
    await page.keyboard.press("Escape")

    await page.get_by_role("button", name="New group").click()
    await expect(page.locator("#group-dialog")).to_be_visible()
    await audit.check("new group dialog")
    await page.keyboard.press("Escape")

    await page.get_by_role("button", name="Settings").click()
    await expect(page.locator("#settings-dialog")).to_be_visible()
    await audit.check("settings dialog")
    await page.get_by_role("button", name="Account and sessions…").click()
    await expect(page.locator("#account-dialog")).to_be_visible()
    await expect(page.locator("#account-dialog li").first).to_be_visible()  # the sessions
    await audit.check("account dialog")
    await page.keyboard.press("Escape")
    await expect(page.locator("#account-dialog")).to_be_hidden()
    if await page.locator("#settings-dialog").is_visible():
        await page.keyboard.press("Escape")

    await tab(alice, "People")
    await expect(page.locator("#friend-list li.person")).to_have_count(1)
    await expect(page.locator("#directory-list li.person").first).to_be_visible()
    await audit.check("people")
    # The confirmation dialog every destructive action opens.
    friend = page.locator("#friend-list li.person", has_text="bob")
    await friend.get_by_role("button", name="More actions for bob").click()
    await friend.get_by_role("button", name="Block").click()
    await expect(page.get_by_role("dialog", name="Block bob?")).to_be_visible()
    await audit.check("confirmation dialog")
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog", name="Block bob?")).to_be_hidden()
    await tab(alice, "Requests")
    await expect(page.locator("#incoming-list li.person")).to_have_count(1)
    await audit.check("friend requests")

    assert len(audit.scanned) == 26
    audit.assert_clean()

    # Signing in (not only signing up) moves the focus into the app too.
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    await sign_in(page, "alice")
    # Not #me-name nor #transport: the hidden view still shows those of the last session.
    await expect(page.locator("#main-view")).to_be_visible()
    assert await page.evaluate(
        "document.getElementById('main-view').contains(document.activeElement)"
    )
    assert alice.errors == []
    await close_all(alice)


async def test_no_serious_violation_in_a_busy_chat_in_light_and_dark(
    browser: Browser, server: RunningServer
) -> None:
    """An open chat with what it can show besides plain bubbles: formatting, the unread
    divider, other senders' names, a system line, the pill, a message waiting for the
    connection and the banner, a refused one with Retry and its toast, "Connected again."."""
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    await alice.context.add_init_script(path=str(AXE))
    page = alice.page
    await page.reload()
    await sign_up(page, "alice")
    await wait_live(alice)
    audit = Audit(page)
    alice_api = server.client(await token_of(page))
    alice_id = (await alice_api.get("/api/me")).body["user"]["id"]
    bob, _ = await api_user(server, "bob")
    request = (await bob.post("/api/friends/requests", {"user_id": alice_id})).body["request"]
    assert (await alice_api.post(f"/api/friends/requests/{request['id']}/accept")).status == 200
    group = await bob.post("/api/groups", {"name": "Crag", "member_ids": [alice_id]})
    gid = group.body["conversation"]["id"]
    for n in range(30):
        await api_send(bob, gid, f"line {n}: *bold*, _italic_, `code` and https://example.com")
    await api_send(bob, gid, "```\nblock of code\n```")

    await open_conversation(alice, "Crag")
    await expect(page.locator("#message-list .unread-divider")).to_be_visible()
    await expect(page.locator("#message-list .sender").first).to_be_attached()
    assert (await bob.patch(f"/api/groups/{gid}", {"name": "Crag club"})).status == 200
    await expect(page.locator("#message-list .system-line", has_text="renamed")).to_have_count(1)
    await page.locator("#messages").evaluate("el => { el.scrollTop = 0 }")
    await api_send(bob, gid, "while you were up there")
    await expect(page.locator("#new-messages-pill")).to_be_visible()
    await audit.check("group chat")
    await page.locator("#new-messages-pill").click()

    # A message the server refuses: "Not sent", Retry, and a toast.
    async def refuse(route: Route) -> None:
        if route.request.method != "POST":
            await route.fallback()
            return
        error = {"error": {"code": "validation_failed", "message": "Refused for this test."}}
        await route.fulfill(status=400, body=json.dumps(error), content_type="application/json")

    await page.route(f"**/api/conversations/{gid}/messages", refuse)
    await send(alice, "refused")
    await expect(bubble(page, "refused")).to_have_attribute("data-state", "failed")
    await expect(page.locator(".toast.error")).to_be_visible()
    await audit.check("a refused message")
    await page.unroute(f"**/api/conversations/{gid}/messages")

    # The server away: the banner, a message waiting; then back.
    await stop_server(server)
    await expect(page.locator("#connection-banner")).to_be_visible()
    await send(alice, "waiting")
    await expect(bubble(page, "waiting")).to_have_attribute("data-state", "queued")
    await audit.check("disconnected")
    await start_server(server)
    await expect(page.locator("#connection-banner")).to_contain_text("Connected again")
    await audit.check("connected again")
    await expect_sent(page, "waiting")
    audit.assert_clean()
    assert alice.errors == []
    await close_all(alice)


async def test_no_serious_violation_on_a_phone_in_light_and_dark(
    browser: Browser, server: RunningServer
) -> None:
    """At 360x740 one pane shows at a time, with a Back button: the list, a chat, a person's
    "More…" opened, the Members dialog."""
    alice = await new_person(browser, server, "alice", viewport=PHONE, sign_up_now=False)
    await alice.context.add_init_script(path=str(AXE))
    page = alice.page
    await page.reload()
    audit = Audit(page)
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    await audit.check("phone: sign-in")
    await sign_up(page, "alice")
    await wait_live(alice)
    alice_api = server.client(await token_of(page))
    alice_id = (await alice_api.get("/api/me")).body["user"]["id"]
    bob, bob_id = await api_user(server, "bob")
    request = (await bob.post("/api/friends/requests", {"user_id": alice_id})).body["request"]
    assert (await alice_api.post(f"/api/friends/requests/{request['id']}/accept")).status == 200
    dm = (await bob.post("/api/conversations/dm", {"user_id": alice_id})).body["conversation"]
    await api_send(bob, dm["id"], "hi alice, `code` and https://example.com 👋")
    group = await alice_api.post("/api/groups", {"name": "Climbing", "member_ids": [bob_id]})
    assert group.status == 201, group.body
    await expect(conversation_row(page, "bob")).to_have_count(1)
    await audit.check("phone: conversation list")
    await conversation_row(page, "bob").click()
    await expect(page.locator("#message-list li.msg")).to_have_count(1)
    await audit.check("phone: DM")
    await page.get_by_role("button", name="Back to conversations").click()
    await conversation_row(page, "Climbing").click()
    await page.get_by_role("button", name="Members").click()
    await expect(page.locator("#members-dialog")).to_be_visible()
    await audit.check("phone: members dialog")
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Back to conversations").click()
    await tab(alice, "People")
    friend = page.locator("#friend-list li.person", has_text="bob")
    await friend.get_by_role("button", name="More actions for bob").click()
    await expect(friend.get_by_role("button", name="Block")).to_be_visible()
    await audit.check("phone: people, More… open")
    audit.assert_clean()
    assert alice.errors == []
    await close_all(alice)


# The pixels of a PNG (a screenshot) whose colour is far from grey: a colour emoji font draws
# hundreds; a monochrome fallback or a missing glyph draws none.
COLOURED_PIXELS = """
async (src) => {
  const img = new Image();
  img.src = src;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width;
  canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (Math.max(r, g, b) - Math.min(r, g, b) > 80) coloured += 1;
  }
  return coloured;
}
"""


async def test_emoji_are_drawn_in_colour_in_screenshots(
    browser: Browser, server: RunningServer
) -> None:
    """./test.sh installs Debian's fonts-noto-color-emoji where it is missing."""
    alice = await new_person(browser, server, "alice")
    page = alice.page
    alice_id = (await server.client(await token_of(page)).get("/api/me")).body["user"]["id"]
    bob, _ = await api_user(server, "bob")
    dm = (await bob.post("/api/conversations/dm", {"user_id": alice_id})).body["conversation"]
    await api_send(bob, dm["id"], "🧗🍕🎉")
    await open_conversation(alice, "bob")
    shown = page.locator("#message-list li.msg .bubble")
    await expect(shown).to_have_text("🧗🍕🎉")
    png = await shown.screenshot()
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    coloured = await page.evaluate(COLOURED_PIXELS, src)
    assert coloured > 100, f"the emoji are not drawn in colour ({coloured} coloured pixels)"
    await close_all(alice)
