"""reactions.add and reactions.remove over REST and WebSocket: the message.reactions events
every member gets in order with the messages, `me` per reader, idempotency, the bound of 20
emoji, what is a valid emoji, who may react (not a stranger, a removed member, a blocked
pair), deleted messages, and history and exports showing the current state."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bson import ObjectId

from tests.conftest import RunningServer
from tests.test_conversations import TRANSPORTS, Member, history, join, open_dm, send
from tests.test_lifecycle import delete, make_group, message_events


def react(member: Member, cid: str, mid: str, emoji: str) -> Any:
    return member.call("reactions.add", conversation_id=cid, message_id=mid, emoji=emoji)


def unreact(member: Member, cid: str, mid: str, emoji: str) -> Any:
    return member.call("reactions.remove", conversation_id=cid, message_id=mid, emoji=emoji)


def summary(message: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """(emoji, count, me) of each reaction, in order."""
    return [(r["emoji"], r["count"], r["me"]) for r in message.get("reactions", [])]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reactions_reach_every_member_in_order_with_the_messages(
    server: RunningServer, transport: str
) -> None:
    owner = await join(server, "owner", transport)
    ann = await join(server, "ann", transport)
    bob = await join(server, "bob", transport)
    gid = await make_group(owner, ann, bob)
    first = await send(owner, gid, "lunch?")
    mine = (await react(ann, gid, first["id"], "👍")).expect()["message"]
    assert summary(mine) == [("👍", 1, True)] and mine["reactions"][0]["user_ids"] == [ann.id]
    again = (await react(ann, gid, first["id"], "👍")).expect()["message"]  # idempotent
    assert summary(again) == [("👍", 1, True)]
    both = (await react(bob, gid, first["id"], "👍")).expect()["message"]
    assert summary(both) == [("👍", 2, True)]
    assert both["reactions"][0]["user_ids"] == [ann.id, bob.id]
    await react(bob, gid, first["id"], ":tada:")
    second = await send(bob, gid, "yes")
    (await unreact(ann, gid, first["id"], "👍")).expect()
    (await unreact(ann, gid, first["id"], "👍")).expect()  # nothing to remove: no event
    for member in (owner, ann, bob):
        got = await message_events(member, 6)
        assert [e["type"] for e in got] == [
            "message.new",
            "message.reactions",
            "message.reactions",
            "message.reactions",
            "message.new",
            "message.reactions",
        ]
        assert [e["id"] for e in got] == sorted(e["id"] for e in got)
        assert got[4]["message"]["id"] == second["id"]
        last = got[5]["message"]
        assert [(r["emoji"], r["count"]) for r in last["reactions"]] == [("👍", 1), (":tada:", 1)]
        assert [r["me"] for r in last["reactions"]] == [member is bob] * 2
    page = await history(owner, gid)
    assert summary(page["messages"][0]) == [("👍", 1, False), (":tada:", 1, False)]
    export = await owner.api.get(f"/api/conversations/{gid}/export")
    exported = export.body["conversations"][0]["messages"][0]["reactions"]
    assert [(r["emoji"], r["count"], r["user_ids"]) for r in exported] == [
        ("👍", 1, [bob.id]),
        (":tada:", 1, [bob.id]),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_at_most_20_emoji_and_only_valid_ones(server: RunningServer, transport: str) -> None:
    alice = await join(server, "alice", transport, online=False)
    bob = await join(server, "bob", transport, online=False)
    cid = (await open_dm(alice, bob))["id"]
    said = await send(alice, cid, "react away")
    for i in range(20):
        (await react(alice, cid, said["id"], f":e{i}:")).expect()
    (await react(bob, cid, said["id"], ":one_more:")).fails(409, "too_many_reactions", "emoji")
    (await react(bob, cid, said["id"], ":e3:")).expect()  # an emoji already there is fine
    (await unreact(alice, cid, said["id"], ":e0:")).expect()
    (await react(bob, cid, said["id"], ":one_more:")).expect()  # room again
    for bad in ("ab", "👍👍", " ", ":no spaces:", "::", "x" * 40, "\u0301"):
        (await react(alice, cid, said["id"], bad)).fails(400, "validation_failed", "emoji")
    for good in ("🇫🇷", "👩‍💻", "👍🏽", "1️⃣", "é", "❤️"):
        (await react(alice, cid, said["id"], good)).fails(409, "too_many_reactions")
    page = await history(bob, cid)
    assert len(page["messages"][0]["reactions"]) == 20


async def test_valid_emoji_of_several_code_points_are_one_reaction(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    said = await send(alice, cid, "flags")
    for good in ("🇫🇷", "👩‍💻", "👍🏽", "1️⃣", "é", "❤️"):
        (await react(bob, cid, said["id"], good)).expect()
    # Over REST the emoji is a path segment, URL-encoded.
    got = (await history(alice, cid))["messages"][0]["reactions"]
    assert [r["emoji"] for r in got] == ["🇫🇷", "👩‍💻", "👍🏽", "1️⃣", "é", "❤️"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_strangers_removed_members_and_blocked_pairs_cannot_react(
    server: RunningServer, transport: str
) -> None:
    owner = await join(server, "owner", transport, online=False)
    ann = await join(server, "ann", transport, online=False)
    eve = await join(server, "eve", transport, online=False)
    gid = await make_group(owner, ann)
    said = await send(owner, gid, "hello team")
    (await react(eve, gid, said["id"], "👍")).fails(404, "not_found")
    (await unreact(eve, gid, said["id"], "👍")).fails(404, "not_found")
    (await react(owner, gid, str(ObjectId()), "👍")).fails(404, "not_found")
    (await react(ann, gid, said["id"], "👍")).expect()
    (await ann.call("groups.remove_member", conversation_id=gid, user_id=ann.id)).expect()
    (await react(ann, gid, said["id"], "🎉")).fails(403, "forbidden")
    (await unreact(ann, gid, said["id"], "👍")).fails(403, "forbidden")
    # A blocked pair, in their DM: neither reacts to the other's messages.
    cid = (await open_dm(owner, eve))["id"]
    theirs = await send(eve, cid, "hi")
    ours = await send(owner, cid, "hi back")
    shared = await make_group(owner, eve)
    by_owner, by_eve = await send(owner, shared, "team"), await send(eve, shared, "here")
    (await owner.call("blocks.add", user_id=eve.id)).expect()
    (await react(owner, cid, theirs["id"], "👍")).fails(403, "blocked")
    (await react(eve, cid, ours["id"], "👍")).fails(403, "blocked")
    assert "reactions" not in (await history(owner, cid))["messages"][1]
    # In a group they share, the same: a reaction is a personal signal (contract section 5).
    (await react(owner, shared, by_eve["id"], "👍")).fails(403, "blocked")
    (await react(eve, shared, by_owner["id"], "👍")).fails(403, "blocked")
    (await react(eve, shared, by_eve["id"], "👍")).expect()  # her own message: no pair
    counts = [r["count"] for r in (await history(owner, gid))["messages"][0]["reactions"]]
    assert counts == [1]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_deleted_message_loses_its_reactions_and_takes_no_more(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport, online=False)
    bob = await join(server, "bob", transport, online=False)
    cid = (await open_dm(alice, bob))["id"]
    said = await send(alice, cid, "soon gone")
    (await react(bob, cid, said["id"], "😮")).expect()
    tomb = (await delete(alice, cid, said["id"])).expect()["message"]
    assert "reactions" not in tomb
    (await react(bob, cid, said["id"], "👍")).fails(409, "conflict")
    (await unreact(bob, cid, said["id"], "😮")).fails(409, "conflict")
    stored = await server.store.db["messages"].find_one({"_id": ObjectId(said["id"])})
    assert stored is not None and "reactions" not in stored


async def test_concurrent_reactions_are_each_counted_once(server: RunningServer) -> None:
    owner = await join(server, "owner", online=False)
    members = [await join(server, f"m{i}", online=False) for i in range(8)]
    gid = await make_group(owner, *members)
    said = await send(owner, gid, "vote")
    emoji = ["👍", "👎", "🎉"]
    calls = [react(m, gid, said["id"], emoji[i % 3]) for i, m in enumerate(members)]
    calls += [react(m, gid, said["id"], "👍") for m in members]
    for result in await asyncio.gather(*calls):
        result.expect()
    got = {r["emoji"]: r for r in (await history(owner, gid))["messages"][0]["reactions"]}
    assert got["👍"]["count"] == 8 and got["👎"]["count"] == 3 and got["🎉"]["count"] == 2
    assert sorted(got["👍"]["user_ids"]) == sorted(m.id for m in members)


async def test_racing_writers_without_a_lock_count_each_reaction_once(
    server: RunningServer,
) -> None:
    """What two processes do: the store's updates raced directly, with no line lock between
    them. Every add counts once, and never more than 20 distinct emoji get in."""
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    said = await send(alice, cid, "race")
    reactions = server.store.reactions
    users = [alice.id, bob.id] * 3
    got = await asyncio.gather(
        *[reactions.add(cid, said["id"], "👍", user, 1) for user in users],
        *[reactions.add(cid, said["id"], f":r{i}:", bob.id, 1) for i in range(25)],
        return_exceptions=True,
    )
    refused = [g for g in got if isinstance(g, Exception)]
    assert refused and all(type(g).__name__ == "TooManyReactions" for g in refused)
    stored = (await history(alice, cid))["messages"][0]["reactions"]
    assert len(stored) == 20
    thumbs = [r for r in stored if r["emoji"] == "👍"]
    if thumbs:  # in: its 6 adds by two users count 2; 6 other emoji were refused
        assert thumbs[0]["count"] == 2 and len(refused) == 6
    else:  # out: its 6 adds were refused, and 5 of the others
        assert len(refused) == 11
