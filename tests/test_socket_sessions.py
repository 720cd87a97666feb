"""A WebSocket's session is checked for every command and ends the socket when it ends: at a
logout (even when the socket's writes are stuck) and at the token's expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, ServerFactory
from tests.rawsocket import RawWebSocket

BIG_BODY = "x" * 4000  # the largest message body


def open_sockets(server: RunningServer) -> set[Any]:
    """The server's open ChatSockets (the application's own set)."""
    sockets: set[Any] = server.http.request_callback.settings["chat_sockets"]  # type: ignore[attr-defined]
    return sockets


async def until(condition: Any, timeout: float) -> bool:
    """Poll condition() until it is true or the timeout passes; its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def dm_with_history(server: RunningServer, messages: int) -> tuple[ApiClient, ApiClient, str]:
    """alice and bob, and their DM holding `messages` of the largest size (sent by bob)."""
    alice, bob = server.client(), server.client()
    await alice.register("alice")
    await bob.register("bob")
    bob_id = (await bob.get("/api/me")).body["user"]["id"]
    dm = (await alice.post("/api/conversations/dm", {"user_id": bob_id})).body["conversation"]
    for i in range(messages):
        sent = await bob.post(
            f"/api/conversations/{dm['id']}/messages", {"body": BIG_BODY, "client_msg_id": f"b{i}"}
        )
        assert sent.status == 201
    return alice, bob, dm["id"]


async def test_logout_closes_a_stuck_socket_and_its_later_commands_do_nothing(
    make_server: ServerFactory,
) -> None:
    # The buffer cap is out of the way: this is about the session, not the slow consumer.
    server = await make_server(max_socket_buffer_bytes=1 << 30)
    alice, bob, dm_id = await dm_with_history(server, 100)
    raw = await RawWebSocket.connect(server.port)
    try:
        await raw.send({"type": "auth", "token": alice.token})
        assert (await raw.read_json())["type"] == "hello"
        # The client stops reading: 20 pages of 100 large messages (about 8 MB) back up in
        # the server, and the events that follow wait behind them.
        for i in range(20):
            await raw.send(
                {"type": "messages.history", "ref": i, "conversation_id": dm_id, "limit": 100}
            )
        for i in range(5):
            await bob.post(
                f"/api/conversations/{dm_id}/messages", {"body": BIG_BODY, "client_msg_id": f"c{i}"}
            )
        [socket] = open_sockets(server)
        await asyncio.sleep(0.5)
        assert (await alice.post("/api/auth/logout")).status == 200
        assert (await alice.get("/api/me")).status == 401
        # The writer cannot deliver session.ended, yet the server starts closing the socket
        # (its close frame waits behind the backlog; the connection goes 5 s later).
        assert await until(lambda: socket.ws_connection is None, timeout=3.0)
        await asyncio.sleep(1.0)
        await raw.send(
            {
                "type": "messages.send",
                "ref": "late",
                "conversation_id": dm_id,
                "body": "sent after the logout",
                "client_msg_id": "late",
            }
        )
        # The socket is closed while its client still reads nothing.
        assert await until(lambda: socket not in open_sockets(server), timeout=8.0)
        history = await bob.get(f"/api/conversations/{dm_id}/messages?limit=5")
        assert "sent after the logout" not in [m["body"] for m in history.body["messages"]]
    finally:
        raw.close()


async def test_every_command_checks_the_session_first(server: RunningServer) -> None:
    alice, bob, dm_id = await dm_with_history(server, 0)
    ws = await WsClient.connect(server.ws_url)
    await ws.auth(alice.token or "")
    # The session ends without this socket hearing of it (as when the logout's event cannot
    # reach it): revoked in the database, which another server process could have done.
    principal = await server.service.authenticate(alice.token)
    await server.store.sessions.revoke(principal.session_id)
    server.service.checked_sessions.forget(principal.session_id)
    reply = await ws.command("messages.send", conversation_id=dm_id, body="hi", client_msg_id="m1")
    assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
    assert await ws.wait_closed() == 4401
    assert (await bob.get(f"/api/conversations/{dm_id}/messages")).body["messages"] == []


async def test_a_socket_is_closed_when_its_token_expires(make_server: ServerFactory) -> None:
    server = await make_server(token_ttl_secs=6)  # room for sign-up and auth on a busy machine
    api = server.client()
    token = (await api.register("alice"))["token"]
    ws = await WsClient.connect(server.ws_url)
    await ws.auth(token)
    assert (await ws.command("me"))["ok"] is True
    # Expiry is whole seconds: 5-6 s after the sign-up; closed at it, with the auth code.
    assert await ws.wait_closed(timeout=10.0) == 4401
    assert ws.conn.close_reason == "session expired"
    poll = await api.get("/api/events")
    assert poll.status == 401 and poll.error_code == "unauthorized"
