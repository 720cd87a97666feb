"""Drive the browser client with Playwright and Debian's Chromium: people, sign-up, friends, chat.

Every helper acts through the page as a person would (clicks, typing, keys) and waits with
Playwright's `expect`, never with sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
from collections.abc import AsyncIterator
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    ViewportSize,
    WebSocketRoute,
    async_playwright,
    expect,
)

from tests.client import ApiClient
from tests.conftest import RunningServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
TIMEOUT_MS = 10_000  # one step of a scenario; the whole suite is far below this per step

expect.set_options(timeout=TIMEOUT_MS)


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """A headless Chromium for one test (launching takes well under a second)."""
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclasses.dataclass
class Person:
    """One user in a browser context of their own (own storage, own sockets)."""

    context: BrowserContext
    page: Page
    username: str
    errors: list[str] = dataclasses.field(default_factory=list)  # uncaught errors, CSP reports
    dialogs: list[str] = dataclasses.field(default_factory=list)  # alert()/confirm() texts
    socket_mode: str = "pass"  # "block": new sockets are refused; "proxy": they pass through
    blocked_sockets: int = 0  # sockets refused so far
    # Page side and server side of every proxied socket, so a test can cut them.
    socket_routes: list[tuple[WebSocketRoute, WebSocketRoute]] = dataclasses.field(
        default_factory=list
    )


async def new_person(
    browser: Browser,
    server: RunningServer,
    username: str,
    *,
    query: str = "",
    viewport: ViewportSize | None = None,
    sockets: str = "pass",  # "pass", "block" (never connects) or "proxy" (the test can cut it)
    sign_up_now: bool = True,
) -> Person:
    """Open the client in a fresh context and (by default) create the account through the form."""
    # A server on https has a certificate from the tests' own CA, which Chromium's store
    # does not hold (the Python clients verify it; tests/certs.py).
    context = await browser.new_context(
        viewport=viewport or DESKTOP, locale="en-US", ignore_https_errors=server.tls is not None
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    person = Person(context, page, username)
    page.on("pageerror", lambda exc: person.errors.append(f"pageerror: {exc}"))

    def on_console(msg: ConsoleMessage) -> None:
        if "Content Security Policy" in msg.text or (
            msg.type == "error" and "Uncaught" in msg.text
        ):
            person.errors.append(f"console: {msg.text}")

    page.on("console", on_console)

    async def on_dialog(dialog: Dialog) -> None:
        person.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    if sockets != "pass":
        person.socket_mode = sockets

        async def route_socket(ws: WebSocketRoute) -> None:
            if person.socket_mode == "block":
                # Never reaches the server: what a proxy that forbids WebSockets looks like.
                person.blocked_sockets += 1
                await ws.close(code=1011, reason="blocked")
                return
            person.socket_routes.append((ws, ws.connect_to_server()))

        await context.route_web_socket(re.compile(r".*/ws$"), route_socket)
    await page.goto(server.base_url + "/" + query)
    if sign_up_now:
        await sign_up(page, username)
    return person


async def token_of(page: Page) -> str:
    """The session token the page keeps."""
    token = await page.evaluate("localStorage.getItem('chat.token')")
    assert isinstance(token, str)
    return token


async def sign_up(page: Page, username: str, password: str = PASSWORD) -> None:
    """Fill the sign-up form and wait for the main view."""
    await page.get_by_role("tab", name="Create account").click()
    await page.get_by_label("Username", exact=True).fill(username)
    await page.get_by_label("Email", exact=True).fill(f"{username}@example.com")
    await page.locator("#signup-password").fill(password)
    await page.get_by_role("button", name="Create account", exact=True).click()
    await expect(page.locator("#me-name")).to_have_text(username)


async def sign_in(page: Page, login: str, password: str = PASSWORD) -> None:
    await page.get_by_label("Username or email").fill(login)
    await page.locator("#signin-password").fill(password)
    await page.get_by_role("button", name="Sign in", exact=True).click()


async def code_of(person: Person) -> str:
    """The friend code the page shows."""
    await expect(person.page.locator("#my-code")).to_have_text(re.compile(r"\w{4}-\w{4}"))
    return (await person.page.locator("#my-code").text_content() or "").strip()


async def wait_live(person: Person, mode: str = "websocket") -> None:
    """The transport indicator says live on this transport."""
    indicator = person.page.locator("#transport")
    await expect(indicator).to_have_attribute("data-status", "live")
    await expect(indicator).to_have_attribute("data-mode", mode)


async def live_person(
    browser: Browser, server: RunningServer, username: str, **options: Any
) -> Person:
    """new_person, signed up and live over WebSocket: where most scenarios start."""
    person = await new_person(browser, server, username, **options)
    await wait_live(person)
    return person


async def tab(person: Person, name: str) -> None:
    await person.page.get_by_role("tab", name=re.compile(f"^{name}")).click()


def person_row(page: Page, list_id: str, username: str) -> Any:
    """The row of a user in one of the sidebar's lists."""
    return page.locator(f"#{list_id} li.person").filter(
        has=page.locator(".name", has_text=re.compile(f"^{re.escape(username)}$"))
    )


async def befriend(a: Person, b: Person) -> None:
    """a finds b by friend code and asks; b accepts from the Requests tab."""
    code = await code_of(b)
    await tab(a, "People")
    await a.page.get_by_label("Find by friend code").fill(code.lower().replace("-", ""))
    await a.page.get_by_role("button", name="Find", exact=True).click()
    found = person_row(a.page, "code-result", b.username)
    await found.get_by_role("button", name="Add friend").click()
    await expect(found.locator(".tag")).to_have_text("Request sent")

    await expect(b.page.locator("#requests-badge")).to_have_text("1")
    await tab(b, "Requests")
    incoming = person_row(b.page, "incoming-list", a.username)
    await incoming.get_by_role("button", name="Accept").click()
    await expect(b.page.locator("#incoming-list li")).to_have_count(0)
    await tab(b, "People")
    await expect(person_row(b.page, "friend-list", a.username)).to_have_count(1)
    await expect(person_row(a.page, "friend-list", b.username)).to_have_count(1)


async def open_dm_from_friends(a: Person, other: str) -> None:
    """From the People tab, the Message button on a friend's row."""
    await tab(a, "People")
    await person_row(a.page, "friend-list", other).get_by_role("button", name="Message").click()
    await expect(a.page.locator("#chat-title")).to_have_text(other)


async def open_conversation(person: Person, title: str) -> None:
    """Click a conversation in the Chats tab."""
    await tab(person, "Chats")
    await conversation_row(person.page, title).click()
    await expect(person.page.locator("#chat-title")).to_have_text(title)


def conversation_row(page: Page, title: str) -> Any:
    """Its row in the conversation list, or under "Message requests" (a stranger's DM)."""
    rows = "#conversation-list button.conv, #dm-request-list button.conv"
    return page.locator(rows).filter(
        has=page.locator(".name", has_text=re.compile(f"^{re.escape(title)}$"))
    )


async def send(person: Person, text: str) -> None:
    """Type into the composer and press Enter."""
    box = person.page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


def messages(page: Page) -> Any:
    return page.locator("#message-list li.msg")


def bubble(page: Page, text: str) -> Any:
    """The message whose text is exactly `text`."""
    return page.locator("#message-list li.msg").filter(
        has=page.locator(".bubble", has_text=re.compile(f"^{re.escape(text)}$"))
    )


async def expect_sent(page: Page, text: str) -> None:
    """My message is shown and confirmed by the server."""
    await expect(bubble(page, text)).to_have_attribute("data-state", "sent")


async def expect_no_overflow(page: Page) -> None:
    """Nothing sticks out sideways: the document is not wider than the viewport."""
    widths = await page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " document.body.scrollWidth]"
    )
    assert widths[0] <= widths[1] and widths[2] <= widths[1], widths


async def close_all(*people: Person) -> None:
    for person in people:
        await person.context.close()


async def dm_from_api(server: RunningServer, alice: Person, username: str) -> tuple[ApiClient, str]:
    """Another user, made over the API, opens a DM with alice; the client shows it."""
    api = server.client()
    await api.register(username)
    me = await server.client(await token_of(alice.page)).get("/api/me")
    reply = await api.post("/api/conversations/dm", {"user_id": me.body["user"]["id"]})
    conversation_id = reply.body["conversation"]["id"]
    await api.post(
        f"/api/conversations/{conversation_id}/messages", {"body": "first", "client_msg_id": "m0"}
    )
    await open_conversation(alice, username)
    await expect(bubble(alice.page, "first")).to_be_visible()
    return api, conversation_id


async def bob_sends(bob: ApiClient, conversation_id: str, *bodies: str) -> None:
    for body in bodies:
        reply = await bob.post(
            f"/api/conversations/{conversation_id}/messages",
            {"body": body, "client_msg_id": body.replace(" ", "-")},
        )
        assert reply.status == 201, reply.body


async def dm_pair(browser: Browser, server: RunningServer) -> tuple[Person, Person, ApiClient, str]:
    """alice and bob, each in a browser, live, in their DM (bob, made over the API, wrote
    "first"): the two people, bob's API client and the conversation id."""
    alice = await live_person(browser, server, "alice")
    api, conversation_id = await dm_from_api(server, alice, "bob")
    bob = await new_person(browser, server, "bob", sign_up_now=False)
    await sign_in(bob.page, "bob", "correct horse")
    await wait_live(bob)
    await open_conversation(bob, "alice")
    return alice, bob, api, conversation_id
