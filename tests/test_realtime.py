"""The real-time layer through its real interfaces: long-polling, WebSocket queue handling,
logout, presence over the wire, queue lifetime; plus the registry's resume rules."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.simple_httpclient

from chat.events import QueueRegistry
from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, ServerFactory


async def eventually(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until condition holds; fail after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def signed_in(server: RunningServer, username: str) -> tuple[ApiClient, str, str]:
    """(client with token, token, user id) of a new account."""
    api = server.client()
    reply = await api.register(username)
    return api, reply["token"], reply["user"]["id"]


async def poll(api: ApiClient, client_timeout: float = 70.0, **query: Any) -> Any:
    """GET /api/events with these query arguments (timeout is the server's hold time)."""
    return await api.get(f"/api/events?{urlencode(query)}", timeout=client_timeout)


def publish(server: RunningServer, user_id: str, n: int) -> None:
    server.service.publish([user_id], {"type": "test.event", "n": n})


# -- long-polling --------------------------------------------------------------------------


async def test_new_queue_returns_hello_with_id_0_at_once(server: RunningServer) -> None:
    api, _, user_id = await signed_in(server, "alice")
    start = time.monotonic()
    response = await poll(api)
    assert time.monotonic() - start < 2
    assert response.status == 200
    [item] = response.body["events"]
    hello = item["event"]
    assert item["id"] == 0
    assert hello["type"] == "hello" and hello["resumed"] is False
    assert hello["queue_id"] == response.body["queue_id"]
    assert hello["last_event_id"] == 0 and hello["user"]["id"] == user_id
    assert isinstance(hello["epoch"], str) and hello["heartbeat_secs"] == 25
    api.close()


async def test_poll_returns_waiting_events_at_once_and_acknowledges_by_cursor(
    server: RunningServer,
) -> None:
    api, _, user_id = await signed_in(server, "alice")
    queue_id = (await poll(api)).body["queue_id"]
    for n in range(3):
        publish(server, user_id, n)
    start = time.monotonic()
    response = await poll(api, queue_id=queue_id, last_event_id=0)
    assert time.monotonic() - start < 2
    assert response.body == {
        "queue_id": queue_id,
        "events": [{"id": i + 1, "event": {"type": "test.event", "n": i}} for i in range(3)],
    }
    # Not acknowledged yet: the same cursor gets the same events (a lost response).
    again = await poll(api, queue_id=queue_id, last_event_id=0)
    assert [item["id"] for item in again.body["events"]] == [1, 2, 3]
    response = await poll(api, queue_id=queue_id, last_event_id=2, timeout=0)
    assert [item["id"] for item in response.body["events"]] == [3]
    queue = server.service.registry.get(queue_id)
    assert queue is not None and queue.pending_count == 1  # 1 and 2 dropped
    api.close()


async def test_poll_holds_until_timeout_then_returns_empty(server: RunningServer) -> None:
    api, _, _ = await signed_in(server, "alice")
    queue_id = (await poll(api)).body["queue_id"]
    start = time.monotonic()
    response = await poll(api, queue_id=queue_id, last_event_id=0, timeout=1)
    elapsed = time.monotonic() - start
    assert response.status == 200 and response.body == {"queue_id": queue_id, "events": []}
    assert 0.9 <= elapsed < 3
    api.close()


async def test_poll_wakes_when_an_event_is_published(server: RunningServer) -> None:
    api, _, user_id = await signed_in(server, "alice")
    queue_id = (await poll(api)).body["queue_id"]
    waiting = asyncio.create_task(poll(api, queue_id=queue_id, last_event_id=0, timeout=20))
    await eventually(lambda: server.service.registry.attached_count(user_id) == 1)
    start = time.monotonic()
    publish(server, user_id, 7)
    response = await waiting
    assert time.monotonic() - start < 2
    assert response.body["events"] == [{"id": 1, "event": {"type": "test.event", "n": 7}}]
    api.close()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"timeout": 61}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "soon"}, "timeout"),
        ({"last_event_id": -1}, "last_event_id"),
        ({"last_event_id": "x"}, "last_event_id"),
    ],
)
async def test_poll_parameters_are_validated(
    server: RunningServer, query: dict[str, Any], field: str
) -> None:
    api, _, _ = await signed_in(server, "alice")
    response = await poll(api, **query)
    assert response.status == 400
    assert response.body["error"]["code"] == "validation_failed"
    assert response.body["error"]["field"] == field
    assert (await poll(api, timeout=60, last_event_id=0)).status == 200  # the bounds themselves
    api.close()


async def test_poll_needs_a_valid_token(server: RunningServer) -> None:
    api = server.client()
    response = await poll(api)
    assert response.status == 401 and response.body["error"]["code"] == "unauthorized"
    response = await api.get("/api/events", token="forged")
    assert response.status == 401
    api.close()


async def test_second_poll_replaces_the_first(server: RunningServer) -> None:
    api, _, user_id = await signed_in(server, "alice")
    queue_id = (await poll(api)).body["queue_id"]
    first = asyncio.create_task(poll(api, queue_id=queue_id, last_event_id=0, timeout=20))
    await eventually(lambda: server.service.registry.attached_count(user_id) == 1)
    start = time.monotonic()
    second = asyncio.create_task(poll(api, queue_id=queue_id, last_event_id=0, timeout=20))
    replaced = await first
    assert time.monotonic() - start < 2
    assert replaced.status == 200 and replaced.body["events"] == []
    publish(server, user_id, 1)
    response = await second
    assert [item["event"]["n"] for item in response.body["events"]] == [1]
    api.close()


async def test_poll_cancels_its_wait_when_the_client_goes_away(server: RunningServer) -> None:
    api, _, user_id = await signed_in(server, "alice")
    queue_id = (await poll(api)).body["queue_id"]
    queue = server.service.registry.get(queue_id)
    assert queue is not None
    with pytest.raises(tornado.simple_httpclient.HTTPTimeoutError):
        await poll(api, client_timeout=0.3, queue_id=queue_id, last_event_id=0, timeout=30)
    # The server notices at once, not after its 30 s: no waiter, nothing attached.
    await eventually(lambda: not queue.has_waiter and not queue.attached, timeout=5)
    assert server.service.registry.attached_count(user_id) == 0
    # The queue lives on for the next poll.
    publish(server, user_id, 1)
    response = await poll(api, queue_id=queue_id, last_event_id=0)
    assert [item["id"] for item in response.body["events"]] == [1]
    api.close()


async def test_logout_ends_a_waiting_poll_with_session_ended(server: RunningServer) -> None:
    api, _, user_id = await signed_in(server, "alice")
    queue_id = (await poll(api)).body["queue_id"]
    waiting = asyncio.create_task(poll(api, queue_id=queue_id, last_event_id=0, timeout=20))
    await eventually(lambda: server.service.registry.attached_count(user_id) == 1)
    assert (await api.post("/api/auth/logout")).status == 200
    response = await waiting
    assert response.body["events"] == [{"id": 1, "event": {"type": "session.ended"}}]
    assert (await poll(api, queue_id=queue_id, last_event_id=1)).status == 401
    api.close()


# -- WebSocket queue handling --------------------------------------------------------------


async def test_sending_does_not_prune_only_acks_do(server: RunningServer) -> None:
    api, token, user_id = await signed_in(server, "alice")
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token)
    queue = server.service.registry.get(hello["queue_id"])
    assert queue is not None
    for n in range(3):
        publish(server, user_id, n)
    assert [(await ws.event())["id"] for _ in range(3)] == [1, 2, 3]
    assert queue.pending_count == 3  # sent, but the client has not acknowledged
    await ws.send({"type": "ack", "last_event_id": 2})
    await eventually(lambda: queue.pending_count == 1)
    assert queue.acked_id == 2
    await ws.send({"type": "ack", "last_event_id": 99})  # beyond what exists: ignored
    assert (await ws.command("me"))["ok"] is True  # acks get no reply; the socket goes on
    assert queue.acked_id == 2
    # Resuming from the last acknowledged id sends the rest again, exactly.
    ws.close()
    await ws.wait_closed()
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token, queue_id=queue.queue_id, epoch=hello["epoch"], last_event_id=2)
    assert hello["resumed"] is True and hello["last_event_id"] == 2
    assert (await ws.event())["id"] == 3
    ws.close()
    api.close()


async def test_resume_cursor_acknowledges(server: RunningServer) -> None:
    api, token, user_id = await signed_in(server, "alice")
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token)
    for n in range(3):
        publish(server, user_id, n)
    for _ in range(3):
        await ws.event()
    ws.close()
    await ws.wait_closed()
    # The query-string form of resuming, this time.
    query = urlencode({"token": token, "queue_id": hello["queue_id"], "last_event_id": 3})
    ws = await WsClient.connect(f"{server.ws_url}?{query}")
    resumed = await ws.next_frame("hello")
    assert resumed["resumed"] is True and resumed["queue_id"] == hello["queue_id"]
    queue = server.service.registry.get(hello["queue_id"])
    assert queue is not None and queue.pending_count == 0 and queue.acked_id == 3
    ws.close()
    api.close()


async def test_takeover_closes_the_old_socket_with_4409(server: RunningServer) -> None:
    api, token, user_id = await signed_in(server, "alice")
    old = await WsClient.connect(server.ws_url)
    hello = await old.auth(token)
    publish(server, user_id, 1)
    assert (await old.event())["id"] == 1
    new = await WsClient.connect(server.ws_url)
    resumed = await new.auth(token, queue_id=hello["queue_id"], last_event_id=1)
    assert resumed["resumed"] is True
    assert await old.wait_closed() == 4409
    publish(server, user_id, 2)
    assert (await new.event())["event"]["n"] == 2
    # The old socket's close did not detach the new one.
    assert server.service.registry.attached_count(user_id) == 1
    # Long-polling takes it over the same way.
    waiting = asyncio.create_task(poll(api, queue_id=hello["queue_id"], last_event_id=2))
    assert await new.wait_closed() == 4409
    publish(server, user_id, 3)
    assert [item["id"] for item in (await waiting).body["events"]] == [3]
    api.close()


async def test_logout_delivers_session_ended_and_closes_that_sessions_sockets(
    server: RunningServer,
) -> None:
    api, token, user_id = await signed_in(server, "alice")
    login = await api.post("/api/auth/login", {"login": "alice", "password": "correct horse"})
    other_token = login.body["token"]
    tabs = [await WsClient.connect(server.ws_url) for _ in range(2)]
    for tab in tabs:
        await tab.auth(token)
    other = await WsClient.connect(server.ws_url)
    await other.auth(other_token)
    publish(server, user_id, 1)
    assert (await api.post("/api/auth/logout")).status == 200
    for tab in tabs:
        assert (await tab.event())["event"]["n"] == 1  # what came before still arrives
        assert (await tab.event())["event"] == {"type": "session.ended"}
        assert await tab.wait_closed() == 4401
    # The other session is untouched.
    assert (await other.event())["event"]["n"] == 1
    assert (await other.command("me"))["ok"] is True
    # Logging out over the socket itself: the reply, then session.ended, then 4401.
    reply = await other.command("auth.logout")
    assert reply["ok"] is True
    assert (await other.event())["event"]["type"] == "session.ended"
    assert await other.wait_closed() == 4401
    api.close()


async def test_ack_before_auth_is_refused(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    await ws.send({"type": "ack", "last_event_id": 1})
    reply = await ws.next_frame("reply")
    assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
    ws.close()


async def test_overflow_while_attached_closes_with_4410_and_resume_is_refused(
    make_server: ServerFactory,
) -> None:
    server = await make_server(queue_max_events=20)
    api, token, user_id = await signed_in(server, "alice")
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token)
    queue = server.service.registry.get(hello["queue_id"])
    assert queue is not None
    # The client reads but never acknowledges: the 21st unacknowledged event drops the queue.
    for n in range(25):
        publish(server, user_id, n)
    assert queue.overflowed is True
    assert await ws.wait_closed() == 4410
    ws = await WsClient.connect(server.ws_url)
    again = await ws.auth(token, queue_id=hello["queue_id"], last_event_id=0)
    assert again["resumed"] is False and again["queue_id"] != hello["queue_id"]
    ws.close()
    api.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(size)


async def test_a_peer_that_stops_answering_pings_is_dropped(make_server: ServerFactory) -> None:
    server = await make_server(heartbeat_secs=0.2)
    api, token, user_id = await signed_in(server, "alice")
    # A raw client: it completes the handshake, then never answers anything (a dead peer).
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101")
    opcodes: list[int] = []
    async with asyncio.timeout(3):
        while True:
            opcode, payload = await read_frame(reader)
            opcodes.append(opcode)
            if opcode == 0x8:  # close: the server gave up on us
                break
    assert 0x9 in opcodes  # it pinged first
    assert b"ping timed out" in payload
    # Without our close reply the server aborts the connection a few seconds later; the
    # queue then detaches and the user no longer counts as connected.
    assert server.service.registry.attached_count(user_id) == 1
    await eventually(lambda: server.service.registry.attached_count(user_id) == 0, timeout=8)
    writer.close()
    await writer.wait_closed()
    api.close()


# -- queue lifetime ------------------------------------------------------------------------


async def test_sweeper_removes_expired_queues_and_their_subscriptions(
    make_server: ServerFactory,
) -> None:
    server = await make_server(queue_grace_secs=1.0)
    api, _, _ = await signed_in(server, "alice")
    _, _, bob_id = await signed_in(server, "bob")
    queue_id = (await poll(api)).body["queue_id"]
    reply = await api.post("/api/presence/subscribe", {"queue_id": queue_id, "user_ids": [bob_id]})
    assert reply.status == 200 and reply.body["user_ids"] == [bob_id]
    registry = server.service.registry
    assert registry.get(queue_id) is not None
    await eventually(lambda: registry.get(queue_id) is None, timeout=6)
    # The subscription went with it: a later presence.subscribe names an unknown queue.
    reply = await api.post("/api/presence/subscribe", {"queue_id": queue_id, "user_ids": [bob_id]})
    assert reply.status == 404
    api.close()


# -- presence over the wire ----------------------------------------------------------------


async def observe(server: RunningServer, user_id: str) -> WsClient:
    """A third user's socket subscribed to user_id's presence."""
    api, token, _ = await signed_in(server, f"observer{user_id[-6:]}")
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token)
    reply = await ws.command("presence.subscribe", queue_id=hello["queue_id"], user_ids=[user_id])
    assert reply["ok"] is True, reply
    assert reply["data"]["user_ids"] == [user_id]
    api.close()
    return ws


async def no_presence(ws: WsClient, wait: float) -> None:
    with pytest.raises(TimeoutError):
        frame = await ws.event("presence", timeout=wait)
        raise AssertionError(f"unexpected presence event {frame}")


async def test_two_tabs_close_one_still_online_close_both_offline_after_grace(
    make_server: ServerFactory,
) -> None:
    grace = 0.3
    server = await make_server(presence_grace_secs=grace)
    api, token, alice_id = await signed_in(server, "alice")
    observer = await observe(server, alice_id)
    tabs = [await WsClient.connect(server.ws_url) for _ in range(2)]
    for tab in tabs:
        await tab.auth(token)
    online = (await observer.event("presence"))["event"]
    assert online == {
        "type": "presence",
        "user_id": alice_id,
        "status": "online",
        "last_seen": None,
    }
    tabs[0].close()
    await no_presence(observer, grace * 3)  # one tab left: still online
    assert server.service.presence_of([alice_id]) == {alice_id: "online"}
    closed_at = time.monotonic()
    tabs[1].close()
    offline = (await observer.event("presence", timeout=5))["event"]
    assert time.monotonic() - closed_at >= grace * 0.9  # not before the grace
    assert offline["status"] == "offline" and offline["user_id"] == alice_id
    assert isinstance(offline["last_seen"], str) and offline["last_seen"].endswith("Z")
    assert server.service.presence_of([alice_id]) == {alice_id: "offline"}
    # last_seen was stored in the database: the REST API shows it.
    me = await api.get("/api/me")
    assert me.body["user"]["last_seen"] == offline["last_seen"]
    observer.close()
    api.close()


async def test_reload_within_the_grace_publishes_no_offline(make_server: ServerFactory) -> None:
    grace = 1.5  # generous: three reloads must fit in it even on a loaded machine
    server = await make_server(presence_grace_secs=grace)
    api, token, alice_id = await signed_in(server, "alice")
    observer = await observe(server, alice_id)
    tab = await WsClient.connect(server.ws_url)
    hello = await tab.auth(token)
    assert (await observer.event("presence"))["event"]["status"] == "online"
    for _ in range(3):  # reload, reload, reload
        tab.close()
        await tab.wait_closed()
        tab = await WsClient.connect(server.ws_url)
        again = await tab.auth(token, queue_id=hello["queue_id"], last_event_id=0)
        assert again["resumed"] is True
    await no_presence(observer, grace + 0.5)
    me = await api.get("/api/me")
    assert me.body["user"]["last_seen"] is None  # never went offline
    tab.close()
    observer.close()
    api.close()


async def test_everyone_leaving_at_once_gets_a_stored_last_seen(make_server: ServerFactory) -> None:
    # 40 users offline within the same moment: their last_seen writes are merged into a few
    # bulk writes (one in flight at a time); every one is stored and shown by /api/me.
    server = await make_server(presence_grace_secs=0.2)
    users = [await signed_in(server, f"user{i:02d}") for i in range(40)]
    tabs = [await WsClient.connect(server.ws_url) for _ in users]
    for tab, (_, token, _) in zip(tabs, users, strict=True):
        await tab.auth(token)
    for tab in tabs:
        tab.close()
    users_coll = server.store.db["users"]
    deadline = time.monotonic() + 10
    while await users_coll.count_documents({"last_seen": {"$ne": None}}) < len(users):
        assert time.monotonic() < deadline, "some last_seen were never stored"
        await asyncio.sleep(0.05)
    for api, _, _ in users[:3]:
        assert (await api.get("/api/me")).body["user"]["last_seen"] is not None
    for api, _, _ in users:
        api.close()


async def test_long_polling_user_stays_online_between_polls(make_server: ServerFactory) -> None:
    grace = 1.0
    server = await make_server(presence_grace_secs=grace)
    api, _, alice_id = await signed_in(server, "alice")
    observer = await observe(server, alice_id)
    queue_id = (await poll(api)).body["queue_id"]  # a new queue: not attached yet
    cursor = 0
    for _ in range(4):
        response = await poll(api, queue_id=queue_id, last_event_id=cursor, timeout=0)
        cursor = max([cursor, *(item["id"] for item in response.body["events"])])
        await asyncio.sleep(0.1)
    events = [(await observer.event("presence"))["event"]["status"]]
    # Polls came more often than the grace: online once, never offline in between.
    await no_presence(observer, grace / 2)
    events.append((await observer.event("presence", timeout=5))["event"]["status"])
    assert events == ["online", "offline"]
    observer.close()
    api.close()


async def test_presence_subscribe_checks_the_queue_and_ids(server: RunningServer) -> None:
    alice, _, _ = await signed_in(server, "alice")
    mallory, _, _ = await signed_in(server, "mallory")
    _, _, bob_id = await signed_in(server, "bob")
    queue_id = (await poll(alice)).body["queue_id"]
    reply = await mallory.post(
        "/api/presence/subscribe", {"queue_id": queue_id, "user_ids": [bob_id]}
    )
    assert reply.status == 404  # not Mallory's queue: indistinguishable from no queue
    reply = await alice.post("/api/presence/subscribe", {"user_ids": [bob_id]})
    assert reply.status == 400 and reply.body["error"]["field"] == "queue_id"
    reply = await alice.post("/api/presence/subscribe", {"queue_id": queue_id, "user_ids": "x"})
    assert reply.status == 400 and reply.body["error"]["field"] == "user_ids"
    reply = await alice.post(
        "/api/presence/subscribe", {"queue_id": queue_id, "user_ids": [bob_id, bob_id]}
    )
    assert reply.status == 200
    assert reply.body == {"user_ids": [bob_id], "presence": {bob_id: "offline"}}
    alice.close()
    mallory.close()


# -- the registry's resume rules (no network) ----------------------------------------------


def test_resume_without_epoch_relies_on_the_queue_id() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    got, resumed = reg.resume("alice", "s1", q.queue_id, None, 0)
    assert (got, resumed) == (q, True)


def test_resume_from_another_session_of_the_same_user_gives_a_new_queue() -> None:
    reg = QueueRegistry()
    q = reg.create("alice", "s1")
    q.push({"type": "test"})
    got, resumed = reg.resume("alice", "s2", q.queue_id, reg.epoch, 0)
    assert resumed is False and got is not q and got.session_id == "s2"
    assert q.closed is False  # the other session's queue is not touched
    reg.end_session("s2")
    assert got.closed is True and q.closed is False


def test_an_expired_queue_is_not_resumed_even_before_the_sweep() -> None:
    now = [1000.0]
    reg = QueueRegistry(grace_secs=10.0, clock=lambda: now[0])
    q = reg.create("alice", "s1")
    token = reg.attach(q)
    now[0] += 100.0
    assert reg.resume("alice", "s1", q.queue_id, reg.epoch, 0) == (q, True)  # attached
    reg.detach(q, token)
    now[0] += 10.5
    got, resumed = reg.resume("alice", "s1", q.queue_id, reg.epoch, 0)
    assert resumed is False and got is not q and q.closed is True


async def test_presence_reaches_friends_dm_partners_and_subscribers_never_across_a_block(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=0.2)
    alice, alice_token, alice_id = await signed_in(server, "alice")
    people = {name: await signed_in(server, name) for name in ("carol", "dave", "erin", "frank")}
    carol, _, carol_id = people["carol"]
    request = await alice.post("/api/friends/requests", {"user_id": carol_id})
    assert request.status == 201, request.body
    accepted = await carol.post(f"/api/friends/requests/{request.body['request']['id']}/accept")
    assert accepted.status == 200, accepted.body
    dm = await alice.post("/api/conversations/dm", {"user_id": people["dave"][2]})
    assert dm.status == 200, dm.body
    sockets: dict[str, WsClient] = {}
    for name, (_, token, _) in people.items():
        ws = await WsClient.connect(server.ws_url)
        hello = await ws.auth(token)
        if name in ("erin", "frank"):
            reply = await ws.command(
                "presence.subscribe", queue_id=hello["queue_id"], user_ids=[alice_id]
            )
            assert reply["data"]["user_ids"] == [alice_id]
        sockets[name] = ws
    # Blocks land after the subscriptions: they are checked again at every change.
    assert (await alice.put(f"/api/blocks/{people['erin'][2]}")).status == 200
    frank_api = people["frank"][0]
    assert (await frank_api.put(f"/api/blocks/{alice_id}")).status == 200
    # Each of them is told once, at the block, to drop Alice's dot; nothing after that.
    for name in ("erin", "frank"):
        event = (await sockets[name].event("presence"))["event"]
        assert (event["user_id"], event["status"], event["blocked"]) == (alice_id, "offline", True)
    tab = await WsClient.connect(server.ws_url)
    await tab.auth(alice_token)
    for name in ("carol", "dave"):
        event = (await sockets[name].event("presence"))["event"]
        assert (event["user_id"], event["status"]) == (alice_id, "online"), name
    tab.close()
    for name in ("carol", "dave"):
        event = (await sockets[name].event("presence", timeout=3))["event"]
        assert (event["user_id"], event["status"]) == (alice_id, "offline"), name
    for name in ("erin", "frank"):
        await no_presence(sockets[name], 0.3)
    # A subscription across a block is not even accepted.
    erin_ws = sockets["erin"]
    hello_queue = server.service.registry.queues_of_user(people["erin"][2])[0].queue_id
    reply = await erin_ws.command("presence.subscribe", queue_id=hello_queue, user_ids=[alice_id])
    assert reply["ok"] is True and reply["data"]["user_ids"] == []
    for api, _, _ in people.values():
        api.close()
    alice.close()
