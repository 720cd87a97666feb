"""The client's event stream in a real Chromium: long-polling (forced and as a fallback when the
WebSocket cannot connect), resuming after a network drop, re-reading after the queue is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from playwright.async_api import Browser, Page, Request, Route, expect

from tests.browser_helpers import (
    Person,
    befriend,
    bob_sends,
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
    wait_live,
)
from tests.conftest import RunningServer, ServerFactory


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def chat_both_ways(alice: Person, bob: Person, mode: str) -> None:
    """Friends by code, green dots, messages both ways, history after a reload."""
    await wait_live(alice, mode)
    await wait_live(bob, mode)
    await befriend(alice, bob)
    await expect(person_row(alice.page, "friend-list", "bob")).to_have_attribute(
        "data-status", "online"
    )
    await expect(person_row(bob.page, "friend-list", "alice")).to_have_attribute(
        "data-status", "online"
    )
    await open_dm_from_friends(alice, "bob")
    await send(alice, "Hi Bob")
    await expect_sent(alice.page, "Hi Bob")
    await open_conversation(bob, "alice")
    await expect(bubble(bob.page, "Hi Bob")).to_be_visible()
    await send(bob, "Hi Alice")
    await expect(bubble(alice.page, "Hi Alice")).to_be_visible()
    await expect(bubble(alice.page, "Hi Bob").locator(".receipt")).to_have_text("Read")
    await send(alice, "Over long-polling?")
    await expect(bubble(bob.page, "Over long-polling?")).to_be_visible()
    await bob.page.reload()
    await wait_live(bob, mode)
    await expect(messages(bob.page)).to_have_count(3)
    await send(alice, "After the reload")
    await expect(bubble(bob.page, "After the reload")).to_be_visible()
    for person in (alice, bob):
        assert person.errors == [], person.errors


async def test_forced_long_polling(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice", query="?transport=longpoll")
    bob = await new_person(browser, server, "bob", query="?transport=longpoll")
    sockets: list[str] = []
    for person in (alice, bob):
        person.page.on("websocket", lambda ws: sockets.append(ws.url))
    await chat_both_ways(alice, bob, "longpoll")
    await expect(alice.page.locator("#transport-label")).to_have_text("Live · long-polling")
    assert sockets == []  # forced: the page never even tries a socket
    await close_all(alice, bob)


async def test_falls_back_to_long_polling_when_the_socket_cannot_connect(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice", sockets="block")
    bob = await new_person(browser, server, "bob", sockets="block")
    await chat_both_ways(alice, bob, "longpoll")
    assert alice.blocked_sockets >= 2 and bob.blocked_sockets >= 2
    await close_all(alice, bob)


def record_state_reads(page: Page) -> list[str]:
    """The conversation-list reads the page makes (a re-read of state after a lost queue)."""
    reads: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/api/conversations") and request.method == "GET":
            reads.append(request.url)

    page.on("request", on_request)
    return reads


async def cut_off(person: Person) -> None:
    """The network drops: open sockets die, new ones and long-polls fail until restore()."""
    person.socket_mode = "block"

    async def fail(route: Route) -> None:
        await route.abort("internetdisconnected")

    await person.page.route("**/api/events?**", fail)
    for page_side, server_side in person.socket_routes:
        await page_side.close(code=4000, reason="network drop")
        await server_side.close(code=4000, reason="network drop")
    person.socket_routes.clear()


async def restore(person: Person) -> None:
    person.socket_mode = "proxy"
    await person.page.unroute("**/api/events?**")


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition on the test's side (a counter a route handler updates)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_resumes_the_same_queue_after_a_network_drop(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice", sockets="proxy")
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    reads = record_state_reads(alice.page)

    # A short drop: the socket dies, messages arrive meanwhile, the next socket resumes.
    alice.socket_mode = "block"
    for page_side, server_side in alice.socket_routes:
        await page_side.close(code=4000, reason="network drop")
        await server_side.close(code=4000, reason="network drop")
    alice.socket_routes.clear()
    await bob_sends(bob, conversation_id, "during the drop 1", "during the drop 2")
    await until(lambda: alice.blocked_sockets >= 1)
    alice.socket_mode = "proxy"
    await expect(messages(alice.page)).to_have_count(3)

    # A longer one: sockets keep failing and long-polls too; the indicator says so.
    await cut_off(alice)
    await expect(alice.page.locator("#transport")).to_have_attribute("data-status", "reconnecting")
    await expect(alice.page.locator("#transport-label")).to_have_text("Reconnecting…")
    await bob_sends(bob, conversation_id, "while away 1", "while away 2", "while away 3")
    # After two sockets that never said hello, the client switches to long-polling by itself.
    await expect(alice.page.locator("#transport")).to_have_attribute("data-mode", "longpoll")
    await expect(bubble(alice.page, "while away 1")).to_have_count(0)
    await restore(alice)
    await wait_live(alice, "longpoll")
    await expect(messages(alice.page)).to_have_count(6)
    texts = await messages(alice.page).locator(".bubble").all_text_contents()
    assert texts == [
        "first",
        "during the drop 1",
        "during the drop 2",
        "while away 1",
        "while away 2",
        "while away 3",
    ]
    assert reads == []  # the same queue throughout: nothing had to be read again
    assert alice.errors == []
    await close_all(alice)


async def test_reads_state_again_when_the_queue_was_lost(
    browser: Browser, make_server: ServerFactory
) -> None:
    # A queue holds 5 unacknowledged events here: a longer absence loses it.
    server = await make_server(queue_max_events=5)
    alice = await live_person(browser, server, "alice", sockets="proxy")
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    reads = record_state_reads(alice.page)

    await cut_off(alice)
    await bob_sends(bob, conversation_id, *(f"missed {n}" for n in range(1, 9)))
    await expect(alice.page.locator("#transport")).to_have_attribute("data-mode", "longpoll")
    await restore(alice)
    await wait_live(alice, "longpoll")
    # The hello said resumed: false, so the client read the conversations and the messages
    # after the last one it had: nothing is missing, nothing doubled.
    await expect(messages(alice.page)).to_have_count(9)
    texts = await messages(alice.page).locator(".bubble").all_text_contents()
    assert texts == ["first"] + [f"missed {n}" for n in range(1, 9)]
    assert len(reads) >= 1
    await expect(conversation_row(alice.page, "bob").locator(".preview")).to_have_text("missed 8")
    assert alice.errors == []
    await close_all(alice)
