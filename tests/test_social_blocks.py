"""Blocking over REST and WebSocket: what a block ends, what it forbids, and that nothing about
the blocker reaches the blocked user afterwards, through any endpoint or event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.test_social import (  # noqa: F401 (drain_sockets is an autouse fixture)
    TRANSPORTS,
    Person,
    become_friends,
    drain_sockets,
    friend_ids,
    pending,
    people,
)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


async def search_ids(person: Person, **fields: Any) -> set[str]:
    users = (await person.rest("users.search", **fields)).expect(200)["users"]
    return {u["id"] for u in users}


async def test_block_ends_friendship_and_pending_requests(
    server: RunningServer, transport: str
) -> None:
    alice, bob, carol, dave = await people(server, "alice", "bob", "carol", "dave")
    await become_friends(alice, bob)
    to_alice = (await carol.rest("friends.request", user_id=alice.id)).expect(201)["request"]
    from_alice = (await alice.rest("friends.request", user_id=dave.id)).expect(201)["request"]
    for person in (alice, bob):
        await person.event("friend.accepted")
    await carol.event("friend.request")
    await dave.event("friend.request")

    block = (await alice.call(transport, "blocks.add", user_id=bob.id)).expect(200)["block"]
    assert block["user"] == {"id": bob.id, "username": "bob"} and block["created_at"].endswith("Z")
    # Bob is told exactly what an ordinary removal would tell him.
    assert (await bob.event("friend.removed"))["user"] == {"id": alice.id, "username": "alice"}
    assert (await alice.event("friend.removed"))["user"]["id"] == bob.id
    assert await friend_ids(alice) == [] and await friend_ids(bob) == []

    (await alice.call(transport, "blocks.add", user_id=carol.id)).expect(200)
    declined = await carol.event("friend.request.cancelled")  # as if Alice declined
    assert declined["request"]["id"] == to_alice["id"]
    assert declined["request"]["status"] == "declined"
    (await alice.call(transport, "blocks.add", user_id=dave.id)).expect(200)
    cancelled = await dave.event("friend.request.cancelled")  # as if Alice cancelled
    assert cancelled["request"]["id"] == from_alice["id"]
    assert cancelled["request"]["status"] == "cancelled"
    for person in (alice, carol, dave):
        assert await pending(person) == ([], [])

    listed = (await alice.call(transport, "blocks.list")).expect(200)["blocks"]
    assert [b["user"] for b in listed] == [
        {"id": dave.id, "username": "dave"},
        {"id": carol.id, "username": "carol"},
        {"id": bob.id, "username": "bob"},
    ]
    assert (await bob.call(transport, "blocks.list")).expect(200) == {"blocks": []}


async def test_blocked_pair_cannot_send_requests(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    (await alice.call(transport, "blocks.add", user_id=bob.id)).expect(200)
    for sender, target in ((bob, alice), (alice, bob)):
        by_id = await sender.call(transport, "friends.request", user_id=target.id)
        by_id.fails(403, "blocked")
        # By code the other is simply not found, like in the code lookup.
        by_code = await sender.call(transport, "friends.request", friend_code=target.code)
        by_code.fails(404, "not_found")
    assert await pending(alice) == ([], []) and await pending(bob) == ([], [])
    await alice.no_event("friend.request")
    await bob.no_event("friend.request")


async def test_block_hides_the_pair_from_search_and_code_lookup(
    server: RunningServer, transport: str
) -> None:
    alice, bob, carol = await people(server, "alice", "bob", "carol")
    assert alice.id in await search_ids(bob, q="al")
    (await alice.call(transport, "blocks.add", user_id=bob.id)).expect(200)
    for viewer, hidden in ((bob, alice), (alice, bob)):
        for fields in ({}, {"q": hidden.name[:2]}, {"q": hidden.name.upper()}):
            users = (await viewer.call(transport, "users.search", **fields)).expect(200)["users"]
            assert hidden.id not in {u["id"] for u in users}, fields
        lookup = await viewer.call(transport, "users.by_code", code=hidden.code)
        lookup.fails(404, "not_found")
    # Others still see both.
    assert {alice.id, bob.id} <= await search_ids(carol)
    # A full page stays full: the hidden user does not shorten it.
    page = (await bob.call(transport, "users.search", limit=1)).expect(200)
    assert [u["id"] for u in page["users"]] == [carol.id]

    (await alice.call(transport, "blocks.remove", user_id=bob.id)).expect(200)
    assert alice.id in await search_ids(bob, q="al") and bob.id in await search_ids(alice)
    found = (await bob.call(transport, "users.by_code", code=alice.code)).expect(200)
    assert found["user"]["id"] == alice.id


async def test_block_rules(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    await become_friends(alice, bob)
    selfie = await alice.call(transport, "blocks.add", user_id=alice.id)
    selfie.fails(400, "validation_failed")
    assert selfie.field == "user_id"
    (await alice.call(transport, "blocks.add", user_id="0" * 24)).fails(404, "not_found")
    (await alice.call(transport, "blocks.add", user_id="nobody")).fails(404, "not_found")
    (await alice.call(transport, "blocks.add", user_id="no/body")).fails(400, "validation_failed")

    first = (await alice.call(transport, "blocks.add", user_id=bob.id)).expect(200)
    again = (await alice.call(transport, "blocks.add", user_id=bob.id)).expect(200)
    assert first == again  # idempotent: the same block, not a second one
    assert len((await alice.rest("blocks.list")).expect(200)["blocks"]) == 1

    # Bob may block Alice too; each block is lifted only by its maker.
    (await bob.call(transport, "blocks.add", user_id=alice.id)).expect(200)
    (await bob.call(transport, "blocks.remove", user_id=alice.id)).expect(200)
    (await bob.call(transport, "blocks.remove", user_id=alice.id)).fails(404, "not_found")
    (await alice.rest("friends.request", user_id=bob.id)).fails(403, "blocked")

    assert (await alice.call(transport, "blocks.remove", user_id=bob.id)).expect(200) == {}
    (await alice.call(transport, "blocks.remove", user_id=bob.id)).fails(404, "not_found")
    # Unblocking does not bring the friendship back; asking again works.
    assert await friend_ids(alice) == []
    (await bob.rest("friends.request", user_id=alice.id)).expect(201)


async def test_block_hooks_used_by_conversations_and_presence(server: RunningServer) -> None:
    alice, bob, carol = await people(server, "alice", "bob", "carol", online=False)
    service = server.service
    assert not await service.is_blocked_between(alice.id, bob.id)
    (await alice.rest("blocks.add", user_id=bob.id)).expect(200)
    (await carol.rest("blocks.add", user_id=alice.id)).expect(200)
    assert await service.is_blocked_between(alice.id, bob.id)
    assert await service.is_blocked_between(bob.id, alice.id)
    assert not await service.is_blocked_between(bob.id, carol.id)
    assert await service.blocked_either_way(alice.id) == {bob.id, carol.id}
    assert await service.blocked_either_way(bob.id) == {alice.id}


async def test_blocked_pair_cannot_open_a_dm(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob", online=False)
    (await bob.rest("blocks.add", user_id=alice.id)).expect(200)
    response = await alice.api.post("/api/conversations/dm", {"user_id": bob.id})
    assert response.status == 403 and response.error_code == "blocked"


async def test_blocked_user_receives_no_more_presence(make_server: ServerFactory) -> None:
    server = await make_server(presence_grace_secs=0.05)
    alice, bob, dave = await people(server, "alice", "bob", "dave")
    await become_friends(alice, bob)
    for person in (alice, bob):
        await person.event("friend.accepted")
    # Bob and Dave also watch Alice's presence by subscription.
    for watcher in (bob, dave):
        sub = await watcher.rest(
            "presence.subscribe", queue_id=watcher.queue_id, user_ids=[alice.id]
        )
        assert sub.expect(200)["user_ids"] == [alice.id]

    # Before the block, Bob sees Alice come and go (as a friend and subscriber: once).
    await alice.disconnect()
    assert (await bob.event("presence"))["status"] == "offline"
    await alice.connect()
    assert (await bob.event("presence"))["status"] == "online"
    await bob.no_event("presence", within=0.1)

    (await alice.rest("blocks.add", user_id=bob.id)).expect(200)
    # Told once, at once, to drop Alice's dot (nothing about when she was last seen).
    withdrawn = await bob.event("presence")
    assert (withdrawn["user_id"], withdrawn["status"], withdrawn["last_seen"]) == (
        alice.id,
        "offline",
        None,
    )
    await bob.event("friend.removed")
    assert bob.id not in await server.service.presence_audience(alice.id)
    again = await bob.rest("presence.subscribe", queue_id=bob.queue_id, user_ids=[alice.id])
    assert again.expect(200)["user_ids"] == []

    for status in ("offline", "online"):
        if status == "offline":
            await alice.disconnect()
        else:
            await alice.connect()
        event = await dave.event("presence")  # Dave, not blocked, still sees it...
        assert event["user_id"] == alice.id and event["status"] == status
    await asyncio.sleep(0.1)
    # ...Bob, who watched the same way, sees nothing.
    assert not [e for e in bob.pending_events() if e["type"] == "presence"]
    await bob.no_event("presence", within=0.2)


async def test_nothing_about_the_blocker_reaches_the_blocked_user(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=0.05)
    alice, bob, carol = await people(server, "alice", "bob", "carol")
    await become_friends(alice, bob)
    await become_friends(carol, bob)
    await become_friends(carol, alice)
    (await alice.rest("blocks.add", user_id=bob.id)).expect(200)
    removed = await bob.event("friend.removed")
    # Only who ended the friendship, as in any removal: no presence, no last_seen.
    assert removed == {"type": "friend.removed", "user": {"id": alice.id, "username": "alice"}}
    assert bob.ws is not None
    bob.ws.frames.clear()  # what Bob received while they were friends is not a leak
    traces = (alice.id, alice.name, alice.code, alice.code.replace("-", ""), "alice@")

    # Alice lives her life: goes offline and back, searches, befriends, is asked by Carol.
    await alice.disconnect()
    await alice.connect()
    await alice.rest("users.search", q="b")
    await alice.rest("friends.remove", user_id=carol.id)
    await become_friends(carol, alice)
    await asyncio.sleep(0.2)  # presence announcements are asynchronous

    # Bob reads everything he can read.
    replies: list[Any] = []
    for command, fields in (
        ("users.search", {}),
        ("users.search", {"q": "a"}),
        ("users.search", {"q": "alice"}),
        ("users.by_code", {"code": alice.code}),
        ("friends.list", {}),
        ("friends.requests", {}),
        ("blocks.list", {}),
    ):
        replies.append((await bob.rest(command, **fields)).data)
    replies.append((await bob.api.get("/api/me")).body)
    refused = await bob.rest("friends.request", user_id=alice.id)
    refused.fails(403, "blocked")
    replies.append(refused.data)
    # Carol, who is everyone's friend, sends Bob something: everything published before it
    # on his queue has arrived when it does.
    (await bob.rest("friends.remove", user_id=carol.id)).expect(200)
    await bob.event("friend.removed")
    replies.append(bob.pending_events())

    text = json.dumps(replies)
    for trace in traces:
        assert trace not in text, trace
    # ...and the same calls do show Alice to someone she did not block.
    carol_view = json.dumps((await carol.rest("users.search", q="a")).data)
    assert alice.id in carol_view


async def test_block_racing_with_accept_and_request(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob", online=False)
    for _ in range(4):
        # Alice blocks Bob just as Bob accepts her request.
        request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
        block, accept = await asyncio.gather(
            alice.rest("blocks.add", user_id=bob.id),
            bob.rest("friends.accept", request_id=request["id"]),
        )
        block.expect(200)
        assert accept.ok or accept.code in ("not_found", "blocked"), accept
        assert await friend_ids(alice) == [] and await friend_ids(bob) == []
        assert await pending(alice) == ([], []) and await pending(bob) == ([], [])
        (await alice.rest("blocks.remove", user_id=bob.id)).expect(200)

        # Alice blocks Bob just as Bob asks her.
        block, ask = await asyncio.gather(
            alice.rest("blocks.add", user_id=bob.id),
            bob.rest("friends.request", user_id=alice.id),
        )
        block.expect(200)
        assert ask.ok or ask.code == "blocked", ask
        assert await pending(alice) == ([], []) and await pending(bob) == ([], [])
        (await alice.rest("blocks.remove", user_id=bob.id)).expect(200)
