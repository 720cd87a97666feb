"""End-to-end encryption interoperates: the browser's WebCrypto implementation
(static/js/e2e/; the app decrypts what arrives, the test sends with the app's device) and the
Python reference client (tests/e2e_client.py) chat both ways in Chromium, over WebSocket and
long-polling on the Python side; the browser's private keys are non-extractable and survive a
reload in IndexedDB; a second browser device added mid-conversation gets the next message
after the sender's 409; and two people chat encrypted in the app itself."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bson
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser_helpers import (
    befriend,
    bubble,
    close_all,
    expect_sent,
    launch,
    new_person,
    person_row,
    send,
    sign_in,
    tab,
    token_of,
)
from tests.conftest import RunningServer
from tests.test_conversations import join
from tests.test_e2e import E2eMember, Poller, incoming

UNDECRYPTABLE = "This message cannot be decrypted on this device."  # e2e/session.js

# The app makes the device at sign-in; the test waits for it, then opens it too (a PUT again).
OPEN_DEVICE = """async (userId) => {
  const { Api } = await import('/static/js/api.js');
  const { E2eClient } = await import('/static/js/e2e/client.js');
  const keystore = await import('/static/js/e2e/keystore.js');
  for (let i = 0; i < 100 && !(await keystore.get(`device:${userId}`)); i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  window.e2e = await E2eClient.open(new Api(), userId);
  const d = window.e2e.device;
  return {
    deviceId: window.e2e.deviceId,
    extractable: [d.identity, d.signing, d.spk].map((k) => k.privateKey.extractable),
  };
}"""

# What the app decrypted of the others' messages after a seq, as it keeps it (by message id).
READ_NEW = """async ([conversationId, afterSeq]) => {
  const keystore = await import('/static/js/e2e/keystore.js');
  const page = await window.e2e.api.request('GET', `/api/conversations/${conversationId}/messages`,
    { query: { after_seq: afterSeq } });
  const out = [];
  for (const m of page.messages) {
    if (m.sender_id === window.e2e.userId) continue;
    let kept = null;
    for (let i = 0; i < 200 && !(kept = await keystore.get(`plain:${m.id}`)); i++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    out.push([m.seq, kept ? kept.body : null]);
  }
  return out;
}"""

SEND = """async ([conversationId, text, key]) => {
  const m = await window.e2e.send(conversationId, { body: text }, key);
  return m.seq;
}"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as b:
        yield b


async def me(server: RunningServer, page: Page) -> str:
    api = server.client(await token_of(page))
    reply = await api.get("/api/me")
    user_id: str = reply.body["user"]["id"]
    return user_id


@pytest.mark.parametrize("transport", ["ws", "longpoll"])
async def test_browser_and_python_chat_both_ways(
    browser: Browser, server: RunningServer, transport: str
) -> None:
    bee = await new_person(browser, server, f"bee{transport}")
    bee_id = await me(server, bee.page)
    opened = await bee.page.evaluate(OPEN_DEVICE, bee_id)
    assert opened["extractable"] == [False, False, False]  # private keys never leave
    py = E2eMember(await join(server, "py", "rest" if transport == "longpoll" else "ws"))
    await py.register()
    poller = None
    if transport == "longpoll":
        poller = Poller(py.member)
        await poller.start()
    dm = (await py.call("conversations.open_dm", user_id=bee_id, encrypted=True)).expect()
    cid = dm["conversation"]["id"]
    seen = 0
    for turn in range(3):
        sent = [await py.send(cid, f"from python {turn}.{i}") for i in range(2)]
        got = await bee.page.evaluate(READ_NEW, [cid, seen])
        assert got == [[m["seq"], f"from python {turn}.{i}"] for i, m in enumerate(sent)]
        seq = await bee.page.evaluate(SEND, [cid, f"from the browser {turn}", f"bee-{turn}"])
        [message] = await incoming(py.member, poller, 1)
        assert message["seq"] == seq and py.read(message) == f"from the browser {turn}"
        seen = seq
        if turn == 1:  # the keys and sessions are in IndexedDB: a reload keeps them
            await bee.page.reload()
            again = await bee.page.evaluate(OPEN_DEVICE, bee_id)
            assert again["deviceId"] == opened["deviceId"]
    assert bee.errors == []
    await close_all(bee)


async def test_a_second_browser_device_reads_after_the_senders_409(
    browser: Browser, server: RunningServer
) -> None:
    bee = await new_person(browser, server, "beetwo")
    bee_id = await me(server, bee.page)
    first = await bee.page.evaluate(OPEN_DEVICE, bee_id)
    py = E2eMember(await join(server, "pz"))
    await py.register()
    cid = (await py.call("conversations.open_dm", user_id=bee_id, encrypted=True)).expect()[
        "conversation"
    ]["id"]
    one = await py.send(cid, "to one device")
    assert await bee.page.evaluate(READ_NEW, [cid, 0]) == [[one["seq"], "to one device"]]
    tablet = await new_person(browser, server, "beetwo", sign_up_now=False)
    await sign_in(tablet.page, "beetwo")
    second = await tablet.page.evaluate(OPEN_DEVICE, bee_id)
    assert second["deviceId"] != first["deviceId"]
    before = py.sends_409
    two = await py.send(cid, "to both devices")
    assert py.sends_409 == before + 1
    for person in (bee, tablet):
        got = await person.page.evaluate(READ_NEW, [cid, one["seq"]])
        assert got == [[two["seq"], "to both devices"]]
    # The tablet's history has the first message without an envelope for it.
    tablet_api: Any = server.client(await token_of(tablet.page))
    page = (await tablet_api.get(f"/api/conversations/{cid}/messages")).body["messages"]
    assert page[0]["no_envelope"] is True
    # The browser answers; the Python side reads it.
    seq = await tablet.page.evaluate(SEND, [cid, "from the tablet", "tab-1"])
    [message] = await incoming(py.member, None, 1)
    assert message["seq"] == seq and py.read(message) == "from the tablet"
    await close_all(bee, tablet)


async def test_two_people_chat_encrypted_in_the_app_and_compare_safety_numbers(
    browser: Browser, server: RunningServer
) -> None:
    alice = await new_person(browser, server, "lockalice")
    bob = await new_person(browser, server, "lockbob", query="?transport=longpoll")
    await befriend(alice, bob)
    await tab(alice, "People")
    row = person_row(alice.page, "friend-list", bob.username)
    await row.get_by_role("button", name=f"More actions for {bob.username}").click()
    await row.get_by_role("button", name="New encrypted chat").click()
    await expect(alice.page.locator("#chat-title")).to_have_text(f"🔒 {bob.username}")
    await expect(alice.page.locator("#attach-button")).to_be_visible()  # files go encrypted
    secret = "MARKER-browser-violet-harbour"
    await send(alice, secret)
    await expect_sent(alice.page, secret)
    await tab(bob, "Chats")
    rows = bob.page.locator("#conversation-list button.conv")
    await rows.filter(has=bob.page.locator(".lock")).click()
    await expect(bubble(bob.page, secret)).to_be_visible()
    await send(bob, "MARKER-reply-over-longpoll")
    await expect(bubble(alice.page, "MARKER-reply-over-longpoll")).to_be_visible()
    # The export decrypted in the browser has the plaintext; the server's has none.
    async with bob.page.expect_download() as info:
        await bob.page.get_by_role("button", name="Download decrypted").click()
    saved = await (await info.value).path()
    doc = json.loads(await asyncio.to_thread(Path(saved).read_text))
    bodies = [m["body"] for m in doc["conversations"][0]["messages"]]
    assert bodies == [secret, "MARKER-reply-over-longpoll"]
    # Both see the same safety number.
    numbers = []
    for person in (alice, bob):
        await person.page.get_by_role("button", name="Safety number").click()
        text = await person.page.locator("#confirm-message").inner_text()
        numbers.append(re.findall(r"(?:\d{5} ){11}\d{5}", text))
        await person.page.get_by_role("button", name="Mark verified").click()
    assert numbers[0] and numbers[0] == numbers[1]
    # Bob signs in on a tablet: Alice's next message meets a 409, and a notice says so.
    tablet = await new_person(browser, server, bob.username, sign_up_now=False)
    await sign_in(tablet.page, bob.username)
    api = server.client(await token_of(alice.page))
    for _ in range(100):
        devices = (await api.get(f"/api/keys/users/{await me(server, bob.page)}")).body["devices"]
        if len(devices) == 2:
            break
        await asyncio.sleep(0.1)
    await send(alice, "MARKER-to-both-of-bobs")
    await expect(alice.page.locator(".system-line")).to_contain_text(
        f"{bob.username} added a device"
    )
    await tab(tablet, "Chats")
    await (
        tablet.page.locator("#conversation-list button.conv")
        .filter(has=tablet.page.locator(".lock"))
        .click()
    )
    await expect(bubble(tablet.page, "MARKER-to-both-of-bobs")).to_be_visible()
    await expect(bubble(tablet.page, UNDECRYPTABLE)).to_have_count(2)  # from before it existed
    await expect(bubble(bob.page, "MARKER-to-both-of-bobs")).to_be_visible()
    # Nothing of it in the database.
    for name in await server.store.db.list_collection_names():
        async for doc in server.store.db[name].find():
            assert b"MARKER" not in bson.encode(doc), name
    assert alice.errors == [] and bob.errors == []
    await close_all(alice, bob, tablet)
