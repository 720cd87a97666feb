"""The defects of issue 14 a new user hit, in a real Chromium: long previews, sending while the
server is away (the outbox), the connection banner and the way back to WebSocket, the read state
after a group change, signing out, blocking in both clients at once, one toast per failure, and
confirmations before what cannot be undone."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
from playwright.async_api import Browser, Error, Page, Route, ViewportSize, expect

from tests.browser_helpers import (
    DESKTOP,
    PHONE,
    befriend,
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
    open_dm_from_friends,
    person_row,
    send,
    sign_in,
    tab,
    token_of,
    wait_live,
)
from tests.client import ApiClient
from tests.conftest import RunningServer


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


# -- the server going away and coming back ----------------------------------------------------


async def stop_server(server: RunningServer) -> None:
    """What a stopped server process looks like to a browser: nothing listens on its port any
    more and every open connection (sockets, held long-polls) is cut. The service and its
    queues stay, as they would in a restarted process that kept its state... except that here
    a queue the client resumes is still there, which is the harder case for nothing-doubled."""
    server.http.stop()
    for socket in list(server.http.request_callback.settings["chat_sockets"]):  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            socket.ws_connection.stream.close()  # abrupt, as a dying process: no close frame
    await server.http.close_all_connections()


async def start_server(server: RunningServer) -> None:
    """Listen again on the same port (the page's origin), with the same application."""
    http = tornado.httpserver.HTTPServer(
        server.http.request_callback, max_body_size=8 * 1024 * 1024
    )
    http.add_sockets(tornado.netutil.bind_sockets(server.port, "127.0.0.1"))
    server.http = http  # the fixture stops this one at the end


async def stored_bodies(server: RunningServer, token: str, conversation_id: str) -> list[str]:
    api = server.client(token)
    reply = await api.get(f"/api/conversations/{conversation_id}/messages?limit=100")
    api.close()
    return [m["body"] for m in reply.body["messages"]]


async def api_send(api: ApiClient, conversation_id: str, body: str, key: str) -> None:
    reply = await api.post(
        f"/api/conversations/{conversation_id}/messages", {"body": body, "client_msg_id": key}
    )
    assert reply.status == 201, reply.body


async def outbox_of(page: Page) -> Any:
    return await page.evaluate(
        "() => Object.keys(localStorage).filter((k) => k.startsWith('chat.outbox.'))"
        ".map((k) => JSON.parse(localStorage.getItem(k)))"
    )


# -- 1. previews ------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_long_previews_are_cut_and_no_row_is_wider_than_the_list(
    browser: Browser, server: RunningServer, viewport: ViewportSize
) -> None:
    alice = await live_person(browser, server, "alice", viewport=viewport)
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    long_words = " ".join(["a fairly long sentence that goes on"] * 30)
    await api_send(bob, conversation_id, long_words, "long-1")
    await api_send(bob, conversation_id, "x" * 300, "long-2")
    if viewport == PHONE:
        await alice.page.get_by_role("button", name="Back to conversations").click()
    carol, _ = await dm_from_api(server, alice, "carol")  # a second row, with an unread one
    if viewport == PHONE:
        await alice.page.get_by_role("button", name="Back to conversations").click()
    await api_send(bob, conversation_id, long_words, "long-3")
    row = conversation_row(alice.page, "bob")
    await expect(row.locator(".unread-badge")).to_be_visible()
    sizes = await alice.page.evaluate(
        """() => {
          // Strangers' DMs sit under "Message requests": both lists, the same rows.
          const ids = ['conversation-list', 'dm-request-list'];
          const lists = ids.map((id) => document.getElementById(id));
          const rows = lists.flatMap((list) => [...list.querySelectorAll('li, button.conv')]);
          const preview = document.querySelector('#panel-chats button.conv .preview');
          const panel = document.getElementById('panel-chats');
          const widest = lists.filter((l) => !l.closest('[hidden]'));
          return {
            list: [Math.max(...widest.map((l) => l.scrollWidth - l.clientWidth)), 0],
            sidebar: document.getElementById('sidebar').clientWidth,
            rows: rows.map((r) => [r.scrollWidth, r.clientWidth, r.getBoundingClientRect().right]),
            preview: [
              preview.scrollWidth, preview.clientWidth, getComputedStyle(preview).textOverflow,
            ],
            panel: [panel.scrollWidth, panel.clientWidth],
          };
        }"""
    )
    assert sizes["list"][0] <= sizes["list"][1], sizes
    assert sizes["panel"][0] <= sizes["panel"][1], sizes
    for scroll, client, right in sizes["rows"]:
        assert scroll <= client and right <= sizes["sidebar"] + 1, sizes
    # The preview is cut (with an ellipsis), the time and the badge stay inside the row.
    assert sizes["preview"][0] > sizes["preview"][1] and sizes["preview"][2] == "ellipsis", sizes
    for part in (".when", ".unread-badge"):
        box = await row.locator(part).bounding_box()
        row_box = await row.bounding_box()
        assert box and row_box and box["x"] + box["width"] <= row_box["x"] + row_box["width"]
    bob.close()
    carol.close()
    assert alice.errors == []
    await close_all(alice)


# -- 2. the outbox ----------------------------------------------------------------------------


async def test_messages_sent_while_the_server_is_down_go_out_once_in_order(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    page = alice.page
    token = await token_of(page)

    await stop_server(server)
    await expect(page.locator("#transport")).to_have_attribute("data-status", "reconnecting")
    for n in (1, 2, 3):
        await send(alice, f"offline {n}")
    for n in (1, 2, 3):
        await expect(bubble(page, f"offline {n}")).to_have_attribute(
            "data-state", __import__("re").compile("^(sending|queued)$")
        )
    await expect(bubble(page, "offline 3")).to_have_attribute("data-state", "queued")
    await expect(bubble(page, "offline 3")).to_contain_text("Waiting for connection")
    # Nothing went out, nothing failed for good, and no error toast for what merely waits.
    await expect(page.locator("#message-list li.msg.failed")).to_have_count(0)
    await expect(page.locator(".toast.error")).to_have_count(0)
    kept = await outbox_of(page)
    assert [[e["body"] for e in box] for box in kept] == [["offline 1", "offline 2", "offline 3"]]

    # A reload while the server is away: the page itself cannot load...
    with contextlib.suppress(Error):
        await page.reload()
    for _ in range(100):
        if page.url.startswith("chrome-error:"):
            break
        await asyncio.sleep(0.05)
    assert page.url.startswith("chrome-error:"), page.url
    # ...the server comes back, the page is opened again and sends what waited, by itself.
    await start_server(server)
    await page.goto(server.base_url + "/")
    await wait_live(alice)
    await open_conversation(alice, "bob")
    for n in (1, 2, 3):
        await expect_sent(page, f"offline {n}")
    assert await stored_bodies(server, token, conversation_id) == [
        "first",
        "offline 1",
        "offline 2",
        "offline 3",
    ]
    await expect(messages(page)).to_have_count(4)
    await expect(page.locator("#message-list li.msg")).to_have_count(4)
    assert await outbox_of(page) == []
    # The reader got each once, in order, too.
    reader = await bob.get(f"/api/conversations/{conversation_id}/messages")
    assert [m["body"] for m in reader.body["messages"]][1:] == [
        "offline 1",
        "offline 2",
        "offline 3",
    ]
    bob.close()
    assert alice.errors == []
    await close_all(alice)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
async def test_a_refused_send_stays_not_sent_and_no_toast_covers_it(
    browser: Browser, server: RunningServer, viewport: ViewportSize
) -> None:
    alice = await live_person(browser, server, "alice", viewport=viewport)
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    page = alice.page
    refusal = {"error": {"code": "validation_failed", "message": "Refused for this test."}}
    # A screenful of messages: the new one is at the bottom, just above the message box.
    for n in range(25):
        await api_send(bob, conversation_id, f"filler {n}", f"filler-{n}")
    await expect(bubble(page, "filler 24")).to_be_in_viewport()

    async def refuse(route: Route) -> None:
        if route.request.method == "POST":
            await route.fulfill(
                status=400, body=json.dumps(refusal), content_type="application/json"
            )
        else:
            await route.fallback()

    await page.route(f"**/api/conversations/{conversation_id}/messages", refuse)
    await send(alice, "refused")
    failed = bubble(page, "refused")
    await expect(failed).to_have_attribute("data-state", "failed")
    retry = failed.get_by_role("button", name="Retry sending this message")
    toast = page.locator(".toast.error")
    await expect(toast).to_contain_text("Refused for this test.")
    for covered in (failed, retry):
        a = await covered.bounding_box()
        b = await toast.bounding_box()
        assert a and b
        apart = (
            a["x"] + a["width"] <= b["x"]
            or b["x"] + b["width"] <= a["x"]
            or a["y"] + a["height"] <= b["y"]
            or b["y"] + b["height"] <= a["y"]
        )
        assert apart, (a, b)
    # Kept (a reload shows it again, still "Not sent"), and Retry sends it.
    await page.unroute(f"**/api/conversations/{conversation_id}/messages")
    await page.reload()
    await wait_live(alice)
    await expect(page.locator("#chat-title")).to_have_text("bob")  # the open chat is in the URL
    await expect(failed).to_have_attribute("data-state", "failed")
    await failed.get_by_role("button", name="Retry sending this message").click()
    await expect_sent(page, "refused")
    assert await outbox_of(page) == []
    bob.close()
    assert alice.errors == []
    await close_all(alice)


# -- 3. the banner, and back to WebSocket -----------------------------------------------------


async def test_a_banner_shows_the_outage_in_an_open_chat_on_a_phone_then_websocket_again(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice", viewport=PHONE)
    bob, _ = await dm_from_api(server, alice, "bob")  # the chat is open (one pane on a phone)
    page = alice.page
    await expect(page.locator("#chat-pane")).to_be_visible()
    banner = page.locator("#connection-banner")
    await expect(banner).to_be_hidden()

    await stop_server(server)
    await expect(banner).to_be_visible()
    await expect(banner).to_have_attribute("role", "status")
    await expect(banner).to_contain_text("No connection to the server")
    box = await banner.bounding_box()
    head = await page.locator(".chat-head").bounding_box()
    assert box and head and box["y"] >= 0 and box["y"] + box["height"] <= head["y"] + 1, (box, head)
    # The sockets failed because nobody answered: the client fell back to long-polling.
    await expect(page.locator("#transport")).to_have_attribute("data-mode", "longpoll")

    await start_server(server)
    await expect(banner).to_contain_text("Connected again")
    await expect(banner).to_be_hidden()
    # Back to WebSocket by itself, well before the usual once-a-minute try.
    await expect(page.locator("#transport")).to_have_attribute(
        "data-mode", "websocket", timeout=15_000
    )
    await expect(page.locator("#transport")).to_have_attribute("data-status", "live")
    await send(alice, "back on the socket")
    await expect_sent(page, "back on the socket")
    bob.close()
    assert alice.errors == []
    await close_all(alice)


# -- 4. a group change does not bring unread back ---------------------------------------------


async def test_renaming_the_open_group_shows_no_phantom_unread(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    page = alice.page
    me = (await server.client(await token_of(page)).get("/api/me")).body["user"]
    ann = server.client()
    await ann.register("ann")
    group = await ann.post("/api/groups", {"name": "Team", "member_ids": [me["id"]]})
    group_id = group.body["conversation"]["id"]
    # Alice is made an admin so that she can rename.
    await ann.patch(f"/api/groups/{group_id}/members/{me['id']}", {"role": "admin"})
    await open_conversation(alice, "Team")

    # Her read of a new message lands late (a slow network): the rename's answer, computed
    # before it, says the message is unread.
    reads: list[str] = []

    async def slow_read(route: Route) -> None:
        reads.append(route.request.url)
        await asyncio.sleep(1.5)
        await route.fallback()

    await page.route(f"**/api/conversations/{group_id}/read", slow_read)
    await ann.post(
        f"/api/conversations/{group_id}/messages", {"body": "one", "client_msg_id": "a1"}
    )
    await ann.post(
        f"/api/conversations/{group_id}/messages", {"body": "two", "client_msg_id": "a2"}
    )
    await expect(bubble(page, "two")).to_be_visible()
    await asyncio.sleep(0.4)  # the read is on its way
    await page.get_by_role("button", name="Members").click()
    await page.locator("#rename-input").fill("Crew")
    await page.get_by_role("button", name="Rename").click()
    await expect(page.locator("#chat-title")).to_have_text("Crew")
    await page.get_by_role("button", name="Close").click()
    row = conversation_row(page, "Crew")
    await expect(row).to_have_count(1)
    for _ in range(10):
        assert await row.locator(".unread-badge").count() == 0
        assert await page.title() == "Chat"
        await asyncio.sleep(0.2)
    assert reads
    ann.close()
    assert alice.errors == []
    await close_all(alice)


# -- 5. signing out ---------------------------------------------------------------------------


async def test_signing_out_over_websocket_shows_no_error(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    await wait_live(alice, "websocket")

    # The answer to the sign-out comes late (a slow network): the session.ended on the socket
    # arrives first. It is still our own doing, not news worth a red toast.
    async def slow_answer(route: Route) -> None:
        response = await route.fetch()
        await asyncio.sleep(1.0)
        await route.fulfill(response=response)

    await alice.page.route("**/api/auth/logout", slow_answer)
    await alice.page.get_by_role("button", name="Log out").click()
    await expect(alice.page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    for _ in range(15):  # through the late answer and after it
        assert await alice.page.locator(".toast").count() == 0
        await asyncio.sleep(0.1)
    assert alice.errors == [] and alice.dialogs == []
    # Nothing of the signed-out user stays in the hidden view: not its name, its friend code
    # or its connection state.
    for box in ("#me-name", "#my-code"):
        assert await alice.page.locator(box).text_content() == "", box
    assert "Connecting" in (await alice.page.locator("#transport-label").text_content() or "")
    await close_all(alice)


# -- 6. blocking ------------------------------------------------------------------------------


async def test_a_block_takes_effect_in_both_clients_at_once(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    bob = await new_person(browser, server, "bob")
    await wait_live(alice)
    await wait_live(bob)
    await befriend(alice, bob)
    await open_dm_from_friends(alice, "bob")
    await send(alice, "hello")
    await open_conversation(bob, "alice")
    await expect(bubble(bob.page, "hello")).to_be_visible()
    await expect(bob.page.locator("#chat-pane")).to_have_attribute("data-status", "online")

    # No red Block button on each person: it is behind "More…", and asks first.
    await tab(alice, "People")
    row = person_row(alice.page, "friend-list", "bob")
    await expect(row.get_by_role("button", name="Block")).to_be_hidden()
    await row.get_by_role("button", name="More actions for bob").click()
    await row.get_by_role("button", name="Block").click()
    dialog = alice.page.get_by_role("dialog", name="Block bob?")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(person_row(alice.page, "friend-list", "bob")).to_have_count(1)
    await row.get_by_role("button", name="More actions for bob").click()
    await row.get_by_role("button", name="Block").click()
    await dialog.get_by_role("button", name="Block").click()
    await expect(person_row(alice.page, "block-list", "bob")).to_have_count(1)

    # Alice's composer gives way to a notice with Unblock...
    await open_conversation(alice, "bob")
    notice = alice.page.locator("#composer-notice")
    await expect(notice).to_have_text("You blocked bob.Unblock")
    await expect(alice.page.locator("#composer")).to_be_hidden()
    # ...and Bob's at once, by events: no composer, and Alice's dot is no longer green.
    bob_notice = bob.page.locator("#composer-notice")
    await expect(bob_notice).to_have_text("You can't reply to this conversation.")
    await expect(bob.page.locator("#composer")).to_be_hidden()
    await expect(bob.page.locator("#chat-pane")).to_have_attribute("data-status", "offline")
    await expect(conversation_row(bob.page, "alice").locator(".dot")).to_have_attribute(
        "data-status", "offline"
    )
    # A reload does not give Bob the composer back: the conversation says a block stands.
    await bob.page.reload()
    await open_conversation(bob, "alice")
    await expect(bob_notice).to_have_text("You can't reply to this conversation.")
    await expect(bob.page.locator("#composer")).to_be_hidden()

    # Unblocked from the notice: both can write again, and Bob sees Alice online again.
    await notice.get_by_role("button", name="Unblock").click()
    await expect(alice.page.locator("#composer")).to_be_visible()
    await expect(bob.page.locator("#composer")).to_be_visible()
    await expect(bob_notice).to_be_hidden()
    await expect(bob.page.locator("#chat-pane")).to_have_attribute("data-status", "online")
    await send(bob, "still here")
    await expect(bubble(alice.page, "still here")).to_be_visible()
    for person in (alice, bob):
        assert person.errors == [] and person.dialogs == [], person.errors
    await close_all(alice, bob)


# -- 7. one toast per failure -----------------------------------------------------------------


async def test_searching_while_the_server_is_down_shows_one_toast(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    await stop_server(server)
    await tab(alice, "People")  # refreshes the directory: fails
    await alice.page.get_by_label("Search people by username").fill("bo")  # fails again
    toasts = alice.page.locator(".toast.error", has_text="Could not load people")
    await expect(toasts).to_have_count(1)
    await asyncio.sleep(1.0)  # both searches have failed by now
    assert await toasts.count() == 1
    await start_server(server)
    await expect(alice.page.locator("#transport")).to_have_attribute(
        "data-status", "live", timeout=20_000
    )
    assert alice.errors == []
    await close_all(alice)


# -- confirmations ----------------------------------------------------------------------------


async def test_destructive_actions_ask_first_in_a_dialog(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    bob = await new_person(browser, server, "bob")
    await befriend(alice, bob)
    page = alice.page

    # Remove a friend.
    row = person_row(page, "friend-list", "bob")
    await row.get_by_role("button", name="More actions for bob").click()
    await row.get_by_role("button", name="Remove friend").click()
    dialog = page.get_by_role("dialog", name="Remove bob from your friends?")
    await expect(dialog).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name="More actions for bob").click()
    await row.get_by_role("button", name="Remove friend").click()
    await dialog.get_by_role("button", name="Remove friend").click()
    await expect(person_row(page, "friend-list", "bob")).to_have_count(0)
    await befriend(alice, bob)

    # A group: remove a member, then leave.
    await tab(alice, "Chats")
    await page.get_by_role("button", name="New group").click()
    await page.locator("#group-name").fill("Pair")
    await page.locator("#group-friends label", has_text="bob").click()
    await page.get_by_role("button", name="Create group").click()
    await expect(page.locator("#chat-title")).to_have_text("Pair")
    await page.get_by_role("button", name="Members").click()
    panel = page.get_by_role("dialog", name="Pair")
    member = panel.locator("li.member", has_text="bob")
    await member.get_by_role("button", name="Remove").click()
    confirm = page.get_by_role("dialog", name="Remove bob?")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(panel.locator("#member-list li")).to_have_count(2)
    await member.get_by_role("button", name="Remove").click()
    await confirm.get_by_role("button", name="Remove").click()
    await expect(panel.locator("#member-list li")).to_have_count(1)
    await panel.get_by_role("button", name="Leave group").click()
    leave = page.get_by_role("dialog", name="Leave Pair?")
    await leave.get_by_role("button", name="Leave group").click()
    await expect(conversation_row(page, "Pair")).to_have_count(0)

    # Log out with a message that has not gone out yet.
    await open_dm_from_friends(alice, "bob")
    await stop_server(server)
    await send(alice, "unsent")
    await expect(bubble(page, "unsent")).to_have_attribute("data-state", "queued")
    await page.get_by_role("button", name="Log out").click()
    out = page.get_by_role("dialog", name="Log out?")
    await expect(out).to_contain_text("1 message has not been sent yet")
    await out.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#me-name")).to_have_text("alice")
    await start_server(server)
    await expect_sent(page, "unsent")
    await wait_live(alice)

    # Going on discards it: it never reaches Bob, and the next sign-in has nothing to send.
    await stop_server(server)
    await send(alice, "discarded")
    await expect(bubble(page, "discarded")).to_have_attribute("data-state", "queued")
    await page.get_by_role("button", name="Log out").click()
    await out.get_by_role("button", name="Log out and discard").click()
    await expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    await start_server(server)
    await sign_in(page, "alice")
    await expect(page.locator("#main-view")).to_be_visible()
    await wait_live(alice)
    await open_dm_from_friends(alice, "bob")
    await expect(bubble(page, "unsent")).to_be_visible()
    keys = await page.evaluate("Object.keys(localStorage)")
    assert [k for k in keys if k.startswith("chat.outbox.")] == [], keys
    await page.wait_for_timeout(500)  # a kept outbox would have sent it by now
    conversation_id = (await page.evaluate("location.hash")).removeprefix("#c=")
    stored = await server.client(await token_of(page)).get(
        f"/api/conversations/{conversation_id}/messages"
    )
    bodies = [m["body"] for m in stored.body["messages"]]
    assert "unsent" in bodies and "discarded" not in bodies, bodies
    await expect(bubble(page, "discarded")).to_have_count(0)
    for person in (alice, bob):
        assert person.errors == [] and person.dialogs == [], person.errors
    await close_all(alice, bob)
