"""The WebSocket transport: account commands, auth rules, and protocol abuse."""

from __future__ import annotations

import asyncio
import json

import tornado.httpclient
import tornado.websocket

from tests.client import WsClient
from tests.conftest import RunningServer, ServerFactory

REG = {"username": "alice", "email": "alice@example.com", "password": "correct horse"}


async def test_register_login_me_logout_over_websocket(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    reply = await ws.command("auth.register", **REG)
    assert reply["ok"] is True
    assert reply["data"]["user"]["username"] == "alice"
    token = reply["data"]["token"]
    # Signing up over the socket signs the socket in: hello follows the reply.
    hello = await ws.next_frame("hello")
    assert hello["resumed"] is False and hello["user"]["username"] == "alice"
    me = await ws.command("me")
    assert me["ok"] and me["data"]["user"]["friend_code"] == reply["data"]["user"]["friend_code"]
    ws.close()

    ws2 = await WsClient.connect(server.ws_url)
    bad = await ws2.command("auth.login", login="alice", password="wrong horse")
    assert bad["ok"] is False and bad["error"]["code"] == "invalid_credentials"
    good = await ws2.command("auth.login", login="ALICE", password="correct horse")
    assert good["ok"] is True and good["data"]["token"] != token
    await ws2.next_frame("hello")
    out = await ws2.command("auth.logout")
    assert out == {"type": "reply", "ref": out["ref"], "ok": True, "data": {}}
    assert await ws2.wait_closed() == 4401
    api = server.client(token=good["data"]["token"])
    assert (await api.get("/api/me")).status == 401
    assert (await api.get("/api/me", token=token)).status == 200
    api.close()


async def test_validation_errors_have_the_rest_shape(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    reply = await ws.command("auth.register", **{**REG, "password": "x" * 73})
    assert reply["ok"] is False
    assert reply["error"]["code"] == "validation_failed" and reply["error"]["field"] == "password"
    reply = await ws.command("auth.register", username="al")
    assert reply["error"]["field"] == "username"
    ws.close()


async def test_auth_frame_and_query_token(server: RunningServer) -> None:
    api = server.client()
    token = (await api.register("alice"))["token"]
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(token)
    assert hello["type"] == "hello" and hello["user"]["username"] == "alice"
    assert hello["heartbeat_secs"] == 25 and hello["last_event_id"] == 0
    assert isinstance(hello["queue_id"], str) and isinstance(hello["epoch"], str)
    ws.close()
    ws = await WsClient.connect(f"{server.ws_url}?token={token}")
    assert (await ws.next_frame("hello"))["user"]["username"] == "alice"
    ws.close()
    api.close()


async def test_bad_tokens_close_with_4401(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    await ws.send({"type": "auth", "token": "forged.token.value"})
    assert await ws.wait_closed() == 4401
    ws = await WsClient.connect(f"{server.ws_url}?token=forged")
    assert await ws.wait_closed() == 4401
    ws = await WsClient.connect(server.ws_url)
    await ws.send({"type": "auth"})
    assert await ws.wait_closed() == 4401


async def test_commands_before_auth_are_refused(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    for kind in ("me", "auth.logout", "conversations.list", "presence.subscribe"):
        reply = await ws.command(kind)
        assert reply["ok"] is False and reply["error"]["code"] == "unauthorized", kind
    # The socket stays usable for auth commands.
    assert (await ws.command("auth.register", **REG))["ok"] is True
    ws.close()


async def test_unauthenticated_socket_closed_after_timeout(make_server: ServerFactory) -> None:
    server = await make_server(auth_timeout_secs=0.3)
    ws = await WsClient.connect(server.ws_url)
    assert await ws.wait_closed(timeout=3) == 4401


async def test_malformed_frames_get_error_replies(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    await ws.conn.write_message("not json")
    reply = await ws.next_frame("reply")
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request" and reply["ref"] is None
    await ws.conn.write_message("[1, 2, 3]")
    assert (await ws.next_frame("reply"))["error"]["code"] == "bad_request"
    await ws.conn.write_message(b"\x00\x01", binary=True)
    assert (await ws.next_frame("reply"))["error"]["code"] == "bad_request"
    await ws.send({"ref": "x"})
    reply = await ws.next_frame("reply")
    assert reply["ref"] == "x" and reply["error"]["code"] == "bad_request"
    api = server.client()
    token = (await api.register("alice"))["token"]
    await ws.auth(token)
    reply = await ws.command("no.such.command")
    assert reply["ok"] is False and reply["error"]["code"] == "not_found"
    await ws.send({"type": "ack", "last_event_id": "seven"})
    assert (await ws.next_frame("reply"))["error"]["code"] == "bad_request"
    assert (await ws.command("me"))["ok"] is True  # still serving
    ws.close()
    api.close()


async def test_oversize_frame_closes_with_1009(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    await ws.conn.write_message(json.dumps({"type": "auth", "token": "x" * (64 * 1024)}))
    assert await ws.wait_closed() == 1009
    # A frame just under the limit is read and answered.
    ws = await WsClient.connect(server.ws_url)
    frame = {"type": "auth.login", "ref": "big", "login": "a", "password": "p" * (60 * 1024)}
    await ws.send(frame)
    assert (await ws.next_frame("reply"))["ref"] == "big"
    ws.close()


async def test_flood_is_rate_limited_then_closed_and_others_unaffected(
    server: RunningServer,
) -> None:
    api = server.client()
    token = (await api.register("alice"))["token"]
    flooder = await WsClient.connect(server.ws_url)
    await flooder.auth(token)
    calm = await WsClient.connect(server.ws_url)
    await calm.auth(token)
    for i in range(400):
        try:
            await flooder.send({"type": "me", "ref": f"f{i}"})
        except tornado.websocket.WebSocketClosedError:
            break
    codes: list[str] = []
    while True:
        try:
            frame = await flooder.next_frame("reply", timeout=15)  # a loaded machine
        except ConnectionError:
            break
        if not frame["ok"]:
            codes.append(frame["error"]["code"])
    assert "rate_limited" in codes
    assert flooder.conn.close_code == 1008
    assert (await calm.command("me"))["ok"] is True
    assert (await api.get("/api/me")).status == 200
    calm.close()
    api.close()


async def test_foreign_origin_is_refused(server: RunningServer) -> None:
    request = tornado.httpclient.HTTPRequest(
        server.ws_url, headers={"Origin": "http://evil.example"}
    )
    try:
        await tornado.websocket.websocket_connect(request)
    except tornado.httpclient.HTTPClientError as exc:
        assert exc.code == 403
    else:
        raise AssertionError("a foreign origin was accepted")
    ok = await WsClient.connect(
        server.ws_url, headers={"Origin": f"http://127.0.0.1:{server.port}"}
    )
    assert (await ok.command("me"))["error"]["code"] == "unauthorized"
    ok.close()


async def test_allowed_origins_setting(make_server: ServerFactory) -> None:
    server = await make_server(allowed_origins=("https://chat.example.com",))
    ok = await WsClient.connect(server.ws_url, headers={"Origin": "https://chat.example.com"})
    same = await WsClient.connect(
        server.ws_url, headers={"Origin": f"http://127.0.0.1:{server.port}"}
    )
    assert (await same.command("me"))["error"]["code"] == "unauthorized"
    ok.close()
    request = tornado.httpclient.HTTPRequest(
        server.ws_url, headers={"Origin": "https://other.example.com"}
    )
    try:
        await tornado.websocket.websocket_connect(request)
    except tornado.httpclient.HTTPClientError as exc:
        assert exc.code == 403
    else:
        raise AssertionError("an origin outside the list was accepted")
    await asyncio.sleep(0)


async def test_flood_of_garbage_frames_is_rate_limited_too(server: RunningServer) -> None:
    ws = await WsClient.connect(server.ws_url)
    for _ in range(400):
        try:
            await ws.conn.write_message("not json")
        except tornado.websocket.WebSocketClosedError:
            break
    codes: list[str] = []
    while True:
        try:
            codes.append((await ws.next_frame("reply", timeout=5))["error"]["code"])
        except ConnectionError:
            break
    assert codes[0] == "bad_request" and "rate_limited" in codes
    assert ws.conn.close_code == 1008


async def test_a_burst_of_acks_costs_no_command_budget(server: RunningServer) -> None:
    api = server.client()
    reply = await api.register("alice")
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(reply["token"])
    for n in range(150):
        server.service.publish([reply["user"]["id"]], {"type": "test.event", "n": n})
    for _ in range(150):  # a naive client acknowledging every single event
        frame = await ws.event()
        await ws.send({"type": "ack", "last_event_id": frame["id"]})
    # Commands still have their whole burst: none of these is refused.
    replies = [await ws.command("me") for _ in range(50)]
    assert all(r["ok"] for r in replies)
    assert not [f for f in ws.frames if f.get("type") == "reply"]  # acks got no replies
    queue = server.service.registry.get(hello["queue_id"])
    assert queue is not None and queue.acked_id == 150 and queue.pending_count == 0
    ws.close()
    api.close()


async def test_second_auth_and_revoked_token(server: RunningServer) -> None:
    api = server.client()
    token = (await api.register("alice"))["token"]
    ws = await WsClient.connect(server.ws_url)
    await ws.auth(token)
    reply = await ws.command("auth", token=token)
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert (await api.post("/api/auth/logout")).status == 200
    assert (await ws.event())["event"]["type"] == "session.ended"
    assert await ws.wait_closed() == 4401
    # The revoked token no longer opens a socket.
    ws = await WsClient.connect(server.ws_url)
    await ws.send({"type": "auth", "token": token})
    assert await ws.wait_closed() == 4401
    api.close()
