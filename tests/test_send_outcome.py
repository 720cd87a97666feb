"""A send whose outcome the server could not learn in time (503) ends in one of two states:
stored and delivered to every member in order, or not stored at all; a retry with the same
client_msg_id is always safe, and returns the message only once it has been published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import ServerFactory
from tests.holding_proxy import HoldingProxy
from tests.test_conversations import (
    TRANSPORTS,
    close_sockets_cleanly,
    history,
    join,
    open_dm,
    send,
)

__all__ = ["close_sockets_cleanly"]

INSERT_OF_A_MESSAGE = (b"insert\x00", b"messages\x00")


@pytest.fixture
async def proxy(database_uri: str) -> AsyncIterator[HoldingProxy]:
    proxy = HoldingProxy(database_uri)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_send_answered_503_whose_insert_lands_later_is_delivered_once(
    proxy: HoldingProxy, make_server: ServerFactory, db_name: str, transport: str
) -> None:
    server = await make_server(mongo_uri=proxy.uri(), db_timeout_ms=1000)
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    first = await send(alice, cid, "before")
    assert (await bob.event("message.new"))["message"]["id"] == first["id"]
    assert (await alice.event("message.new"))["message"]["id"] == first["id"]

    # The insert reaches the database 3 s late, after the sender was told 503.
    proxy.hold_next(INSERT_OF_A_MESSAGE, 3.0)
    held = await alice.call(
        "messages.send", conversation_id=cid, body="held", client_msg_id="held-1"
    )
    held.fails(503, "database_unavailable")
    await asyncio.wait_for(proxy.held.wait(), 10)

    # Stored and delivered, to every member, even though its sender only got an error...
    delivered = (await bob.event("message.new", timeout=10))["message"]
    assert delivered["body"] == "held" and delivered["seq"] > first["seq"]
    assert (await alice.event("message.new", timeout=10))["message"]["id"] == delivered["id"]
    # ...and the retry with the same key returns that very message, not a second one.
    again = await send(alice, cid, "held", client_msg_id="held-1")
    assert again == delivered
    after = await send(alice, cid, "after")
    assert (await bob.event("message.new"))["message"]["id"] == after["id"]
    await bob.no_event("message.new")
    page = await history(bob, cid)
    assert [m["body"] for m in page["messages"]] == ["before", "held", "after"]


async def test_a_retry_while_the_first_send_is_still_unresolved_waits_for_it(
    proxy: HoldingProxy, make_server: ServerFactory
) -> None:
    server = await make_server(mongo_uri=proxy.uri(), db_timeout_ms=1000)
    alice = await join(server, "alice", "ws")
    bob = await join(server, "bob", "rest")
    cid = (await open_dm(alice, bob))["id"]
    proxy.hold_next(INSERT_OF_A_MESSAGE, 2.5)
    (
        await alice.call("messages.send", conversation_id=cid, body="slow", client_msg_id="s-1")
    ).fails(503, "database_unavailable")
    # Retried at once, while the first insert is still held: the same message, once.
    retried = await alice.call_rest(
        "messages.send", conversation_id=cid, body="slow", client_msg_id="s-1"
    )
    if not retried.ok:  # still unknown within this retry's own deadline: safe to retry again
        retried.fails(503, "database_unavailable")
        await asyncio.wait_for(proxy.held.wait(), 10)
        retried = await alice.call_rest(
            "messages.send", conversation_id=cid, body="slow", client_msg_id="s-1"
        )
    message = retried.expect(201)["message"]
    # The first send's own seq: the retry waited for it instead of storing at a new one.
    assert message["seq"] == 1
    assert (await bob.event("message.new", timeout=10))["message"]["id"] == message["id"]
    await asyncio.wait_for(proxy.held.wait(), 10)
    await bob.no_event("message.new", wait=1.0)
    page = await history(bob, cid)
    assert [(m["body"], m["seq"]) for m in page["messages"]] == [("slow", message["seq"])]
