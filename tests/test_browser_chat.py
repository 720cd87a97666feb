"""Two (and three) people chatting through the browser client in a real Chromium."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Route, expect

from tests.browser_helpers import (
    Person,
    befriend,
    bubble,
    close_all,
    code_of,
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
    sign_up,
    tab,
    token_of,
    wait_live,
)
from tests.client import ApiClient
from tests.conftest import RunningServer, ServerFactory
from tests.holding_proxy import HoldingProxy
from tests.test_send_outcome import INSERT_OF_A_MESSAGE, proxy

__all__ = ["proxy"]  # the fixture, for this module too

SCROLLBACK = 200


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def test_two_people_meet_chat_and_part(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice")
    bob = await new_person(browser, server, "bob")
    await wait_live(alice)
    await wait_live(bob)

    # Find each other by friend code, request, accept; each sees the other's dot go green.
    await befriend(alice, bob)
    await expect(person_row(alice.page, "friend-list", "bob")).to_have_attribute(
        "data-status", "online"
    )
    await expect(person_row(bob.page, "friend-list", "alice")).to_have_attribute(
        "data-status", "online"
    )

    # Chat both ways in real time.
    await open_dm_from_friends(alice, "bob")
    await send(alice, "Hi Bob")
    await expect_sent(alice.page, "Hi Bob")
    await tab(bob, "Chats")
    row = conversation_row(bob.page, "alice")
    await expect(row.locator(".unread-badge")).to_have_text("1")
    await expect(row.locator(".preview")).to_have_text("Hi Bob")
    await row.click()
    await expect(bubble(bob.page, "Hi Bob")).to_be_visible()
    await expect(row.locator(".unread-badge")).to_have_count(0)
    # Alice sees that Bob read it.
    await expect(bubble(alice.page, "Hi Bob").locator(".receipt")).to_have_text("Read")

    # Typing shows on the other side; Shift+Enter makes a new line, Enter sends.
    composer = bob.page.get_by_label("Message", exact=True)
    await composer.press_sequentially("Hello")
    await expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
    await composer.press("Shift+Enter")
    await composer.press_sequentially("Alice")
    await composer.press("Enter")
    await expect(bubble(alice.page, "Hello\nAlice")).to_be_visible()
    await expect(alice.page.locator("#typing")).to_have_text("")
    await expect(bubble(bob.page, "Hello\nAlice")).to_have_attribute("data-state", "sent")

    # Bob's read pointer goes to the end, so no receipt event can reach Alice after her reload:
    # the "Read" she then shows comes from the conversation as loaded.
    bob_api = server.client(await token_of(bob.page))
    conv = (await bob_api.get("/api/conversations")).body["conversations"][0]
    read = await bob_api.post(f"/api/conversations/{conv['id']}/read", {"seq": conv["last_seq"]})
    assert read.status == 200, read.body
    # A reload shows the history, the same conversation open, and Bob's receipt.
    await alice.page.reload()
    await expect(alice.page.locator("#chat-title")).to_have_text("bob")
    await expect(messages(alice.page)).to_have_count(2)
    await expect(bubble(alice.page, "Hi Bob").locator(".receipt")).to_have_text("Read")
    await expect(alice.page.locator("#message-list li.day")).to_have_text(["Today"])

    # Scroll back through 200 more messages, seeded over REST.
    for start in range(0, SCROLLBACK, 50):
        replies = await asyncio.gather(
            *(
                bob_api.post(
                    f"/api/conversations/{conv['id']}/messages",
                    {"body": f"Message {n:03d}", "client_msg_id": f"seed-{n}"},
                )
                for n in range(start, start + 50)
            )
        )
        assert all(r.status == 201 for r in replies), [r.body for r in replies]
    await alice.page.reload()
    scroller = alice.page.locator("#messages")
    newest = await bob_api.get(f"/api/conversations/{conv['id']}/messages?limit=1")
    last_body = newest.body["messages"][-1]["body"]
    await expect(bubble(alice.page, last_body)).to_be_in_viewport()
    await expect(messages(alice.page)).to_have_count(50)
    for loaded in (100, 150, 200, 202):
        # The message at the top stays where it was while older ones load above it.
        top = messages(alice.page).first
        top_text = await top.locator(".bubble").text_content()
        await scroller.evaluate("el => el.scrollTop = 0")
        await expect(messages(alice.page)).to_have_count(loaded)
        anchor = bubble(alice.page, top_text or "")
        await expect(anchor).to_be_in_viewport()
    await expect(alice.page.locator("#history-start")).to_be_visible()
    seqs = await messages(alice.page).evaluate_all("els => els.map(e => Number(e.dataset.seq))")
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 202

    # A group with a third person: create, talk, manage members.
    carol = await new_person(browser, server, "carol")
    await befriend(carol, alice)
    await tab(alice, "Chats")
    await alice.page.get_by_role("button", name="New group").click()
    dialog = alice.page.get_by_role("dialog", name="New group")
    await dialog.get_by_role("button", name="Create group").click()
    await expect(dialog.locator("#group-name-error")).to_have_text("Group name must not be empty.")
    await dialog.get_by_label("Group name").fill("Trio")
    await dialog.get_by_label("bob").check()
    await dialog.get_by_label("carol").check()
    await dialog.get_by_role("button", name="Create group").click()
    await expect(alice.page.locator("#chat-title")).to_have_text("Trio")
    await expect(alice.page.locator("#chat-subtitle")).to_have_text("3 members")
    await send(alice, "Welcome to Trio")
    for other in (bob, carol):
        await open_conversation(other, "Trio")
        await expect(bubble(other.page, "Welcome to Trio")).to_be_visible()
    await send(carol, "Thanks!")
    await expect(bubble(alice.page, "Thanks!")).to_be_visible()
    await expect(bubble(bob.page, "Thanks!").locator(".sender")).to_have_text("carol")

    await alice.page.get_by_role("button", name="Members").click()
    panel = alice.page.get_by_role("dialog", name="Trio")
    members = panel.locator("#member-list li")
    await expect(members).to_have_count(3)
    await expect(panel.locator("li[data-role='owner'] .name")).to_have_text("alice (you)")
    bob_member = panel.locator("li.member", has_text="bob")
    await bob_member.get_by_role("button", name="Make admin").click()
    await expect(bob_member.locator(".role")).to_have_text("Admin")
    carol_member = panel.locator("li.member", has_text="carol")
    await carol_member.get_by_role("button", name="Remove").click()
    await (
        alice.page.get_by_role("dialog", name="Remove carol?")
        .get_by_role("button", name="Remove")
        .click()
    )
    await expect(members).to_have_count(2)
    await expect(conversation_row(carol.page, "Trio")).to_have_count(0)
    await panel.get_by_label("Add a friend").select_option(label="carol")
    await panel.get_by_role("button", name="Add", exact=True).click()
    await expect(members).to_have_count(3)
    await expect(conversation_row(carol.page, "Trio")).to_have_count(1)
    await panel.get_by_role("button", name="Close").click()

    # Bob (now an admin) sees his role, and leaves.
    await bob.page.get_by_role("button", name="Members").click()
    bob_panel = bob.page.get_by_role("dialog", name="Trio")
    await expect(bob_panel.locator("li[data-role='admin'] .name")).to_have_text("bob (you)")
    await bob_panel.get_by_role("button", name="Leave group").click()
    await (
        bob.page.get_by_role("dialog", name="Leave Trio?")
        .get_by_role("button", name="Leave group")
        .click()
    )
    await expect(conversation_row(bob.page, "Trio")).to_have_count(0)
    await expect(alice.page.locator("#chat-subtitle")).to_have_text("2 members")

    # Block (after a confirmation): the DM can no longer be written, on both sides.
    await open_conversation(alice, "bob")
    await alice.page.get_by_role("button", name="Block", exact=True).click()
    await (
        alice.page.get_by_role("dialog", name="Block bob?")
        .get_by_role("button", name="Block")
        .click()
    )
    await expect(alice.page.locator("#chat-block")).to_have_text("Unblock")
    await expect(alice.page.locator("#composer-notice")).to_contain_text("You blocked bob.")
    await open_conversation(bob, "alice")
    await expect(bob.page.locator("#composer-notice")).to_have_text(
        "You can't reply to this conversation."
    )
    await expect(bob.page.locator("#composer")).to_be_hidden()
    await tab(bob, "People")
    await expect(person_row(bob.page, "friend-list", "alice")).to_have_count(0)

    # Log out.
    for person in (alice, bob, carol):
        await person.page.get_by_role("button", name="Log out").click()
        await expect(person.page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
    for person in (alice, bob, carol):
        assert person.errors == [], person.errors
        assert person.dialogs == []
    await close_all(alice, bob, carol)


async def test_unread_counts_and_newest_activity_first(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "alice")
    bob_api = server.client()
    carol_api = server.client()
    bob = (await bob_api.register("bob"))["user"]
    carol = (await carol_api.register("carol"))["user"]
    alice_id = (await server.client(await token_of(alice.page)).get("/api/me")).body["user"]["id"]
    dms = {}
    for name, api in (("bob", bob_api), ("carol", carol_api)):
        reply = await api.post("/api/conversations/dm", {"user_id": alice_id})
        dms[name] = reply.body["conversation"]["id"]
    await api_send(bob_api, dms["bob"], "one from bob")
    await api_send(carol_api, dms["carol"], "one from carol")
    await api_send(carol_api, dms["carol"], "two from carol")
    # Strangers' DMs: listed under "Message requests", in the same order.
    rows = alice.page.locator("#conversation-list .conv .name, #dm-request-list .conv .name")
    await expect(rows).to_have_text(["carol", "bob"])
    await expect(conversation_row(alice.page, "carol").locator(".unread-badge")).to_have_text("2")
    await api_send(bob_api, dms["bob"], "two from bob")
    await expect(rows).to_have_text(["bob", "carol"])
    await expect(conversation_row(alice.page, "bob").locator(".preview")).to_have_text(
        "two from bob"
    )
    await expect(alice.page.locator("#chats-badge")).to_have_text("2")
    assert bob["id"] and carol["id"]
    assert alice.errors == []
    await close_all(alice)


async def listening_alice(browser: Browser, server: RunningServer) -> tuple[Person, list[str], str]:
    """Alice signed up and live; every WebSocket frame her page receives; her user id."""
    alice = await new_person(browser, server, "alice", sign_up_now=False)
    frames: list[str] = []
    alice.page.on(
        "websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(str(data)))
    )
    await sign_up(alice.page, "alice")
    await wait_live(alice)
    alice_id = (await server.client(await token_of(alice.page)).get("/api/me")).body["user"]["id"]
    return alice, frames, alice_id


@dataclasses.dataclass
class HeldList:
    """held: the answer has been read; release: let the page have it."""

    held: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    release: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


async def hold_the_first_list(
    person: Person, url: str | re.Pattern[str] = "**/api/conversations"
) -> HeldList:
    """The page's next list at `url` is read at once but answered only on release."""
    state = HeldList()

    async def hold(route: Route) -> None:
        if state.held.is_set():
            await route.continue_()
            return
        response = await route.fetch()
        state.held.set()
        await state.release.wait()
        await route.fulfill(response=response)

    await person.page.route(url, hold)
    return state


async def test_a_message_that_arrives_while_the_list_loads_is_counted(
    browser: Browser, server: RunningServer
) -> None:
    """A new conversation's first message has the client load the list; a second message that
    arrives while that answer is on its way counts and shows too (it was lost: the list, read
    before it, said 1 unread with the first message's preview, and nothing loaded it again)."""
    alice, frames, alice_id = await listening_alice(browser, server)
    first_list = await hold_the_first_list(alice)  # carol's first message only
    carol_api = server.client()
    await carol_api.register("carol")
    reply = await carol_api.post("/api/conversations/dm", {"user_id": alice_id})
    dm = reply.body["conversation"]["id"]
    await api_send(carol_api, dm, "one from carol")
    await asyncio.wait_for(first_list.held.wait(), 10)
    await api_send(carol_api, dm, "two from carol")
    for _ in range(100):  # the page has the second message before the list comes
        if any("two from carol" in frame for frame in frames):
            break
        await asyncio.sleep(0.05)
    assert any("two from carol" in frame for frame in frames)
    first_list.release.set()
    row = conversation_row(alice.page, "carol")
    await expect(row.locator(".preview")).to_have_text("two from carol")
    await expect(row.locator(".unread-badge")).to_have_text("2")
    assert alice.errors == []
    await close_all(alice)


async def test_groups_that_change_while_the_list_loads_stay_as_the_events_left_them(
    browser: Browser, server: RunningServer
) -> None:
    """A list answer read before a group event does not undo it: a group created while the
    list is on its way stays in it, and one the user left does not come back (a CI run saw the
    first: the group's event came, then the older list, and the group was gone for good)."""
    alice, frames, alice_id = await listening_alice(browser, server)
    ann = server.client()
    await ann.register("ann")
    team = await ann.post("/api/groups", {"name": "Team", "member_ids": [alice_id]})
    team_id = team.body["conversation"]["id"]
    await expect(conversation_row(alice.page, "Team")).to_have_count(1)
    first_list = await hold_the_first_list(alice)  # Team and ann's DM, no Climbing
    reply = await ann.post("/api/conversations/dm", {"user_id": alice_id})
    await api_send(ann, reply.body["conversation"]["id"], "hi from ann")  # a new conversation
    await asyncio.wait_for(first_list.held.wait(), 10)
    climbing = await ann.post("/api/groups", {"name": "Climbing", "member_ids": [alice_id]})
    assert climbing.status == 201, climbing.body
    removed = await ann.delete(f"/api/groups/{team_id}/members/{alice_id}")
    assert removed.status == 200, removed.body
    for _ in range(100):  # the page has both events before the list comes
        if any("Climbing" in f for f in frames) and any("member_removed" in f for f in frames):
            break
        await asyncio.sleep(0.05)
    await expect(conversation_row(alice.page, "Climbing")).to_have_count(1)
    await expect(conversation_row(alice.page, "Team")).to_have_count(0)
    first_list.release.set()
    await expect(conversation_row(alice.page, "ann")).to_have_count(1)  # the answer is in
    for _ in range(5):
        await expect(conversation_row(alice.page, "Climbing")).to_have_count(1)
        await expect(conversation_row(alice.page, "Team")).to_have_count(0)
        await asyncio.sleep(0.2)
    ann.close()
    assert alice.errors == []
    await close_all(alice)


async def test_friends_and_requests_that_change_while_the_lists_load_stay(
    browser: Browser, server: RunningServer
) -> None:
    """Lists read before a friend event do not undo it: a request that arrives, and one
    accepted, while the page's lists are on their way show once they come, and so do their
    notifications (a CI run saw the first: the request's notification came, then the older
    list, and the badge said 0)."""
    alice, frames, alice_id = await listening_alice(browser, server)
    alice_api = server.client(await token_of(alice.page))
    bob_api, carol_api = server.client(), server.client()
    await bob_api.register("bob")
    carol = (await carol_api.register("carol"))["user"]
    asked = await alice_api.post("/api/friends/requests", {"user_id": carol["id"]})
    assert asked.status == 201, asked.body
    await expect(person_row(alice.page, "outgoing-list", "carol")).to_have_count(1)

    requests = await hold_the_first_list(alice, "**/api/friends/requests")  # carol's only
    friends = await hold_the_first_list(alice, "**/api/friends")  # nobody
    notes = await hold_the_first_list(alice, re.compile(r".*/api/notifications\?.*"))  # none
    frames.clear()
    await alice.page.reload()  # a new queue: the page reads its lists again
    for held in (requests, friends, notes):
        await asyncio.wait_for(held.held.wait(), 10)
    sent = await bob_api.post("/api/friends/requests", {"user_id": alice_id})
    assert sent.status == 201, sent.body
    accepted = await carol_api.post(f"/api/friends/requests/{asked.body['request']['id']}/accept")
    assert accepted.status == 200, accepted.body
    for _ in range(100):  # the page has both events before the lists come
        if any('"friend.request"' in f for f in frames) and any(
            '"friend.accepted"' in f for f in frames
        ):
            break
        await asyncio.sleep(0.05)
    assert any('"friend.accepted"' in f for f in frames)
    for held in (requests, friends, notes):
        held.release.set()
    await tab(alice, "People")
    bell = alice.page.locator("#notifications-bell")
    for _ in range(5):
        await expect(bell).to_have_attribute("aria-label", "Notifications, 2 unread")
        await expect(alice.page.locator("#requests-badge")).to_have_text("1")
        await expect(person_row(alice.page, "incoming-list", "bob")).to_have_count(1)
        await expect(alice.page.locator("#outgoing-list li")).to_have_count(0)
        await expect(person_row(alice.page, "friend-list", "carol")).to_have_count(1)
        await asyncio.sleep(0.2)
    bob_api.close()
    carol_api.close()
    alice_api.close()
    assert alice.errors == []
    await close_all(alice)


async def api_send(api: ApiClient, conversation_id: str, body: str) -> None:
    reply = await api.post(f"/api/conversations/{conversation_id}/messages", {"body": body})
    assert reply.status == 201, reply.body


async def test_requests_search_and_blocks(browser: Browser, server: RunningServer) -> None:
    alice = await new_person(browser, server, "alice")
    await alice.context.grant_permissions(["clipboard-read", "clipboard-write"])
    carol_api = server.client()
    await carol_api.register("carol")
    await server.client().register("caroline")
    await server.client().register("dave")
    page = alice.page

    # The own friend code, copied.
    await page.get_by_role("button", name="Copy your friend code").click()
    await expect(page.locator(".toast.success")).to_contain_text("copied")
    assert await page.evaluate("navigator.clipboard.readText()") == await code_of(alice)

    # Search by username prefix, any case.
    await tab(alice, "People")
    directory = page.locator("#directory-list li .name")
    await expect(directory).to_have_text(["carol", "caroline", "dave"])
    await page.get_by_label("Search people by username").fill("CAR")
    await expect(directory).to_have_text(["carol", "caroline"])
    await page.get_by_label("Search people by username").fill("nobody")
    await expect(page.locator("#directory-empty")).to_be_visible()
    await page.get_by_label("Search people by username").fill("")
    await expect(directory).to_have_text(["carol", "caroline", "dave"])

    # A malformed friend code is refused before asking; an unknown one after.
    await page.get_by_label("Find by friend code").fill("abc")
    await page.get_by_role("button", name="Find", exact=True).click()
    await expect(page.locator("#code-input-error")).to_contain_text("8 letters and digits")
    await page.get_by_label("Find by friend code").fill("2222-2222")
    await page.get_by_role("button", name="Find", exact=True).click()
    await expect(page.locator("#code-input-error")).to_have_text("Nobody has this friend code.")

    # Ask, then cancel: the other side sees the request come and go.
    carol_row = person_row(page, "directory-list", "carol")
    await carol_row.get_by_role("button", name="Add friend").click()
    await expect(carol_row.locator(".tag")).to_have_text("Request sent")
    await tab(alice, "Requests")
    await expect(person_row(page, "outgoing-list", "carol")).to_have_count(1)
    incoming = (await carol_api.get("/api/friends/requests")).body["requests"]["incoming"]
    assert [r["from_user"]["username"] for r in incoming] == ["alice"]
    await (
        person_row(page, "outgoing-list", "carol")
        .get_by_role("button", name="Cancel request")
        .click()
    )
    await expect(page.locator("#outgoing-list li")).to_have_count(0)
    assert (await carol_api.get("/api/friends/requests")).body["requests"]["incoming"] == []

    # A request arrives live; declining it clears the badge.
    me = (await server.client(await token_of(page)).get("/api/me")).body["user"]
    reply = await carol_api.post("/api/friends/requests", {"user_id": me["id"]})
    assert reply.status == 201
    await expect(page.locator("#requests-badge")).to_have_text("1")
    await person_row(page, "incoming-list", "carol").get_by_role("button", name="Decline").click()
    await expect(page.locator("#requests-badge")).to_be_hidden()
    assert (await carol_api.get("/api/friends/requests")).body["requests"]["outgoing"] == []

    # Block and unblock from the directory.
    await tab(alice, "People")
    dave = person_row(page, "directory-list", "dave")
    await dave.get_by_role("button", name="More actions for dave").click()
    await dave.get_by_role("button", name="Block").click()
    await page.get_by_role("dialog", name="Block dave?").get_by_role("button", name="Block").click()
    await expect(person_row(page, "block-list", "dave")).to_have_count(1)
    await expect(person_row(page, "directory-list", "dave")).to_have_count(0)
    await person_row(page, "block-list", "dave").get_by_role("button", name="Unblock").click()
    await expect(page.locator("#block-list li")).to_have_count(0)
    await expect(person_row(page, "directory-list", "dave")).to_have_count(1)
    assert alice.errors == []
    await close_all(alice)


async def test_a_send_is_retried_without_duplicates(
    browser: Browser, server: RunningServer
) -> None:
    alice = await live_person(browser, server, "alice")
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    page = alice.page
    messages_url = f"**/api/conversations/{conversation_id}/messages"

    # The message is stored but the answer is lost: the automatic retry (same client_msg_id)
    # gets the stored copy back, and the message shows once.
    lost: list[str] = []

    async def lose_answer(route: Route) -> None:
        if route.request.method != "POST" or lost:
            await route.fallback()
            return
        lost.append(route.request.url)
        await route.fetch()  # reaches the server...
        await route.abort("connectionreset")  # ...but the page never hears back

    await page.route(messages_url, lose_answer)
    await send(alice, "stored once")
    await expect_sent(page, "stored once")
    await expect(bubble(page, "stored once")).to_have_count(1)
    assert len(lost) == 1
    await page.unroute(messages_url)

    # The server cannot be reached at all: the message waits in the outbox, then goes out
    # by itself once it can (no Retry needed, no error toast for waiting).
    async def unreachable(route: Route) -> None:
        if route.request.method == "POST":
            await route.abort("internetdisconnected")
        else:
            await route.fallback()

    await page.route(messages_url, unreachable)
    await send(alice, "try again")
    waiting = bubble(page, "try again")
    await expect(waiting).to_have_attribute("data-state", "queued")
    await expect(page.locator(".toast.error")).to_have_count(0)
    await page.unroute(messages_url)
    await expect_sent(page, "try again")

    history = await bob.get(f"/api/conversations/{conversation_id}/messages")
    assert [m["body"] for m in history.body["messages"]] == ["first", "stored once", "try again"]
    await expect(messages(page)).to_have_count(3)
    assert alice.errors == []
    await close_all(alice)


async def test_a_send_answered_503_whose_write_lands_late_shows_once(
    browser: Browser, proxy: HoldingProxy, make_server: ServerFactory
) -> None:
    """The database takes the insert 3 s late, after the page was told 503: the message shows
    once, as sent, for its sender (whose client retries with the same key) and its reader."""
    server = await make_server(mongo_uri=proxy.uri(), db_timeout_ms=1000)
    alice = await live_person(browser, server, "alice")
    bob, conversation_id = await dm_from_api(server, alice, "bob")
    page = alice.page
    answers: list[int] = []
    page.on(
        "response",
        lambda r: answers.append(r.status) if r.request.method == "POST" and "/messages" in r.url
        else None,
    )  # fmt: skip
    proxy.hold_next(INSERT_OF_A_MESSAGE, 3.0)
    await send(alice, "late but once")
    await expect_sent(page, "late but once")
    await expect(bubble(page, "late but once")).to_have_count(1)
    assert 503 in answers, answers
    history = await bob.get(f"/api/conversations/{conversation_id}/messages")
    assert [m["body"] for m in history.body["messages"]] == ["first", "late but once"]
    await expect(messages(page)).to_have_count(2)
    assert alice.errors == []
    await close_all(alice)
