"""Server sides of the client defects of issue 14: a group change answers with the caller's
real read state, and a block tells both sides at once to drop each other's presence."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import (  # noqa: F401 (close_sockets_cleanly is an autouse fixture)
    close_sockets_cleanly,
    join,
    send,
)
from tests.test_social import (  # noqa: F401 (drain_sockets is an autouse fixture)
    become_friends,
    drain_sockets,
    people,
)


def listed(conversations: list[dict[str, Any]], conversation_id: str) -> dict[str, Any]:
    return next(c for c in conversations if c["id"] == conversation_id)


@pytest.mark.parametrize("transport", ["rest", "ws"])
async def test_a_group_change_answers_with_the_callers_read_state(
    server: RunningServer, transport: str
) -> None:
    owner = await join(server, "owner", transport)
    ann = await join(server, "ann")
    ben = await join(server, "ben")
    group = (await owner.call("groups.create", name="Team", member_ids=[ann.id, ben.id])).expect(
        201
    )["conversation"]
    cid = group["id"]
    await send(ann, cid, "one")
    second = await send(ann, cid, "two")
    (await owner.call("conversations.read", conversation_id=cid, seq=second["seq"])).expect()

    changes = [
        ("groups.update", {"name": "Crew"}),
        ("groups.set_role", {"user_id": ann.id, "role": "admin"}),
        ("groups.set_role", {"user_id": ann.id, "role": "member"}),
        ("groups.remove_member", {"user_id": ben.id}),
        ("groups.add_members", {"user_ids": [ben.id]}),
    ]
    for command, fields in changes:
        reply = (await owner.call(command, conversation_id=cid, **fields)).expect()
        conv = reply["conversation"]
        listing = (await owner.call("conversations.list")).expect()["conversations"]
        expected = listed(listing, cid)
        assert (conv["read_seq"], conv["unread_count"]) == (second["seq"], 0), command
        assert (conv["read_seq"], conv["unread_count"]) == (
            expected["read_seq"],
            expected["unread_count"],
        ), command
        assert conv["last_message"]["id"] == second["id"], command


async def test_a_block_withdraws_presence_from_both_sides_at_once(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=0.05)
    alice, bob = await people(server, "alice", "bob")
    await become_friends(alice, bob)
    for person in (alice, bob):
        await person.event("friend.accepted")
    await asyncio.sleep(0.1)
    for person in (alice, bob):
        person.ws.frames.clear()  # type: ignore[union-attr]

    (await alice.rest("blocks.add", user_id=bob.id)).expect(200)
    # Bob is told at once that Alice is offline for him, before the friendship ends.
    withdrawn = await bob.event("presence")
    assert withdrawn == {
        "type": "presence",
        "user_id": alice.id,
        "status": "offline",
        "last_seen": None,
        "blocked": True,
    }
    await bob.event("friend.removed")
    # Alice's other tabs learn the same about Bob.
    mirrored = await alice.event("presence")
    assert mirrored["user_id"] == bob.id and mirrored["blocked"] is True
    assert mirrored["status"] == "offline" and mirrored["last_seen"] is None
    # And nothing more afterwards.
    await alice.disconnect()
    await alice.connect()
    await bob.no_event("presence", within=0.3)

    # Lifted: they share no friendship or DM, so neither sees the other: nothing to say.
    (await alice.rest("blocks.remove", user_id=bob.id)).expect(200)
    await bob.no_event("presence", within=0.3)


async def test_a_block_lifted_between_dm_partners_gives_presence_back(
    make_server: ServerFactory,
) -> None:
    server = await make_server(presence_grace_secs=0.05)
    alice, bob = await people(server, "alice", "bob")
    response = await alice.api.post("/api/conversations/dm", {"user_id": bob.id})
    assert response.status == 200
    await asyncio.sleep(0.1)
    (await alice.rest("blocks.add", user_id=bob.id)).expect(200)
    withdrawn = await bob.event("presence")
    assert withdrawn["user_id"] == alice.id and withdrawn["blocked"] is True
    assert (await alice.event("presence"))["blocked"] is True
    (await alice.rest("blocks.remove", user_id=bob.id)).expect(200)
    back = await bob.event("presence")
    assert back == {
        "type": "presence",
        "user_id": alice.id,
        "status": "online",
        "last_seen": None,
        "blocked": False,
    }
    again = await alice.event("presence")
    assert again["user_id"] == bob.id and again["blocked"] is False
    assert again["status"] == "online"


async def test_no_withdrawal_for_a_stranger(make_server: ServerFactory) -> None:
    server = await make_server(presence_grace_secs=0.05)
    alice, bob = await people(server, "alice", "bob")
    (await alice.rest("blocks.add", user_id=bob.id)).expect(200)
    # Bob never saw Alice's presence: he is told nothing (not even her id).
    await bob.no_event("presence", within=0.3)
