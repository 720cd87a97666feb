"""How a WebSocket writes events: straight from its queue, each event encoded once, with flow
control instead of a slow-consumer close for a client reading a backlog slowly; one heartbeat
for all sockets; nothing of the HTTP upgrade kept. Covers the two uses of Tornado's private API
in handlers/socket.py (write_text_frame, unsent_bytes)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from handlers.base import EventEncoder, json_dumps
from handlers.socket import EVENT_WRITE_AHEAD_BYTES
from tests.client import WsClient
from tests.conftest import RunningServer, ServerFactory
from tests.rawsocket import RawWebSocket
from tests.test_realtime import signed_in
from tests.test_socket_sessions import open_sockets, until

TEXT = "x" * 4000  # about a message's largest body


def encoder(server: RunningServer) -> EventEncoder:
    found: EventEncoder = server.http.request_callback.settings["event_encoder"]  # type: ignore[attr-defined]
    return found


async def authed_raw(server: RunningServer, token: str) -> tuple[RawWebSocket, Any]:
    """A raw socket past its hello, and the server's ChatSocket for it."""
    raw = await RawWebSocket.connect(server.port, f"/ws?token={token}")
    assert (await raw.read_json())["type"] == "hello"
    [socket] = [s for s in open_sockets(server) if s.principal is not None]
    return raw, socket


async def test_an_event_frame_is_the_events_shared_json(server: RunningServer) -> None:
    _alice, token_a, alice_id = await signed_in(server, "alice")
    _bob, token_b, bob_id = await signed_in(server, "bob")
    raw_a, _ = await authed_raw(server, token_a)
    raw_b = await RawWebSocket.connect(server.port, f"/ws?token={token_b}")
    try:
        assert (await raw_b.read_json())["type"] == "hello"
        event = {"type": "test.event", "text": "</script> é", "n": 1}
        server.service.publish([alice_id, bob_id], event)
        expected = json_dumps({"type": "event", "id": 1, "event": event}).encode()
        for raw in (raw_a, raw_b):
            opcode, payload = await raw.read_frame()
            assert (opcode, payload) == (0x1, expected)
        # Encoded once for both sockets: the cache hands out the very same bytes.
        assert encoder(server).encode(event) is encoder(server).encode(event)
    finally:
        raw_a.close()
        raw_b.close()


async def test_a_client_reading_a_backlog_slowly_gets_it_all_in_order(
    make_server: ServerFactory,
) -> None:
    # A cap a few pages of events above what events may buffer: events alone never reach it.
    server = await make_server(max_socket_buffer_bytes=2 * EVENT_WRITE_AHEAD_BYTES)
    _api, token, user_id = await signed_in(server, "alice")
    raw, socket = await authed_raw(server, token)
    try:
        # The client reads nothing while events are published to it, until the kernel's
        # buffers are full and the socket's stream backs up (a few MB on loopback).
        published = 0
        while not socket.paused and published < 3000:
            for _ in range(100):
                published += 1
                server.service.publish(
                    [user_id], {"type": "test.event", "n": published, "text": TEXT}
                )
            await asyncio.sleep(0.05)
        assert socket.paused
        # The rest wait in the queue: the stream holds at most the write-ahead and one frame.
        assert 0 < socket.unsent_bytes <= EVENT_WRITE_AHEAD_BYTES + 5000
        got: list[int] = []
        while len(got) < published // 2:
            frame = await raw.read_json()
            got.append(frame["event"]["n"])
        # Published while the socket still works through its backlog: queued behind it.
        for n in range(published + 1, published + 11):
            server.service.publish([user_id], {"type": "test.event", "n": n, "text": TEXT})
        while len(got) < published + 10:
            frame = await raw.read_json()
            assert frame["type"] == "event" and frame["id"] == frame["event"]["n"]
            got.append(frame["event"]["n"])
        assert got == list(range(1, published + 11))
        await raw.send({"type": "ack", "last_event_id": published + 10})
        await raw.send({"type": "me", "ref": "still-open"})
        reply = await raw.read_json()
        assert reply["ref"] == "still-open" and reply["ok"] is True
        assert await until(lambda: socket.unsent_bytes == 0, timeout=3.0)
    finally:
        raw.close()


async def test_one_heartbeat_keeps_answering_sockets_open(make_server: ServerFactory) -> None:
    server = await make_server(heartbeat_secs=0.2)
    _api, token, _ = await signed_in(server, "alice")
    clients = [await WsClient.connect(f"{server.ws_url}?token={token}") for _ in range(3)]
    for ws in clients:
        await ws.next_frame("hello")
    # No ping task per socket (Tornado's websocket_ping_interval would start one each).
    names = [repr(task.get_coro()) for task in asyncio.all_tasks()]
    assert not [name for name in names if "periodic_ping" in name]
    # Many heartbeats later, sockets whose clients answer pings (Tornado's client does) live.
    await asyncio.sleep(1.5)
    for ws in clients:
        assert (await ws.command("me"))["ok"] is True
    assert len([s for s in open_sockets(server) if s.principal is not None]) == 3


async def test_an_upgraded_socket_keeps_no_headers_and_no_token(server: RunningServer) -> None:
    _api, token, _ = await signed_in(server, "alice")
    ws = await WsClient.connect(f"{server.ws_url}?token={token}", headers={"X-Extra": "1"})
    await ws.next_frame("hello")
    [socket] = [s for s in open_sockets(server) if s.principal is not None]
    assert not list(socket.request.headers.get_all())
    assert socket.request.arguments == {} and socket.request.query_arguments == {}
    assert token not in json.dumps({k: repr(v) for k, v in vars(socket.request).items()})
    # What commands still need of the request is there.
    assert socket.request.remote_ip == "127.0.0.1"
    assert (await ws.command("me"))["ok"] is True
