"""Stored before delivered: with the database process stopped, a send fails with 503 on both
transports and nobody sees anything; once it is back, the same chat server sends again."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from chat.dbserver import plan_embedded
from tests.client import WsClient
from tests.conftest import ServerFactory
from tests.test_conversations import close_sockets_cleanly, history, join, open_dm, send

__all__ = ["close_sockets_cleanly"]  # the autouse fixture, for this module too


class Restartable:
    """A database server of this test's own, on disk so that its data survives a restart."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = plan_embedded(tmp_path)
        self.db.start()

    def stop(self) -> None:
        self.db.stop()

    def restart(self) -> None:
        """The same program on the same port with the same files."""
        self.db.restart()


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[Restartable]:
    # Requested before make_server, so it outlives the server's teardown (which drops the db).
    database = Restartable(tmp_path)
    yield database
    database.stop()


async def test_send_fails_with_503_while_the_database_is_down_and_works_after(
    own_database: Restartable, make_server: ServerFactory
) -> None:
    server = await make_server(mongo_uri=own_database.db.uri, db_timeout_ms=1000)
    alice = await join(server, "alice", "ws")  # commands over an open socket: no token lookup
    bob = await join(server, "bob", "rest")
    cid = (await open_dm(alice, bob))["id"]
    first = await send(alice, cid, "before the outage")
    assert (await bob.event("message.new"))["message"]["id"] == first["id"]
    assert (await alice.event("message.new"))["message"]["id"] == first["id"]

    own_database.stop()
    over_socket = await alice.call(
        "messages.send", conversation_id=cid, body="lost?", client_msg_id="k1"
    )
    over_socket.fails(503, "database_unavailable")
    over_rest = await bob.call("messages.send", conversation_id=cid, body="lost too?")
    over_rest.fails(503, "database_unavailable")
    assert (await bob.api.get("/healthz")).status == 503
    await bob.no_event("message.new", wait=0.5)
    await alice.no_event("message.new", wait=0.01)

    own_database.restart()  # the chat server is not restarted
    for _ in range(100):
        if (await bob.api.get("/healthz")).status == 200:
            break
        await asyncio.sleep(0.1)
    # The retry of the failed send (same key) is stored now, once, and delivered once.
    again = await send(alice, cid, "lost?", client_msg_id="k1")
    assert again["seq"] > first["seq"]
    assert (await bob.event("message.new"))["message"]["id"] == again["id"]
    await bob.no_event("message.new")
    page = await history(bob, cid)
    assert [m["body"] for m in page["messages"]] == ["before the outage", "lost?"]


async def test_a_stalled_database_is_a_503_within_the_database_timeout(
    own_database: Restartable, make_server: ServerFactory
) -> None:
    """A database that accepts but never answers (SIGSTOP): every operation ends within the
    timeout (3 s by default), /healthz included; before, a socket read waited 12-15 s."""
    server = await make_server(mongo_uri=own_database.db.uri, db_timeout_ms=3000)
    alice = await join(server, "alice", "ws", online=False)
    bob = await join(server, "bob", "rest", online=False)
    cid = (await open_dm(alice, bob))["id"]
    await send(bob, cid, "before")
    pid = own_database.db.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        health, over_rest, over_socket, listed = await asyncio.gather(
            bob.api.get("/healthz"),
            bob.call("messages.send", conversation_id=cid, body="stalled", client_msg_id="s1"),
            alice.call("messages.history", conversation_id=cid),
            bob.call("conversations.list"),
        )
        took = loop.time() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert health.status == 503
    over_rest.fails(503, "database_unavailable")
    over_socket.fails(503, "database_unavailable")
    listed.fails(503, "database_unavailable")
    assert took < 6.0, took


async def test_a_command_stuck_on_the_database_holds_up_neither_acks_nor_the_queue_limit(
    own_database: Restartable, make_server: ServerFactory
) -> None:
    # A timeout longer than the test: the send stays stuck on the stopped database.
    server = await make_server(mongo_uri=own_database.db.uri, db_timeout_ms=30_000)
    alice = await join(server, "alice", "ws", online=False)
    bob = await join(server, "bob", "rest", online=False)
    cid = (await open_dm(alice, bob))["id"]
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(alice.token)
    queue = server.service.registry.get(hello["queue_id"])
    assert queue is not None
    await send(bob, cid, "hello")
    delivered = (await ws.event("message.new"))["id"]
    pid = own_database.db.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the database hangs: no answer, no error, for now
    try:
        await ws.send({"type": "messages.send", "ref": "stuck", "conversation_id": cid,
                       "body": "waiting", "client_msg_id": "w1"})  # fmt: skip
        await asyncio.sleep(0.3)
        # The socket goes on reading behind the stuck command: the ack is applied now, not
        # when the command ends (the database client would wait 10 s for its answer).
        await ws.send({"type": "ack", "last_event_id": delivered})
        for _ in range(30):
            if queue.acked_id == delivered:
                break
            await asyncio.sleep(0.1)
        assert queue.acked_id == delivered
        with pytest.raises(TimeoutError):
            await ws.next_frame("reply", timeout=0.3)  # the command is still waiting
        # Commands queue up behind it, in order, up to 64; past that they are refused at once.
        # (Within the rate limit: a burst of 60 frames, then 20 more a second.)
        for i in range(55):
            await ws.send({"type": "me", "ref": i})
        await asyncio.sleep(1.0)
        for i in range(55, 69):
            await ws.send({"type": "me", "ref": i})
        refused = [await ws.next_frame("reply", timeout=3) for _ in range(5)]
        assert [(r["ref"], r["error"]["code"]) for r in refused] == [
            (i, "rate_limited") for i in range(64, 69)
        ]
    finally:
        os.kill(pid, signal.SIGCONT)
    replies = [await ws.next_frame("reply", timeout=15) for _ in range(65)]
    # Once the database is back: the stuck send (stored, or 503), then the rest in order.
    assert [r["ref"] for r in replies] == ["stuck", *range(64)]
    assert all(r["ok"] for r in replies[1:])
    ws.close()
