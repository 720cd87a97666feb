"""The delivery guarantee over both transports: every event exactly once, in order, across
reconnects and transport switches; and resume failures that are never silent."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.simple_httpclient

from tests.client import WsClient
from tests.conftest import RunningServer, ServerFactory

TOTAL_EVENTS = 1000
TRANSPORTS = ("websocket", "longpoll")


class Consumer:
    """A client that owns one queue and may read it over either transport.

    Like a real client, its cursor is the last event it processed, and it resumes from it.
    Every event must arrive with the next id (no gap, no duplicate), so an assertion fails at
    the first violation instead of at the end.
    """

    def __init__(self, server: RunningServer, token: str, rng: random.Random) -> None:
        self.server = server
        self.token = token
        self.rng = rng
        self.api = server.client(token)
        self.queue_id: str | None = None
        self.epoch: str | None = None
        self.cursor = 0
        self.received: list[int] = []
        self.sessions: list[str] = []  # the transport of each session, in order
        self.taken_over: list[WsClient] = []  # sockets left open for the next transport to steal
        self.attached = False  # whether the current session reached the server

    @property
    def done(self) -> bool:
        return len(self.received) >= TOTAL_EVENTS

    def take(self, item: dict[str, Any]) -> None:
        assert item["id"] == self.cursor + 1, f"expected id {self.cursor + 1}, got {item['id']}"
        event = item["event"]
        assert event["type"] == "test.event", event
        self.received.append(event["n"])
        self.cursor = item["id"]

    async def over_websocket(self, budget: int) -> None:
        """Resume over a new socket, read up to budget events, then leave one way or another."""
        self.sessions.append("websocket")
        ws = await WsClient.connect(self.server.ws_url)
        resume = (
            {"queue_id": self.queue_id, "epoch": self.epoch, "last_event_id": self.cursor}
            if self.queue_id
            else {}
        )
        hello = await ws.auth(self.token, **resume)
        assert hello["resumed"] is (self.queue_id is not None)
        assert hello["last_event_id"] == self.cursor
        if self.queue_id is not None:
            assert hello["queue_id"] == self.queue_id
        self.queue_id, self.epoch = hello["queue_id"], hello["epoch"]
        self.attached = True
        taken = 0
        while taken < budget and not self.done:
            self.take(await ws.event(timeout=5))
            taken += 1
            if self.rng.random() < 0.03:
                # Acknowledge now and then, as a client does every few seconds.
                await ws.send({"type": "ack", "last_event_id": self.cursor})
        how = self.rng.random()
        if how < 0.4:
            ws.close()  # clean close; frames in flight are lost and must come again
            await ws.wait_closed()  # reads (and drops) them until the server's close frame
        elif how < 0.7:
            ws.conn.protocol.stream.close()  # type: ignore[union-attr]  # abrupt drop
        else:
            self.taken_over.append(ws)  # left open: the next transport must take it over

    async def over_longpoll(self, polls: int) -> None:
        """Poll a few times with the cursor; sometimes give up on a poll mid-flight."""
        self.sessions.append("longpoll")
        for _ in range(polls):
            if self.done:
                return
            query: dict[str, Any] = {"last_event_id": self.cursor, "timeout": 2}
            if self.queue_id:
                query.update(queue_id=self.queue_id, epoch=self.epoch)
            if self.queue_id and self.rng.random() < 0.2:
                # The client goes away before the answer arrives (it may have been sent):
                # the same events must come again on the next poll.
                with contextlib.suppress(tornado.simple_httpclient.HTTPTimeoutError):
                    await self.api.get(
                        f"/api/events?{urlencode(query)}", timeout=self.rng.uniform(0.001, 0.05)
                    )
                continue
            response = await self.api.get(f"/api/events?{urlencode(query)}", timeout=10)
            assert response.status == 200, response.body
            self.attached = True
            items = response.body["events"]
            if self.queue_id is None:
                [hello] = items
                assert hello["id"] == 0 and hello["event"]["type"] == "hello"
                assert hello["event"]["resumed"] is False
                self.queue_id = response.body["queue_id"]
                self.epoch = hello["event"]["epoch"]
                continue
            assert response.body["queue_id"] == self.queue_id
            if items and self.rng.random() < 0.2:
                # The client dies halfway through a batch: the rest must come again.
                for item in items[: self.rng.randint(0, len(items) - 1)]:
                    self.take(item)
                return
            for item in items:
                self.take(item)

    def close(self) -> None:
        self.api.close()


@pytest.mark.parametrize("mode", ["websocket", "longpoll", "switch"])
async def test_every_event_exactly_once_in_order_across_reconnects(
    server: RunningServer, mode: str
) -> None:
    rng = random.Random(f"delivery-{mode}")
    api = server.client()
    reply = await api.register("alice")
    user_id = reply["user"]["id"]
    consumer = Consumer(server, reply["token"], rng)

    def pick() -> str:
        # "switch" alternates: how many sessions the consumer needs depends on timing, and a
        # random choice then sometimes switched only 3 times in 10 sessions (the check below).
        if mode != "switch":
            return mode
        return TRANSPORTS[len(consumer.sessions) % len(TRANSPORTS)]

    async def session(transport: str, first: bool = False) -> None:
        left_open, consumer.taken_over = consumer.taken_over, []
        consumer.attached = False
        if transport == "websocket":
            await consumer.over_websocket(budget=0 if first else rng.randint(1, 150))
        else:
            await consumer.over_longpoll(polls=1 if first else rng.randint(1, 4))
        if consumer.attached:
            # The socket left open was taken over by this session's transport.
            for ws in left_open:
                assert await ws.wait_closed() == 4409
        else:
            consumer.taken_over += left_open

    # The queue exists before anything is published to it.
    await session(pick(), first=True)
    assert consumer.queue_id is not None

    async def produce() -> None:
        for n in range(TOTAL_EVENTS):
            server.service.publish([user_id], {"type": "test.event", "n": n})
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0, 0.01))  # spread over a second or two

    producer = asyncio.create_task(produce())
    rounds = 0
    while not consumer.done:
        rounds += 1
        assert rounds < 500, "no progress"
        if rng.random() < 0.3:
            await asyncio.sleep(rng.uniform(0, 0.05))  # offline for a moment
        await session(pick())
    await producer
    for ws in consumer.taken_over:
        ws.close()
        await ws.wait_closed()

    assert consumer.received == list(range(TOTAL_EVENTS))
    assert len(consumer.sessions) >= 10, consumer.sessions
    if mode == "switch":
        switches = sum(
            a != b for a, b in zip(consumer.sessions, consumer.sessions[1:], strict=False)
        )
        assert switches >= 5, consumer.sessions
    # Nothing more arrives: the queue holds no extra event.
    queue = server.service.registry.get(consumer.queue_id)
    assert queue is not None and queue.last_event_id == TOTAL_EVENTS
    consumer.close()
    api.close()


# -- resume failures: a new queue, and hello says so ---------------------------------------


async def open_queue(server: RunningServer, token: str, transport: str) -> tuple[str, str]:
    """Create a queue over the transport and leave; returns (queue_id, epoch)."""
    if transport == "websocket":
        ws = await WsClient.connect(server.ws_url)
        hello = await ws.auth(token)
        ws.close()
        await ws.wait_closed()
        return hello["queue_id"], hello["epoch"]
    api = server.client(token)
    response = await api.get("/api/events")
    api.close()
    hello = response.body["events"][0]["event"]
    return response.body["queue_id"], hello["epoch"]


async def resume(
    server: RunningServer, token: str, transport: str, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Resume over the transport; returns (hello, items received after it).

    A long-poll that resumed has no hello: a stand-in with resumed=True is returned.
    """
    if transport == "websocket":
        ws = await WsClient.connect(server.ws_url)
        hello = await ws.auth(token, **fields)
        items: list[dict[str, Any]] = []
        try:
            while True:
                frame = await ws.event(timeout=0.3)
                items.append({"id": frame["id"], "event": frame["event"]})
        except TimeoutError:
            pass
        ws.close()
        await ws.wait_closed()
        return hello, items
    api = server.client(token)
    query = urlencode({k: v for k, v in fields.items() if v is not None} | {"timeout": 0})
    response = await api.get(f"/api/events?{query}")
    api.close()
    assert response.status == 200, response.body
    items = response.body["events"]
    if items and items[0]["id"] == 0:
        assert items[0]["event"]["queue_id"] == response.body["queue_id"]
        return items[0]["event"], items[1:]
    return {"resumed": True, "queue_id": response.body["queue_id"]}, items


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_after_the_grace_gives_a_new_queue(
    make_server: ServerFactory, transport: str
) -> None:
    server = await make_server(queue_grace_secs=1.0)
    api = server.client()
    reply = await api.register("alice")
    token, user_id = reply["token"], reply["user"]["id"]
    queue_id, epoch = await open_queue(server, token, transport)
    # Within the grace the queue resumes and keeps what was published meanwhile.
    server.service.publish([user_id], {"type": "test.event", "n": 1})
    hello, items = await resume(
        server, token, transport, queue_id=queue_id, epoch=epoch, last_event_id=0
    )
    assert hello["resumed"] is True and hello["queue_id"] == queue_id
    assert [item["event"]["n"] for item in items] == [1]
    server.service.publish([user_id], {"type": "test.event", "n": 2})
    await asyncio.sleep(1.6)
    hello, items = await resume(
        server, token, transport, queue_id=queue_id, epoch=epoch, last_event_id=1
    )
    assert hello["resumed"] is False
    assert hello["queue_id"] != queue_id and hello["last_event_id"] == 0
    assert items == []  # the client re-reads state over REST instead
    for _ in range(300):  # the sweeper removes it within its interval (here 1 s)
        if server.service.registry.get(queue_id) is None:
            break
        await asyncio.sleep(0.01)
    assert server.service.registry.get(queue_id) is None
    api.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_epoch_gives_a_new_queue(server: RunningServer, transport: str) -> None:
    api = server.client()
    reply = await api.register("alice")
    token, user_id = reply["token"], reply["user"]["id"]
    queue_id, epoch = await open_queue(server, token, transport)
    server.service.publish([user_id], {"type": "test.event", "n": 1})
    # The same queue id under another epoch: the client talks about an earlier server run.
    hello, items = await resume(
        server, token, transport, queue_id=queue_id, epoch="earlier-run", last_event_id=0
    )
    assert hello["resumed"] is False and hello["queue_id"] != queue_id
    assert hello["epoch"] == epoch
    assert items == []
    api.close()


async def test_restarted_server_does_not_resume(make_server: ServerFactory) -> None:
    first = await make_server()
    api = first.client()
    token = (await api.register("alice"))["token"]
    queue_id, epoch = await open_queue(first, token, "websocket")
    second = await make_server()  # same database: the token is still valid
    for transport in TRANSPORTS:
        hello, _ = await resume(
            second, token, transport, queue_id=queue_id, epoch=epoch, last_event_id=0
        )
        assert hello["resumed"] is False and hello["epoch"] != epoch
    api.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_forged_queue_id_of_another_user_never_leaks(
    server: RunningServer, transport: str
) -> None:
    alice_api, mallory_api = server.client(), server.client()
    alice = await alice_api.register("alice")
    mallory = await mallory_api.register("mallory")
    queue_id, epoch = await open_queue(server, alice["token"], transport)
    server.service.publish([alice["user"]["id"]], {"type": "test.event", "n": 1, "secret": 1})
    hello, items = await resume(
        server, mallory["token"], transport, queue_id=queue_id, epoch=epoch, last_event_id=0
    )
    assert hello["resumed"] is False and hello["queue_id"] != queue_id
    assert hello["user"]["username"] == "mallory"
    assert items == []
    # Mallory's new queue only ever gets Mallory's events.
    server.service.publish([alice["user"]["id"]], {"type": "test.event", "n": 2, "secret": 1})
    _, items = await resume(
        server,
        mallory["token"],
        transport,
        queue_id=hello["queue_id"],
        epoch=epoch,
        last_event_id=0,
    )
    assert items == []
    # Alice's queue is untouched: she resumes it and gets both events.
    hello, items = await resume(
        server, alice["token"], transport, queue_id=queue_id, epoch=epoch, last_event_id=0
    )
    assert hello["resumed"] is True
    assert [item["event"]["n"] for item in items] == [1, 2]
    alice_api.close()
    mallory_api.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_another_session_of_the_same_user_gets_a_new_queue(
    server: RunningServer, transport: str
) -> None:
    api = server.client()
    first = await api.register("alice")
    login = await api.post("/api/auth/login", {"login": "alice", "password": "correct horse"})
    second_token = login.body["token"]
    queue_id, epoch = await open_queue(server, first["token"], transport)
    hello, _ = await resume(
        server, second_token, transport, queue_id=queue_id, epoch=epoch, last_event_id=0
    )
    # Logging the second session out would otherwise leave this queue open.
    assert hello["resumed"] is False and hello["queue_id"] != queue_id
    hello, _ = await resume(
        server, first["token"], transport, queue_id=queue_id, epoch=epoch, last_event_id=0
    )
    assert hello["resumed"] is True
    api.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_overflowed_queue_is_not_resumed(make_server: ServerFactory, transport: str) -> None:
    server = await make_server(queue_max_events=20)
    api = server.client()
    reply = await api.register("alice")
    token, user_id = reply["token"], reply["user"]["id"]
    queue_id, epoch = await open_queue(server, token, transport)
    for n in range(21):  # one more than the queue may hold unacknowledged
        server.service.publish([user_id], {"type": "test.event", "n": n})
    hello, items = await resume(
        server, token, transport, queue_id=queue_id, epoch=epoch, last_event_id=0
    )
    assert hello["resumed"] is False and items == []
    api.close()


async def test_cursor_the_server_can_no_longer_serve_gives_a_new_queue(
    server: RunningServer,
) -> None:
    api = server.client()
    reply = await api.register("alice")
    token, user_id = reply["token"], reply["user"]["id"]
    queue_id, epoch = await open_queue(server, token, "longpoll")
    for n in range(3):
        server.service.publish([user_id], {"type": "test.event", "n": n})
    hello, items = await resume(
        server, token, "longpoll", queue_id=queue_id, epoch=epoch, last_event_id=2
    )
    assert hello["resumed"] is True and [item["id"] for item in items] == [3]
    # Events 1 and 2 were acknowledged and dropped: cursor 1 cannot be served any more,
    # nor can a cursor beyond what the queue produced.
    for bad_cursor in (1, 99):
        queue_id, epoch = await open_queue(server, token, "websocket")
        for n in range(3):
            server.service.publish([user_id], {"type": "test.event", "n": n})
        await resume(server, token, "longpoll", queue_id=queue_id, epoch=epoch, last_event_id=2)
        hello, _ = await resume(
            server, token, "websocket", queue_id=queue_id, epoch=epoch, last_event_id=bad_cursor
        )
        assert hello["resumed"] is False, bad_cursor
    api.close()


async def test_a_late_stale_request_does_not_end_the_live_queue(server: RunningServer) -> None:
    api = server.client()
    reply = await api.register("alice")
    token, user_id = reply["token"], reply["user"]["id"]
    queue_id, epoch = await open_queue(server, token, "longpoll")
    for n in range(3):
        server.service.publish([user_id], {"type": "test.event", "n": n})
    _, items = await resume(server, token, "longpoll", queue_id=queue_id, last_event_id=0)
    assert [item["id"] for item in items] == [1, 2, 3]
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token, queue_id=queue_id, epoch=epoch, last_event_id=3)  # acks 3
    assert hello["resumed"] is True
    # A poll the client gave up on long ago arrives now, with the old cursor: it cannot be
    # served, so it gets a new queue of its own; the live one goes on untouched.
    stale, _ = await resume(server, token, "longpoll", queue_id=queue_id, last_event_id=0)
    assert stale["resumed"] is False and stale["queue_id"] != queue_id
    server.service.publish([user_id], {"type": "test.event", "n": 3})
    frame = await ws.event()
    assert (frame["id"], frame["event"]["n"]) == (4, 3)
    ws.close()
    await ws.wait_closed()
    api.close()
