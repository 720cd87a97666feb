"""A block between two users stops their read receipts and typing notifications, both ways, in
their DM and in every group they share; the other members still get both."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer
from tests.test_conversations import (
    TRANSPORTS,
    Member,
    close_sockets_cleanly,
    join,
    open_dm,
    send,
)

__all__ = ["close_sockets_cleanly"]  # the autouse fixture, for this module too


async def read(member: Member, conversation_id: str, seq: int) -> None:
    (await member.call("conversations.read", conversation_id=conversation_id, seq=seq)).expect()


async def typing(member: Member, conversation_id: str) -> None:
    reply = (await member.call("typing", conversation_id=conversation_id)).expect()
    assert reply == {"forwarded": True}


async def dm_and_group(
    server: RunningServer, transport: str
) -> tuple[Member, Member, Member, str, str]:
    """alice and bob with their DM, and carol's group "club" with both of them."""
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    carol = await join(server, "carol", transport)
    dm = (await open_dm(alice, bob))["id"]
    group = (await carol.call("groups.create", name="club", member_ids=[alice.id, bob.id])).expect(
        201
    )["conversation"]["id"]
    return alice, bob, carol, dm, group


def reads_seen(listed: list[dict[str, object]], conversation_id: str) -> dict[str, int]:
    [conversation] = [c for c in listed if c["id"] == conversation_id]
    reads = conversation["reads"]
    assert isinstance(reads, dict)
    return reads


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("blocker", ["alice", "bob"])
async def test_a_block_stops_receipts_and_typing_both_ways(
    server: RunningServer, transport: str, blocker: str
) -> None:
    alice, bob, carol, dm, group = await dm_and_group(server, transport)
    for i in range(6):
        await send(carol, group, f"g{i}")
        await send(alice if i % 2 else bob, dm, f"d{i}")

    # Before the block a read in the DM is a receipt for the other side.
    await read(bob, dm, 1)
    assert (await alice.event("conversation.read"))["user_id"] == bob.id
    assert (await bob.event("conversation.read"))["seq"] == 1  # its own tabs too

    one, other = (alice, bob) if blocker == "alice" else (bob, alice)
    (await one.call("blocks.add", user_id=other.id)).expect()

    # DM: each side's read moves its own pointer and reaches its own tabs, not the other side.
    for reader, watcher, seq in ((alice, bob, 2), (bob, alice, 3)):
        await read(reader, dm, seq)
        assert (await reader.event("conversation.read"))["seq"] == seq
        await watcher.no_event("conversation.read")
    # Group: carol gets both receipts and both typing events; the blocked pair neither.
    for actor, watcher, seq in ((alice, bob, 4), (bob, alice, 5)):
        await read(actor, group, seq)
        receipt = await carol.event("conversation.read")
        assert (receipt["user_id"], receipt["seq"]) == (actor.id, seq)
        assert (await actor.event("conversation.read"))["seq"] == seq
        await watcher.no_event("conversation.read")
        await typing(actor, group)
        assert (await carol.event("typing"))["user_id"] == actor.id
        await watcher.no_event("typing")
    # Nor do the read pointers show through the conversation list (receipts after a reload).
    for viewer, hidden in ((alice, bob), (bob, alice)):
        listed = (await viewer.call("conversations.list")).expect()["conversations"]
        assert hidden.id not in reads_seen(listed, group)
        assert hidden.id not in reads_seen(listed, dm)
    listed = (await carol.call("conversations.list")).expect()["conversations"]
    assert reads_seen(listed, group) == {alice.id: 4, bob.id: 5}

    # Lifted: receipts and typing flow again, in both directions.
    (await one.call("blocks.remove", user_id=other.id)).expect()
    await read(bob, dm, 6)
    receipt = await alice.event("conversation.read")
    assert (receipt["conversation_id"], receipt["user_id"], receipt["seq"]) == (dm, bob.id, 6)
    assert (await bob.event("conversation.read"))["user_id"] == bob.id  # its own
    await read(alice, group, 6)
    receipt = await bob.event("conversation.read")
    assert (receipt["conversation_id"], receipt["user_id"], receipt["seq"]) == (group, alice.id, 6)
    await typing(bob, dm)
    assert (await alice.event("typing"))["user_id"] == bob.id
    listed = (await alice.call("conversations.list")).expect()["conversations"]
    assert reads_seen(listed, group)[bob.id] == 5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_dm_says_when_a_block_closes_it_on_both_sides(
    server: RunningServer, transport: str
) -> None:
    alice, bob, _carol, dm, group = await dm_and_group(server, transport)

    async def flags(member: Member) -> dict[str, bool]:
        listed = (await member.call("conversations.list")).expect()["conversations"]
        return {c["id"]: c["blocked"] for c in listed}

    assert await flags(alice) == await flags(bob) == {dm: False, group: False}
    (await alice.call("blocks.add", user_id=bob.id)).expect()
    # Both sides: the blocked one has no other way to learn it after a reload.
    assert await flags(alice) == await flags(bob) == {dm: True, group: False}
    (await alice.call("blocks.remove", user_id=bob.id)).expect()
    assert await flags(alice) == await flags(bob) == {dm: False, group: False}
