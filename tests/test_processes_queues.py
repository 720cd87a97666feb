"""Event queues in Redis (--redis-url): a client resumes on any process, over either transport,
and the clients of a killed process resume on the others, every event exactly once, in order."""

from __future__ import annotations

import asyncio
import itertools
import signal
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from tests.client import ApiClient, WsClient
from tests.test_processes import RedisServer, redis_server, redis_url
from tests.test_processes_delivery import processes

__all__ = ["processes", "redis_server", "redis_url"]  # the fixtures, shared


class Reader:
    """One client's queue, read over whichever transport and process: every item it got."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.queue_id: str | None = None
        self.epoch: str | None = None
        self.cursor = 0
        self.items: list[tuple[int, dict[str, Any]]] = []

    def take(self, event_id: int, event: dict[str, Any]) -> None:
        assert event_id == self.cursor + 1, (event_id, self.cursor)  # no gap, no repeat
        self.items.append((event_id, event))
        self.cursor = event_id

    async def connect(self, host: str) -> WsClient:
        """A WebSocket on host, resuming the queue (it must resume once there is one)."""
        ws = await WsClient.connect(f"ws://{host}/ws")
        resume = {"queue_id": self.queue_id, "epoch": self.epoch, "last_event_id": self.cursor}
        hello = await ws.auth(self.token, **(resume if self.queue_id else {}))
        assert hello["resumed"] is bool(self.queue_id), hello
        self.queue_id, self.epoch = hello["queue_id"], hello["epoch"]
        return ws

    async def read(self, ws: WsClient, seconds: float) -> None:
        """Take the socket's events for this long, acknowledging as a client does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await ws.event(timeout=left)
            except TimeoutError:
                break
            self.take(frame["id"], frame["event"])
            if frame["id"] % 5 == 0:
                try:
                    await ws.send({"type": "ack", "last_event_id": frame["id"]})
                except tornado.websocket.WebSocketClosedError as exc:  # closed since the event
                    raise ConnectionError("closed while acknowledging") from exc

    async def poll_for(self, host: str, seconds: float) -> None:
        """Long-poll host for this long, resuming the queue (never a new one's hello)."""
        api = ApiClient(f"http://{host}", self.token)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while deadline - loop.time() > 0:
            query = f"queue_id={self.queue_id}&epoch={self.epoch}&last_event_id={self.cursor}"
            reply = await api.get(f"/api/events?timeout=1&{query}")
            assert reply.status == 200, reply.body
            assert reply.body["queue_id"] == self.queue_id, reply.body  # resumed: no new queue
            for item in reply.body["events"]:
                self.take(item["id"], item["event"])

    def bodies(self) -> list[str]:
        return [e["message"]["body"] for _, e in self.items if e["type"] == "message.new"]


async def dm_between(host: str, one: dict[str, Any], other: dict[str, Any]) -> str:
    api = ApiClient(f"http://{host}", one["token"])
    dm = await api.post("/api/conversations/dm", {"user_id": other["user"]["id"]})
    assert dm.status == 200, dm.body
    return str(dm.body["conversation"]["id"])


async def test_one_client_moves_between_processes_and_transports_and_gets_every_event_once(
    processes: list[tuple[Any, str]],
) -> None:
    hosts = [host for _, host in processes]
    alice = await ApiClient(f"http://{hosts[0]}").register("alice")
    bob = await ApiClient(f"http://{hosts[1]}").register("bob")
    cid = await dm_between(hosts[1], bob, alice)
    reader = Reader(alice["token"])
    sent: list[str] = []
    done = asyncio.Event()

    async def send() -> None:  # bob, through every process in turn
        for n in itertools.count():
            if done.is_set():
                return
            api = ApiClient(f"http://{hosts[n % 3]}", bob["token"])
            reply = await api.post(f"/api/conversations/{cid}/messages", {"body": f"m{n}"})
            assert reply.status == 201, reply.body
            sent.append(f"m{n}")
            await asyncio.sleep(0.02)

    ws = await reader.connect(hosts[0])
    sender = asyncio.create_task(send())
    await reader.read(ws, 1.5)  # WebSocket on A, left open
    await reader.poll_for(hosts[1], 1.5)  # long-polling on B
    assert await ws.wait_closed() == 4409  # B took the queue over: A's socket is told
    ws = await reader.connect(hosts[2])  # WebSocket on C
    await reader.read(ws, 1.5)
    done.set()
    await sender
    await reader.read(ws, 2)  # what is still on its way
    assert len(sent) > 30, len(sent)
    assert reader.bodies() == sent  # every one, once, in order, across the three moves


async def test_the_clients_of_a_killed_process_resume_on_the_others_losing_nothing(
    processes: list[tuple[Any, str]],
) -> None:
    (doomed, a), (_, b), (_, c) = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{a}").register("bob")
    cid = await dm_between(a, alice, bob)
    readers = {"alice": Reader(alice["token"]), "bob": Reader(bob["token"])}
    acknowledged: dict[str, list[str]] = {"alice": [], "bob": []}
    sockets = {name: await reader.connect(a) for name, reader in readers.items()}

    tokens = {"alice": alice["token"], "bob": bob["token"]}

    async def chat(name: str, host: str, count: int) -> None:
        """Send count messages through host, each acknowledged by its reply (a send whose
        reply the kill took is not counted: the client would retry it)."""
        api = ApiClient(f"http://{host}", tokens[name])
        for n in range(count):
            body = f"{name}{len(acknowledged[name])}-{n}"
            try:
                reply = await api.post(f"/api/conversations/{cid}/messages", {"body": body})
            except (OSError, tornado.httpclient.HTTPClientError):
                return  # the process is gone
            if reply.status != 201:
                assert reply.status == 599, reply.body  # the process went away meanwhile
                return
            acknowledged[name].append(body)
            await asyncio.sleep(0.01)

    async def read_until_closed(name: str) -> None:
        with pytest.raises(ConnectionError):
            await readers[name].read(sockets[name], 30)

    reading = [asyncio.create_task(read_until_closed(name)) for name in readers]
    chatting = [asyncio.create_task(chat(name, a, 1000)) for name in readers]
    await asyncio.sleep(1.5)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=10)
    await asyncio.gather(*chatting, *reading)
    assert all(len(sent) > 20 for sent in acknowledged.values()), acknowledged

    # Each resumes on another process (resumed: true) and they chat on.
    for name, host in (("alice", b), ("bob", c)):
        sockets[name] = await readers[name].connect(host)
    await asyncio.gather(chat("alice", b, 20), chat("bob", c, 20))

    async def read_all(name: str, other: str) -> None:
        """Until every message the other was acknowledged came (a message after a seq the
        killed process took waits up to HOLD_MS, 2 s), within 15 s."""
        deadline = asyncio.get_running_loop().time() + 15
        while not set(acknowledged[other]) <= set(readers[name].bodies()):
            if asyncio.get_running_loop().time() > deadline:
                break
            await readers[name].read(sockets[name], 0.5)
        await readers[name].read(sockets[name], 0.5)  # and nothing more, nothing twice

    await asyncio.gather(read_all("alice", "bob"), read_all("bob", "alice"))
    for name, other in (("alice", "bob"), ("bob", "alice")):
        got = [body for body in readers[name].bodies() if body.startswith(other)]
        assert len(set(got)) == len(got), got  # nothing twice
        assert [body for body in got if body in acknowledged[other]] == acknowledged[other]
        # At most the one send the kill interrupted arrived without its reply.
        assert len(got) - len(acknowledged[other]) <= 1, (got, acknowledged[other])


async def test_a_socket_or_poll_that_cannot_reach_the_queues_is_told_to_try_again(
    processes: list[tuple[Any, str]], redis_server: RedisServer
) -> None:
    (_, a), (_, b), _ = processes
    alice = await ApiClient(f"http://{a}").register("alice")
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        ws = await WsClient.connect(f"ws://{a}/ws")
        await ws.send({"type": "auth", "token": alice["token"]})
        poll = ApiClient(f"http://{b}", alice["token"]).get("/api/events?timeout=1")
        closed, polled = await asyncio.gather(ws.wait_closed(timeout=15), poll)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    assert closed == 1013
    assert ws.conn.close_reason == "queues_unavailable"
    assert polled.status == 503, polled.body
    assert polled.body["error"]["code"] == "queues_unavailable", polled.body
    again = await WsClient.connect(f"ws://{a}/ws")
    assert (await again.auth(alice["token"]))["resumed"] is False  # works again at once
