"""What one signed-in user may hold open: event queues, WebSockets, held long-polls, and the
bytes a WebSocket's client leaves unread."""

from __future__ import annotations

import asyncio

from tests.client import WsClient
from tests.conftest import ServerFactory
from tests.rawsocket import RawWebSocket
from tests.test_conversations import join, open_dm
from tests.test_socket_sessions import dm_with_history, open_sockets, until


async def test_event_queues_per_user_are_capped(make_server: ServerFactory) -> None:
    server = await make_server(max_queues_per_user=3)
    alice, bob = server.client(), server.client()
    await alice.register("alice")
    await bob.register("bob")
    queue_ids = []
    for _ in range(3):
        hello = await alice.get("/api/events")
        assert hello.status == 200
        queue_ids.append(hello.body["queue_id"])
    refused = await alice.get("/api/events")
    assert refused.status == 429 and refused.error_code == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 120
    assert refused.body["error"]["retry_after"] == int(refused.headers["Retry-After"])
    ws = await WsClient.connect(server.ws_url)
    await ws.send({"type": "auth", "token": alice.token})
    assert await ws.wait_closed() == 4429
    # Resuming a queue the user holds is no new queue; other users are not affected.
    resumed = await alice.get(f"/api/events?queue_id={queue_ids[0]}&timeout=0")
    assert resumed.status == 200 and resumed.body["queue_id"] == queue_ids[0]
    assert (await bob.get("/api/events")).status == 200


async def test_websockets_per_user_are_capped_and_freed_on_close(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_sockets_per_user=2)
    alice = server.client()
    await alice.register("alice")
    token = alice.token or ""
    first, second = await WsClient.connect(server.ws_url), await WsClient.connect(server.ws_url)
    await first.auth(token)
    await second.auth(token)
    third = await WsClient.connect(server.ws_url)
    await third.send({"type": "auth", "token": token})
    assert await third.wait_closed() == 4429
    assert third.conn.close_reason == "too many connections for this user"
    assert (await first.command("me"))["ok"] is True  # the newest is refused, not the oldest
    first.close()
    assert await until(lambda: len(open_sockets(server)) == 1, timeout=5.0)
    fourth = await WsClient.connect(server.ws_url)
    assert (await fourth.auth(token))["type"] == "hello"


async def test_held_long_polls_per_user_are_capped(make_server: ServerFactory) -> None:
    server = await make_server(max_polls_per_user=2)
    alice = server.client()
    await alice.register("alice")
    me = (await alice.get("/api/me")).body["user"]["id"]
    queue_ids = [(await alice.get("/api/events")).body["queue_id"] for _ in range(3)]
    held = [
        asyncio.ensure_future(alice.get(f"/api/events?queue_id={q}&timeout=5"))
        for q in queue_ids[:2]
    ]
    for _ in range(100):  # both polls are held by the server (a busy machine may take a while)
        if server.service.poll_slots.held(me) == 2:
            break
        await asyncio.sleep(0.05)
    assert server.service.poll_slots.held(me) == 2
    refused = await alice.get(f"/api/events?queue_id={queue_ids[2]}&timeout=2")
    assert refused.status == 429 and refused.error_code == "rate_limited"
    assert refused.headers["Retry-After"] == "1"
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    # Both ended: a slot is free again.
    again = await alice.get(f"/api/events?queue_id={queue_ids[2]}&timeout=0")
    assert again.status == 200


async def test_a_socket_whose_client_does_not_read_is_closed_as_a_slow_consumer(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_socket_buffer_bytes=256 * 1024)
    alice, _bob, dm_id = await dm_with_history(server, 100)
    # A client that reads is not affected by the cap: each page is larger than it.
    reader = await WsClient.connect(server.ws_url)
    await reader.auth(alice.token or "")
    for _ in range(5):
        reply = await reader.command("messages.history", conversation_id=dm_id, limit=100)
        assert reply["ok"] and len(reply["data"]["messages"]) == 100
    reader.close()
    raw = await RawWebSocket.connect(server.port)
    try:
        await raw.send({"type": "auth", "token": alice.token})
        assert (await raw.read_json())["type"] == "hello"
        [socket] = [s for s in open_sockets(server) if s.principal is not None]
        for i in range(10):
            await raw.send(
                {"type": "messages.history", "ref": i, "conversation_id": dm_id, "limit": 100}
            )
        assert await until(lambda: socket.ws_connection is None, timeout=5.0)
        # The server buffered at most the cap and a page; its close frame follows them.
        assert socket.unsent_bytes <= 256 * 1024 + 500_000
        assert await raw.close_code_after_draining() == 4413
    finally:
        raw.close()


async def test_frame_and_typing_rates_are_the_servers_settings(make_server: ServerFactory) -> None:
    # --frame-burst 5 and --typing-burst 2: the sixth frame at once (the auth frame is the
    # first) and the third typing notification at once are refused (the defaults, 60 and 10,
    # would take them all).
    server = await make_server(
        frame_burst=5, frames_per_sec=0.5, typing_burst=2, typing_per_sec=0.1
    )
    api = server.client()
    token = (await api.register("paced"))["token"]
    ws = await WsClient.connect(server.ws_url)
    await ws.auth(token)
    for i in range(5):
        await ws.send({"type": "me", "ref": f"m{i}"})
    replies = [await ws.next_frame("reply") for _ in range(5)]
    assert [r["ok"] for r in replies] == [True] * 4 + [False]
    assert replies[4]["error"]["code"] == "rate_limited"
    ws.close()
    members = [await join(server, f"t{i}-", online=False) for i in range(4)]
    dms = [await open_dm(members[0], m) for m in members[1:]]
    typed = [await members[0].call("typing", conversation_id=dm["id"]) for dm in dms]
    assert [r.ok for r in typed] == [True, True, False] and typed[2].code == "rate_limited"
