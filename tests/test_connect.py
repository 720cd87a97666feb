"""Cheap connects over the wire: concurrent connects share their database reads, and what a
connect reads (session, user, presence audience) is kept in memory until a change made in this
process says otherwise. Each cache has a test that a change made through the API is seen by
the next connect; the batching itself is tested in test_batching.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, ServerFactory
from tests.test_conv_outage import Restartable, own_database
from tests.test_realtime import no_presence, signed_in

__all__ = ["own_database"]  # the fixture, for this module too

GRACE = 0.2  # presence grace: users go offline quickly


async def online(server: RunningServer, token: str) -> WsClient:
    ws = await WsClient.connect(server.ws_url)
    await ws.auth(token)
    return ws


async def offline(server: RunningServer, ws: WsClient, user_id: str) -> None:
    """Close the user's only socket and wait until the grace ran out (announced offline)."""
    ws.close()
    deadline = time.monotonic() + 5
    while server.service.presence.is_online(user_id):
        assert time.monotonic() < deadline, "never went offline"
        await asyncio.sleep(0.02)


async def presence_of(ws: WsClient, user_id: str) -> str:
    event = (await ws.event("presence"))["event"]
    assert event["user_id"] == user_id, event
    status: str = event["status"]
    return status


async def befriend(a: ApiClient, b: ApiClient, b_id: str) -> None:
    request = await a.post("/api/friends/requests", {"user_id": b_id})
    assert request.status == 201, request.body
    accepted = await b.post(f"/api/friends/requests/{request.body['request']['id']}/accept")
    assert accepted.status == 200, accepted.body


async def test_a_connect_storm_gets_each_client_its_own_hello_and_refuses_the_revoked(
    make_server: ServerFactory,
) -> None:
    first = await make_server()
    users = [await signed_in(first, f"user{i:02d}") for i in range(30)]
    revoked_api, revoked_token, _ = users[7]
    assert (await revoked_api.post("/api/auth/logout")).status == 200
    # A second server on the same database knows none of these sessions: the 30 connects at
    # once read their sessions and users together, and each gets its own answer.
    second = await make_server()
    sockets = await asyncio.gather(*(WsClient.connect(second.ws_url) for _ in users))
    for ws, (_, token, _) in zip(sockets, users, strict=True):
        await ws.send({"type": "auth", "token": token})

    async def outcome(ws: WsClient) -> str | int | None:
        try:
            hello = await ws.next_frame("hello")
        except ConnectionError:
            return ws.conn.close_code
        user_id: str = hello["user"]["id"]
        return user_id

    outcomes = await asyncio.gather(*(outcome(ws) for ws in sockets))
    expected = [4401 if token == revoked_token else uid for _, token, uid in users]
    assert outcomes == expected


async def test_hello_shows_the_last_seen_stored_when_the_user_went_offline(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=GRACE)
    api, token, alice_id = await signed_in(server, "alice")
    ws = await WsClient.connect(server.ws_url)
    first = await ws.auth(token)
    assert first["user"]["last_seen"] is None  # read once, and kept for the next hello
    await offline(server, ws, alice_id)
    deadline = time.monotonic() + 5
    while (stored := (await api.get("/api/me")).body["user"]["last_seen"]) is None:
        assert time.monotonic() < deadline, "last_seen never stored"
        await asyncio.sleep(0.02)
    assert await server.store.users.get(alice_id) == await server.service.known_users.get(alice_id)
    again = await (await WsClient.connect(server.ws_url)).auth(token)
    assert again["user"]["last_seen"] == stored
    api.close()


async def test_a_friendship_made_after_the_audience_was_read_reaches_the_next_announcement(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=GRACE)
    alice, alice_token, alice_id = await signed_in(server, "alice")
    carol, carol_token, carol_id = await signed_in(server, "carol")
    await offline(server, await online(server, alice_token), alice_id)  # audience read: nobody
    carol_ws = await online(server, carol_token)
    await befriend(alice, carol, carol_id)
    alice_ws = await online(server, alice_token)
    assert await presence_of(carol_ws, alice_id) == "online"
    await offline(server, alice_ws, alice_id)
    assert await presence_of(carol_ws, alice_id) == "offline"


async def test_a_dm_opened_after_the_audience_was_read_reaches_the_next_announcement(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=GRACE)
    alice, alice_token, alice_id = await signed_in(server, "alice")
    _, dave_token, dave_id = await signed_in(server, "dave")
    await offline(server, await online(server, alice_token), alice_id)
    dave_ws = await online(server, dave_token)
    assert (await alice.post("/api/conversations/dm", {"user_id": dave_id})).status == 200
    await online(server, alice_token)
    assert await presence_of(dave_ws, alice_id) == "online"


@pytest.mark.parametrize("change", ["block", "blocked_by", "unfriend"])
async def test_a_block_or_unfriending_hides_the_very_next_announcement(
    make_server: ServerFactory, change: str
) -> None:
    server = await make_server(presence_grace_secs=GRACE)
    alice, alice_token, alice_id = await signed_in(server, "alice")
    carol, carol_token, carol_id = await signed_in(server, "carol")
    await befriend(alice, carol, carol_id)
    carol_ws = await online(server, carol_token)
    alice_ws = await online(server, alice_token)
    assert await presence_of(carol_ws, alice_id) == "online"  # the audience is kept from here
    if change == "block":
        assert (await alice.put(f"/api/blocks/{carol_id}")).status == 200
    elif change == "blocked_by":
        assert (await carol.put(f"/api/blocks/{alice_id}")).status == 200
    else:
        assert (await carol.delete(f"/api/friends/{alice_id}")).status == 200
    if change != "unfriend":
        # The block itself withdraws Alice's dot from Carol, once (docs/protocol.md, Presence).
        withdrawn = (await carol_ws.event("presence"))["event"]
        assert (withdrawn["user_id"], withdrawn["blocked"]) == (alice_id, True)
    await offline(server, alice_ws, alice_id)
    await no_presence(carol_ws, 0.3)
    if change != "unfriend":
        # Lifting the block does not bring the friendship back: still nothing to see.
        blocker = alice if change == "block" else carol
        other = carol_id if change == "block" else alice_id
        assert (await blocker.delete(f"/api/blocks/{other}")).status == 200
    await online(server, alice_token)
    await no_presence(carol_ws, 0.3)


async def test_a_connect_with_the_database_down_is_answered_from_memory_only_when_known(
    own_database: Restartable, make_server: ServerFactory
) -> None:
    server = await make_server(
        mongo_uri=own_database.db.uri,
        db_timeout_ms=500,
        session_check_secs=30,
        presence_grace_secs=GRACE,
    )
    alice, alice_token, alice_id = await signed_in(server, "alice")  # its session: created here
    await offline(server, await online(server, alice_token), alice_id)  # its user: read once
    _, stranger_token, _ = await signed_in(server, "stranger")  # session known, user never read
    own_database.stop()
    # Nothing to read: the hello comes from memory, over both transports.
    hello = await (await WsClient.connect(server.ws_url)).auth(alice_token)
    assert hello["user"]["id"] == alice_id
    polled = await alice.get("/api/events")
    assert polled.status == 200 and polled.body["events"][0]["event"]["type"] == "hello"
    # The stranger's user must be read: not a client error, try again (1013 / 503).
    ws = await WsClient.connect(server.ws_url)
    await ws.send({"type": "auth", "token": stranger_token})
    assert await ws.wait_closed() == 1013
    stranger = server.client(stranger_token)
    r = await stranger.get("/api/events")
    assert r.status == 503 and r.body["error"]["code"] == "database_unavailable"
    own_database.restart()
    deadline = time.monotonic() + 10
    while (r := await stranger.get("/api/events")).status != 200:
        assert time.monotonic() < deadline, "no hello after the database came back"
        await asyncio.sleep(0.1)
