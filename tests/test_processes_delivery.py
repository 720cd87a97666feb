"""Delivery across several server processes on one database and one Redis: events, typing and
presence reach users connected to other processes, live, over both transports."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.client import ApiClient, WsClient
from tests.test_processes import (
    RedisServer,
    redis_server,
    redis_url,
    start_processes,
    stop_all,
)

__all__ = ["redis_server", "redis_url"]  # the fixtures of test_processes, shared

PARALLEL = 3  # sends in flight per sender
GRACE = "1"  # --presence-grace: seconds a closed connection still counts as online


@pytest.fixture
async def processes(
    database_uri: str, tmp_path: Path, redis_url: str
) -> AsyncIterator[list[tuple[Any, str]]]:
    started = await start_processes(
        database_uri, tmp_path, 3, "--redis-url", redis_url, "--presence-grace", GRACE
    )
    try:
        yield started
    finally:
        stop_all(started)


class Poller:
    """A long-polling client of one process: its queue, its cursor, the events it got."""

    def __init__(self, host: str, token: str) -> None:
        self.api = ApiClient(f"http://{host}", token)
        self.queue_id: str | None = None
        self.cursor = 0

    async def poll(self, timeout: int = 5) -> list[dict[str, Any]]:
        query = f"timeout={timeout}&last_event_id={self.cursor}"
        if self.queue_id:
            query += f"&queue_id={self.queue_id}"
        reply = await self.api.get(f"/api/events?{query}")
        assert reply.status == 200, reply.body
        self.queue_id = reply.body["queue_id"]
        items = reply.body["events"]
        if items and items[-1]["id"]:
            self.cursor = items[-1]["id"]
        return [item["event"] for item in items]

    async def event(self, kind: str, timeout: float = 8) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in await self.poll(timeout=2):
                if event["type"] == kind:
                    return event
        raise AssertionError(f"no {kind} event within {timeout} s")


async def test_messages_typing_and_group_events_reach_users_on_other_processes(
    processes: list[tuple[Any, str]],
) -> None:
    (_, a), (_, b), (_, c) = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{b}").register("bob")
    carol = await ApiClient(f"http://{c}").register("carol")
    alice_ws = await WsClient.connect(f"ws://{a}/ws")
    await alice_ws.auth(alice["token"])
    bob_ws = await WsClient.connect(f"ws://{b}/ws")
    await bob_ws.auth(bob["token"])
    carol_lp = Poller(c, carol["token"])
    assert (await carol_lp.poll())[0]["type"] == "hello"

    dm = await alice_ws.command("conversations.open_dm", user_id=bob["user"]["id"])
    dm_id = dm["data"]["conversation"]["id"]
    sent = await alice_ws.command("messages.send", conversation_id=dm_id, body="hi bob")
    assert sent["ok"], sent
    got = await bob_ws.event("message.new")
    assert got["event"]["message"]["body"] == "hi bob"

    assert (await bob_ws.command("typing", conversation_id=dm_id))["ok"]
    typing = await alice_ws.event("typing")
    assert typing["event"]["user_id"] == bob["user"]["id"]

    group = await ApiClient(f"http://{a}", alice["token"]).post(
        "/api/groups",
        {"name": "three", "member_ids": [bob["user"]["id"], carol["user"]["id"]]},
    )
    assert group.status == 201, group.body
    group_id = group.body["conversation"]["id"]
    assert (await carol_lp.event("group.created"))["conversation"]["id"] == group_id

    reply = await ApiClient(f"http://{c}", carol["token"]).post(
        f"/api/conversations/{group_id}/messages", {"body": "from carol"}
    )
    assert reply.status == 201, reply.body
    for ws in (alice_ws, bob_ws):
        while (frame := await ws.event("message.new"))["event"]["message"]["body"] != (
            "from carol"
        ):
            pass
        assert frame["event"]["message"]["conversation_id"] == group_id
    # The sender's own long-poll gets it too, exactly once.
    mine = [e for e in await carol_lp.poll(timeout=1) if e["type"] == "message.new"]
    assert [e["message"]["body"] for e in mine] == ["from carol"]


async def test_a_conversation_written_through_two_processes_reaches_members_in_seq_order(
    processes: list[tuple[Any, str]],
) -> None:
    """Two processes allocate seqs of one group at once; a member on a third gets every
    message.new once and in seq order, though each process publishes its own as soon as it is
    stored (Redis holds a later seq back until the earlier one is published)."""
    (_, a), (_, b), (_, c) = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{b}").register("bob")
    carol = await ApiClient(f"http://{c}").register("carol")
    group = await ApiClient(f"http://{a}", alice["token"]).post(
        "/api/groups",
        {"name": "race", "member_ids": [bob["user"]["id"], carol["user"]["id"]]},
    )
    group_id = group.body["conversation"]["id"]
    bob_ws = await WsClient.connect(f"ws://{b}/ws")
    await bob_ws.auth(bob["token"])

    async def send(host: str, token: str, name: str) -> None:
        api = ApiClient(f"http://{host}", token)
        for i in range(60):
            replies = await asyncio.gather(
                *(
                    api.post(f"/api/conversations/{group_id}/messages", {"body": f"{name} {i} {j}"})
                    for j in range(PARALLEL)
                )
            )
            assert [r.status for r in replies] == [201] * PARALLEL, [r.body for r in replies]

    await asyncio.gather(send(a, alice["token"], "alice"), send(c, carol["token"], "carol"))
    seqs = []
    while len(seqs) < 120 * PARALLEL:
        frame = await bob_ws.event("message.new", timeout=10)
        seqs.append(frame["event"]["message"]["seq"])
    assert seqs == list(range(1, 120 * PARALLEL + 1))


async def presence_asked(host: str, token: str, username: str) -> str:
    """The user's presence as a process answers it in a search (from its memory)."""
    found = await ApiClient(f"http://{host}", token).get(f"/api/users?q={username}")
    assert found.status == 200, found.body
    (user,) = [u for u in found.body["users"] if u["username"] == username]
    return str(user["presence"])


async def presence_of(ws: WsClient, user_id: str, timeout: float = 8) -> str:
    while True:
        frame = await ws.event("presence", timeout=timeout)
        if frame["event"]["user_id"] == user_id:
            return str(frame["event"]["status"])


async def test_presence_crosses_processes_and_a_move_to_another_process_does_not_flap(
    processes: list[tuple[Any, str]],
) -> None:
    (_, a), (_, b), (_, c) = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{b}").register("bob")
    bob_api = ApiClient(f"http://{b}", bob["token"])
    dm = await bob_api.post("/api/conversations/dm", {"user_id": alice["user"]["id"]})
    assert dm.status == 200, dm.body  # DM partners see each other's presence
    bob_ws = await WsClient.connect(f"ws://{b}/ws")
    await bob_ws.auth(bob["token"])

    alice_ws = await WsClient.connect(f"ws://{a}/ws")
    await alice_ws.auth(alice["token"])
    assert await presence_of(bob_ws, alice["user"]["id"]) == "online"
    # Asked on a third process, which holds neither of them.
    assert await presence_asked(c, bob["token"], "alice") == "online"

    # A reload onto another process, within the grace: no offline in between.
    alice_ws.close()
    moved = await WsClient.connect(f"ws://{c}/ws")
    await moved.auth(alice["token"])
    await asyncio.sleep(float(GRACE) + 2)
    with pytest.raises(TimeoutError):  # no presence event at all
        await presence_of(bob_ws, alice["user"]["id"], timeout=1)

    moved.close()
    assert await presence_of(bob_ws, alice["user"]["id"]) == "offline"


async def test_the_users_of_a_killed_process_go_offline_unless_they_reconnect_elsewhere(
    processes: list[tuple[Any, str]],
) -> None:
    (doomed, a), (_, b), (_, c) = processes
    stays = await ApiClient(f"http://{a}").register("stays")
    leaves = await ApiClient(f"http://{a}").register("leaves")
    watcher = await ApiClient(f"http://{b}").register("watcher")
    watcher_api = ApiClient(f"http://{b}", watcher["token"])
    for user in (stays, leaves):
        dm = await watcher_api.post("/api/conversations/dm", {"user_id": user["user"]["id"]})
        assert dm.status == 200, dm.body
    watcher_ws = await WsClient.connect(f"ws://{b}/ws")
    await watcher_ws.auth(watcher["token"])
    for user in (stays, leaves):
        ws = await WsClient.connect(f"ws://{a}/ws")
        await ws.auth(user["token"])
        assert await presence_of(watcher_ws, user["user"]["id"]) == "online"

    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=10)
    again = await WsClient.connect(f"ws://{c}/ws")
    await again.auth(stays["token"])  # back on another process, at once

    started = time.monotonic()
    changes: list[tuple[str, str]] = []
    while time.monotonic() - started < 30 and ("offline" not in {s for _, s in changes}):
        frame = await watcher_ws.event("presence", timeout=31)
        changes.append((frame["event"]["user_id"], frame["event"]["status"]))
    took = time.monotonic() - started
    assert changes == [(leaves["user"]["id"], "offline")], changes
    assert took < 30, took
    # The one who came back never flapped: still online, asked anywhere.
    assert await presence_asked(b, watcher["token"], "stays") == "online"
    assert await presence_asked(c, watcher["token"], "leaves") == "offline"


async def test_a_lost_subscription_loses_no_event_the_queue_reads_what_it_missed(
    processes: list[tuple[Any, str]], redis_url: str
) -> None:
    (_, a), (_, b), _ = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{a}").register("bob")
    alice_api = ApiClient(f"http://{a}", alice["token"])
    dm = await alice_api.post("/api/conversations/dm", {"user_id": bob["user"]["id"]})
    cid = dm.body["conversation"]["id"]
    ws = await WsClient.connect(f"ws://{b}/ws")
    await ws.auth(bob["token"])
    # Events sent while a process is not subscribed never reach it through pub/sub: Redis
    # drops the subscriptions' connections, as when it restarts or the network breaks.
    client = aioredis.from_url(redis_url)
    try:
        await client.client_kill_filter(_type="pubsub")
    finally:
        await client.aclose()
    bodies = [f"m{n}" for n in range(5)]
    for body in bodies:
        sent = await alice_api.post(f"/api/conversations/{cid}/messages", {"body": body})
        assert sent.status == 201, sent.body
    # The queue is in Redis: the process reads what it missed once subscribed again, and the
    # socket goes on (no 4410, no state to read again).
    got = [(await ws.event("message.new", timeout=10))["event"]["message"]["body"] for _ in bodies]
    assert got == bodies


async def test_a_redis_stopped_for_10_s_loses_nothing_acknowledged_and_recovers_by_itself(
    processes: list[tuple[Any, str]], redis_server: RedisServer
) -> None:
    (_, a), (_, b), _ = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{b}").register("bob")
    alice_api = ApiClient(f"http://{a}", alice["token"])
    dm = await alice_api.post("/api/conversations/dm", {"user_id": bob["user"]["id"]})
    cid = dm.body["conversation"]["id"]
    bob_api = ApiClient(f"http://{b}", bob["token"])

    acknowledged: list[int] = []
    acknowledged_at: list[float] = []  # when each was
    seen: list[int] = []  # bob's view: live events, then history after a lost queue
    stop_sending = asyncio.Event()

    async def send() -> None:
        n = 0
        while not stop_sending.is_set():
            n += 1
            reply = await alice_api.post(
                f"/api/conversations/{cid}/messages", {"body": f"m{n}", "client_msg_id": f"k{n}"}
            )
            if reply.status == 201:
                acknowledged.append(reply.body["message"]["seq"])
                acknowledged_at.append(time.monotonic())
            await asyncio.sleep(0.05)

    async def read_as_bob() -> None:
        reconnects = 0
        while True:
            ws = await WsClient.connect(f"ws://{b}/ws")
            try:
                await ws.send({"type": "auth", "token": bob["token"]})
                hello = await ws.next_frame("hello", timeout=10)
            except ConnectionError:  # 1013: the queues (in Redis) cannot be reached now
                reconnects += 1
                await asyncio.sleep(0.5)
                continue
            if not hello["resumed"] and seen:  # a new queue: read what was missed
                page = await bob_api.get(
                    f"/api/conversations/{cid}/messages?after_seq={seen[-1]}&limit=100"
                )
                seen.extend(m["seq"] for m in page.body["messages"])
            try:
                while True:
                    frame = await ws.event("message.new", timeout=3)
                    seq = frame["event"]["message"]["seq"]
                    if not seen or seq > seen[-1]:
                        seen.append(seq)
            except TimeoutError:
                if stop_sending.is_set():
                    return
            except ConnectionError:
                reconnects += 1

    reader = asyncio.create_task(read_as_bob())
    sender = asyncio.create_task(send())
    await asyncio.sleep(2)
    redis_server.process.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        await asyncio.sleep(10)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    await asyncio.sleep(8)  # the bus finds Redis again by itself
    stop_sending.set()
    await sender
    await asyncio.wait_for(reader, 30)
    # Sends went on while Redis was away (how many depends on the machine's load).
    assert [t for t in acknowledged_at if stopped_at + 1 < t < resumed_at], acknowledged_at
    assert len(acknowledged) > 20, len(acknowledged)
    assert sorted(set(seen)) == seen  # nothing twice, in order
    assert set(acknowledged) <= set(seen), sorted(set(acknowledged) - set(seen))[:10]

    # Live delivery across processes works again, without a restart.
    ws = await WsClient.connect(f"ws://{b}/ws")
    await ws.auth(bob["token"])
    after = await alice_api.post(f"/api/conversations/{cid}/messages", {"body": "after"})
    assert after.status == 201
    assert (await ws.event("message.new", timeout=5))["event"]["message"]["body"] == "after"
