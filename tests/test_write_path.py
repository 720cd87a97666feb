"""The database work of a send, counted by the database's own profiler (system.profile,
level 2, as on MongoDB): one insert per message in the steady state, sends that arrive
together stored by one insert, nothing written to the conversation per message, whatever the
group's size; and seqs that another server process took are skipped, not reused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import Member, join, open_dm, send
from tests.test_processes import redis_server, redis_url

__all__ = ["redis_server", "redis_url"]  # the fixtures of tests/test_processes.py

QUIET = {"activity_flush_secs": 3600.0}  # no periodic activity write inside a measurement


class Profiler:
    """The operations the server sends to the test's database, from its profiler."""

    def __init__(self, client: AsyncMongoClient[dict[str, Any]], db_name: str) -> None:
        self._db = client[db_name]

    async def start(self) -> None:
        await self._db.command({"profile": 0})
        await self._db.drop_collection("system.profile")
        await self._db.command({"profile": 2})

    async def ops(self) -> list[dict[str, Any]]:
        await self._db.command({"profile": 0})
        return [d async for d in self._db["system.profile"].find()]


def writes(ops: list[dict[str, Any]], collection: str) -> list[dict[str, Any]]:
    """The write commands (insert, update, delete) on one collection."""
    kinds = ("insert", "update", "delete")
    return [op for op in ops if op["ns"].endswith(f".{collection}") and op["op"] in kinds]


def inserted(ops: list[dict[str, Any]]) -> int:
    return sum(len(op["command"]["documents"]) for op in ops if op["op"] == "insert")


@pytest.fixture
async def profiler(database_uri: str, db_name: str) -> AsyncIterator[Profiler]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database_uri)
    try:
        yield Profiler(client, db_name)
    finally:
        await client.close()


async def pair(server: RunningServer) -> tuple[Member, Member, str]:
    alice = await join(server, "wp-a", "ws")
    bob = await join(server, "wp-b", "ws")
    conv = await open_dm(alice, bob)
    return alice, bob, conv["id"]


@pytest.mark.parametrize("transport", ["rest", "ws"])
async def test_a_send_costs_one_insert_and_nothing_else_written(
    make_server: ServerFactory, profiler: Profiler, transport: str
) -> None:
    server = await make_server(**QUIET)
    alice, bob, cid = await pair(server)
    alice.transport = transport
    await send(alice, cid, "warm-up")  # learns the conversation's last seq
    await profiler.start()
    for i in range(20):
        await send(alice, cid, f"m{i}")
    ops = await profiler.ops()
    assert len(writes(ops, "messages")) == 20 and inserted(writes(ops, "messages")) == 20
    others = [op for op in ops if op["op"] in ("insert", "update", "delete")]
    assert len(others) == 20, [(op["op"], op["ns"]) for op in others]
    # Nor is anything read per message: the seq, membership and blocks are known here.
    looked_up = (".messages", ".conversations", ".blocks")
    reads = [op for op in ops if op["op"] == "query" and op["ns"].endswith(looked_up)]
    assert not reads, reads
    seqs = [(await bob.event("message.new"))["message"]["seq"] for _ in range(21)]
    assert seqs == list(range(1, 22))


async def test_the_activity_reaches_its_own_documents_in_one_bulk_write(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    server = await make_server(**QUIET)
    alice, _, first = await pair(server)
    carol = await join(server, "wp-c", "ws")
    second = (await open_dm(alice, carol))["id"]
    await send(alice, first, "one")
    await send(alice, second, "two")
    # Meanwhile this process answers from memory: the list is ordered by the last message.
    listed = (await alice.call("conversations.list")).expect()["conversations"]
    assert [c["id"] for c in listed] == [second, first]
    assert [c["last_seq"] for c in listed] == [1, 1]
    await profiler.start()
    await server.service.activity.flush()
    ops = await profiler.ops()
    # Never the conversation's document, which holds the members (1,000 index entries for a
    # full group): a small document of its own.
    assert not writes(ops, "conversations")
    [update] = writes(ops, "conversation_activity")
    assert len(update["command"]["updates"]) == 2
    # A busy conversation's activity is rewritten once a minute, not at every flush.
    await send(alice, first, "three")
    await profiler.start()
    await server.service.activity.flush()
    assert not writes(await profiler.ops(), "conversation_activity")
    listed = (await alice.call("conversations.list")).expect()["conversations"]
    assert [(c["id"], c["last_seq"]) for c in listed] == [(first, 2), (second, 1)]
    await server.service.activity.flush(everything=True)  # as on shutdown
    # A process that knows nothing of it (here: a new one) reads the same from the database.
    other = await make_server(**QUIET)
    relisted = (
        await Member(other, {"id": alice.id, "username": alice.name}, alice.token, "rest").call(
            "conversations.list"
        )
    ).expect()["conversations"]
    assert [(c["id"], c["last_seq"]) for c in relisted] == [(first, 2), (second, 1)]
    assert [c["last_activity_at"] for c in relisted] == [c["last_activity_at"] for c in listed]


async def test_sends_that_arrive_together_share_an_insert(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    server = await make_server(**QUIET)
    pairs = [await pair(server) for _ in range(20)]
    for alice, _, cid in pairs:
        await send(alice, cid, "warm-up")
    await profiler.start()
    sent = await asyncio.gather(*(send(a, cid, "together") for a, _, cid in pairs))
    ops = writes(await profiler.ops(), "messages")
    assert inserted(ops) == 20
    assert len(ops) < 20, len(ops)  # fewer database writes than messages
    for (_, bob, _), message in zip(pairs, sent, strict=True):
        assert message["seq"] == 2
        got = [await bob.event("message.new") for _ in range(2)]
        assert got[1]["message"] == message
        await bob.no_event("message.new", wait=0.1)


async def test_a_retried_key_in_a_shared_insert_fails_alone(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    alice.transport = "rest"  # concurrent requests (one socket runs its commands in turn)
    original = await send(alice, cid, "first", client_msg_id="k-1")
    fresh = [send(alice, cid, f"new-{i}", client_msg_id=f"k-new-{i}") for i in range(10)]
    retried, *others = await asyncio.gather(send(alice, cid, "first", client_msg_id="k-1"), *fresh)
    assert retried == original
    assert sorted(m["body"] for m in others) == sorted(f"new-{i}" for i in range(10))
    delivered = [(await bob.event("message.new"))["message"] for _ in range(11)]
    assert [m["id"] for m in delivered].count(original["id"]) == 1
    assert [m["seq"] for m in delivered] == sorted(m["seq"] for m in delivered)
    await bob.no_event("message.new", wait=0.2)


async def test_a_1000_member_group_send_writes_only_the_message(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    # Within the tests' 2 s database timeout: a group of 1,000 was a 503 even on an idle
    # machine, its reads of 999 ids at once ({$in}) too slow for the embedded database.
    server = await make_server(**QUIET)
    owner = await join(server, "wp-owner", "rest")
    users = server.service.store.users
    others = [
        await users.create(f"wp-member-{i}", f"wp-member-{i}@example.com", "x") for i in range(999)
    ]
    group = (
        await owner.call("groups.create", name="big", member_ids=[u.id for u in others])
    ).expect(201)["conversation"]
    assert len(group["members"]) == 1000
    await send(owner, group["id"], "warm-up")
    await profiler.start()
    for i in range(5):
        await send(owner, group["id"], f"g{i}")
    ops = await profiler.ops()
    assert inserted(writes(ops, "messages")) == 5
    assert not writes(ops, "conversations")


async def test_seqs_another_process_took_are_skipped_never_reused(
    make_server: ServerFactory,
) -> None:
    one = await make_server()
    two = await make_server()
    alice, bob, cid = await pair(one)
    # The same users, signed in through the second process.
    alice2 = Member(two, {"id": alice.id, "username": alice.name}, alice.token, "rest")
    bob2 = Member(two, {"id": bob.id, "username": bob.name}, bob.token, "rest")
    stored = []
    for i in range(6):  # each process in turn, each believing it knows the last seq
        stored.append(await send(alice if i % 2 else alice2, cid, f"a{i}"))
        stored.append(await send(bob2 if i % 2 else bob, cid, f"b{i}"))
    seqs = [m["seq"] for m in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # A process that has not seen the conversation reads it all from the database. (Each
    # process's own view of another's latest messages comes with the broker, issue 15.)
    three = await make_server()
    reader = Member(three, {"id": bob.id, "username": bob.name}, bob.token, "rest")
    history = (await reader.call("messages.history", conversation_id=cid, limit=100)).expect()
    assert [m["id"] for m in history["messages"]] == [m["id"] for m in stored]


async def test_read_receipts_of_a_group_share_a_small_write_not_the_group_document(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    server = await make_server(**QUIET)
    owner = await join(server, "wp-reader-owner", "rest")
    readers = [await join(server, "wp-reader", "rest", online=False) for _ in range(20)]
    group = (
        await owner.call("groups.create", name="readers", member_ids=[r.id for r in readers])
    ).expect(201)["conversation"]
    message = await send(owner, group["id"], "read me")
    await profiler.start()
    replies = await asyncio.gather(
        *(r.call("conversations.read", conversation_id=group["id"], seq=1) for r in readers)
    )
    again = await readers[0].call("conversations.read", conversation_id=group["id"], seq=1)
    ops = await profiler.ops()
    assert [r.expect()["seq"] for r in replies] == [message["seq"]] * 20
    assert again.expect()["seq"] == 1  # already there: not moved, no event
    assert not writes(ops, "conversations")
    pointer_writes = writes(ops, "read_pointers")
    assert sum(len(op["command"]["updates"]) for op in pointer_writes) == 21
    assert len(pointer_writes) < 21, len(pointer_writes)
    shown = (await owner.call("groups.get", conversation_id=group["id"])).expect()
    assert shown["conversation"]["reads"] == {r.id: 1 for r in readers}


async def test_the_first_message_between_friends_writes_only_itself(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    from tests.test_privacy import befriend

    server = await make_server(**QUIET)
    alice, bob, cid = await pair(server)
    carol = await join(server, "wp-c", "ws")
    stranger_dm = (await open_dm(carol, bob))["id"]
    await befriend(alice, bob)
    await profiler.start()
    await send(alice, cid, "hi friend")  # settled by the friendship: nothing to record
    friends_ops = await profiler.ops()
    await profiler.start()
    await send(carol, stranger_dm, "hi stranger")  # a request: its state is recorded once
    await send(carol, stranger_dm, "still me")
    stranger_ops = await profiler.ops()

    def written(ops: list[dict[str, Any]]) -> list[str]:
        return [op["ns"].split(".", 1)[1] for op in ops if op["op"] in ("insert", "update")]

    assert written(friends_ops) == ["messages"], friends_ops
    assert sorted(written(stranger_ops)) == ["dm_states", "messages", "messages"], stranger_ops


async def test_a_connect_storm_records_its_sessions_uses_in_a_few_writes(
    make_server: ServerFactory, profiler: Profiler, database_uri: str, db_name: str
) -> None:
    from tests.client import WsClient
    from tests.test_realtime import signed_in

    first = await make_server(**QUIET)
    tokens = [(await signed_in(first, f"wp-storm{i:02d}"))[1] for i in range(40)]
    # A second process knows none of these sessions, each last used two minutes ago: each
    # connect is a use to record (last used, address), as after a restart when everyone
    # returns.
    second = await make_server(**QUIET)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database_uri, tz_aware=True)
    sessions = client[db_name]["sessions"]
    two_minutes_ago = datetime.now(UTC) - timedelta(minutes=2)
    await sessions.update_many({}, {"$set": {"last_used_at": two_minutes_ago}})
    before = {d["_id"]: d["last_used_at"] async for d in sessions.find()}
    await profiler.start()
    sockets = await asyncio.gather(*(WsClient.connect(second.ws_url) for _ in tokens))
    await asyncio.gather(*(ws.auth(token) for ws, token in zip(sockets, tokens, strict=True)))
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        used = {d["_id"]: d["last_used_at"] async for d in sessions.find()}
        fresh = [sid for sid, when in used.items() if when > before[sid]]
        if len(fresh) == len(tokens) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    ops = await profiler.ops()
    await client.close()
    assert len(fresh) == len(tokens)  # every use recorded
    session_writes = writes(ops, "sessions")
    assert sum(len(op["command"]["updates"]) for op in session_writes) == len(tokens)
    assert len(session_writes) <= len(tokens) // 4, len(session_writes)  # together, not one each
    for ws in sockets:
        ws.close()


async def test_a_use_another_process_recorded_within_the_minute_is_not_written_again(
    make_server: ServerFactory, profiler: Profiler, database_uri: str, db_name: str
) -> None:
    """At most one write of a session's use a minute, across processes: the second one reads
    the recorded use with the session and takes it as its own (a connect storm over two
    processes wrote half its sessions, and the database's CPU went to those writes)."""
    from tests.client import WsClient
    from tests.test_realtime import signed_in

    first = await make_server(**QUIET)
    tokens = [(await signed_in(first, f"wp-fresh{i:02d}"))[1] for i in range(10)]
    second = await make_server(**QUIET)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database_uri, tz_aware=True)
    sessions = client[db_name]["sessions"]
    before = {d["_id"]: d["last_used_at"] async for d in sessions.find()}
    await profiler.start()
    sockets = await asyncio.gather(*(WsClient.connect(second.ws_url) for _ in tokens))
    await asyncio.gather(*(ws.auth(token) for ws, token in zip(sockets, tokens, strict=True)))
    for ws in sockets:  # a second connect of each, as a page reloaded
        ws.close()
    again = await asyncio.gather(*(WsClient.connect(second.ws_url) for _ in tokens))
    await asyncio.gather(*(ws.auth(token) for ws, token in zip(again, tokens, strict=True)))
    await asyncio.sleep(0.5)  # a write would have been sent by now (test above: at once)
    ops = await profiler.ops()
    assert writes(ops, "sessions") == []
    assert {d["_id"]: d["last_used_at"] async for d in sessions.find()} == before
    await client.close()
    for ws in again:
        ws.close()


async def test_first_messages_after_a_start_share_their_reads(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    from tests.test_privacy import befriend

    first = await make_server(**QUIET)
    pairs = [await pair(first) for _ in range(20)]
    for alice, bob, _ in pairs:
        await befriend(alice, bob)
    # A process that has not seen these conversations yet (as after a restart): the first
    # message of each reads the conversation, its newest message, the friendship and the
    # recipient's settings. Sent together, they read together.
    second = await make_server(**QUIET)
    senders = [
        (Member(second, {"id": a.id, "username": a.name}, a.token, "ws"), cid)
        for a, _, cid in pairs
    ]
    await profiler.start()
    sent = await asyncio.gather(*(send(member, cid, "after the start") for member, cid in senders))
    ops = await profiler.ops()
    assert [m["seq"] for m in sent] == [1] * 20

    def finds(collection: str) -> int:
        return sum(1 for op in ops if op["op"] == "query" and op["ns"].endswith(f".{collection}"))

    shared = {name: finds(name) for name in ("conversations", "friendships", "user_settings")}
    assert all(0 < n < 10 for n in shared.values()), shared


async def test_a_presence_change_is_read_by_the_process_that_announces_it_alone(
    make_server: ServerFactory, profiler: Profiler, redis_url: str
) -> None:
    """Several processes: the one holding the user reads its audience and delivers through
    the shared queues; the others, none of whose queues subscribed to the user, read nothing.
    Before, every process read every audience (blocks both ways, friendships, conversations):
    a connect storm on two processes cost the database twice the presence reads of one."""
    from tests.client import WsClient
    from tests.test_privacy import befriend

    options = {**QUIET, "redis_url": redis_url, "presence_grace_secs": 0.1}
    a = await make_server(**options)
    await a.service.start_bus()
    alice, bob = await join(a, "wp-pa", "rest", online=False), await join(a, "wp-pb", "rest")
    await befriend(alice, bob)
    first = await WsClient.connect(a.ws_url)  # alice online on A: A reads her audience once
    await first.auth(alice.token)
    assert bob.ws is not None
    assert (await bob.ws.event("presence"))["event"]["status"] == "online"
    first.close()
    assert (await bob.ws.event("presence"))["event"]["status"] == "offline"
    bob.ws.close()
    # A process started now knows nobody's audience; bob is online there.
    b = await make_server(**options)
    await b.service.start_bus()
    watcher = await WsClient.connect(b.ws_url)
    await watcher.auth(bob.token)
    await asyncio.sleep(0.5)  # B's own announcement of bob (B reads his audience) is over
    await profiler.start()
    again = await WsClient.connect(a.ws_url)
    await again.auth(alice.token)
    online = await watcher.event("presence")  # delivered to bob's queue on B all the same
    assert (online["event"]["user_id"], online["event"]["status"]) == (alice.id, "online")
    await asyncio.sleep(0.5)  # B heard the announcement by now
    ops = await profiler.ops()
    audience_reads = [
        op["ns"]
        for op in ops
        if op["op"] == "query"
        and op["ns"].rsplit(".", 1)[-1] in ("blocks", "friendships", "conversations")
    ]
    assert audience_reads == []
    again.close()
    watcher.close()
