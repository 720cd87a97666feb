"""Groups over REST and WebSocket: create, rename, add, remove, leave, roles and ownership,
the size limit, and what a removed member can still read (what came before its removal,
read-only) and can no longer receive (anything after)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bson import ObjectId

from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import (
    TRANSPORTS,
    Member,
    close_sockets_cleanly,
    history,
    join,
    open_dm,
    send,
    seqs,
)

__all__ = ["close_sockets_cleanly"]  # the autouse fixture, for this module too


async def create(owner: Member, name: str, members: list[Member]) -> dict[str, Any]:
    reply = await owner.call("groups.create", name=name, member_ids=[m.id for m in members])
    conversation: dict[str, Any] = reply.expect(201)["conversation"]
    return conversation


def roles(conversation: dict[str, Any]) -> dict[str, str]:
    return {m["user_id"]: m["role"] for m in conversation["members"]}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_create_get_rename_with_events(server: RunningServer, transport: str) -> None:
    owner = await join(server, "owner", transport)
    ann = await join(server, "ann", transport)
    ben = await join(server, "ben", transport, online=False)
    group = await create(owner, "  Team  ", [ann, ben, owner])  # the creator once, as owner
    assert group["kind"] == "group" and group["name"] == "Team"
    assert roles(group) == {owner.id: "owner", ann.id: "member", ben.id: "member"}
    assert [m["user_id"] for m in group["members"]] == [owner.id, ann.id, ben.id]
    assert group["unread_count"] == 0 and group["last_message"] is None
    for member in (owner, ann):
        event = await member.event("group.created")
        assert event["conversation"]["id"] == group["id"]
        assert roles(event["conversation"]) == roles(group)
    got = (await ben.call("groups.get", conversation_id=group["id"])).expect()["conversation"]
    assert got["id"] == group["id"] and got["name"] == "Team"
    renamed = (await owner.call("groups.update", conversation_id=group["id"], name="Crew")).expect()
    assert renamed["conversation"]["name"] == "Crew"
    for member in (owner, ann):
        event = await member.event("group.updated")
        assert event["conversation"]["name"] == "Crew" and event["by"] == owner.id
    # The group id is the conversation id: messages use it.
    message = await send(ann, group["id"], "hello team")
    assert (await owner.event("message.new"))["message"]["id"] == message["id"]
    # Validation.
    for name in ("", "   ", "x" * 65):
        (await owner.call("groups.create", name=name, member_ids=[])).fails(
            400, "validation_failed", "name"
        )
        (await owner.call("groups.update", conversation_id=group["id"], name=name)).fails(
            400, "validation_failed", "name"
        )
    (await owner.call("groups.create", name="x", member_ids="nope")).fails(400, "validation_failed")
    (await owner.call("groups.create", name="x", member_ids=[str(ObjectId())])).fails(
        404, "not_found", "member_ids"
    )
    alone = await create(owner, "just me", [])
    assert roles(alone) == {owner.id: "owner"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_add_and_remove_members_with_events(server: RunningServer, transport: str) -> None:
    owner = await join(server, "owner", transport)
    ann = await join(server, "ann", transport)
    ben = await join(server, "ben", transport)
    group = await create(owner, "g", [ann])
    gid = group["id"]
    added = (
        await owner.call("groups.add_members", conversation_id=gid, user_ids=[ben.id])
    ).expect()
    assert roles(added["conversation"]) == {owner.id: "owner", ann.id: "member", ben.id: "member"}
    for member in (owner, ann, ben):
        event = await member.event("group.member_added")
        assert event["user_ids"] == [ben.id] and event["conversation"]["id"] == gid
    # Adding a member again changes nothing and tells nobody.
    again = await owner.call("groups.add_members", conversation_id=gid, user_ids=[ben.id, ann.id])
    assert roles(again.expect()["conversation"]) == roles(added["conversation"])
    await ann.no_event("group.member_added", wait=0.1)
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[])).fails(400)
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[str(ObjectId())])).fails(
        404, "not_found", "user_ids"
    )
    removed = await owner.call("groups.remove_member", conversation_id=gid, user_id=ben.id)
    assert ben.id not in roles(removed.expect()["conversation"])
    for member in (owner, ann, ben):  # the removed member is told too
        event = await member.event("group.member_removed")
        assert event["user_id"] == ben.id and ben.id not in roles(event["conversation"])
    (await owner.call("groups.remove_member", conversation_id=gid, user_id=ben.id)).fails(
        404, "not_found", "user_id"
    )
    # Leaving is removing oneself.
    left = await ann.call("groups.remove_member", conversation_id=gid, user_id=ann.id)
    assert ann.id not in roles(left.expect()["conversation"])
    assert (await owner.event("group.member_removed"))["user_id"] == ann.id
    assert (await ann.event("group.member_removed"))["user_id"] == ann.id
    listed = (await ann.call("conversations.list")).expect()["conversations"]
    assert gid not in [c["id"] for c in listed]
    (await ann.call("groups.get", conversation_id=gid)).fails(403, "forbidden")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_roles_decide_who_may_do_what(server: RunningServer, transport: str) -> None:
    owner = await join(server, "owner", transport)
    admin = await join(server, "admin", transport)
    ann = await join(server, "ann", transport)
    ben = await join(server, "ben", transport)
    outsider = await join(server, "out", transport, online=False)
    gid = (await create(owner, "g", [admin, ann, ben]))["id"]
    promoted = await owner.call(
        "groups.set_role", conversation_id=gid, user_id=admin.id, role="admin"
    )
    assert roles(promoted.expect()["conversation"])[admin.id] == "admin"
    assert roles((await ann.event("group.updated"))["conversation"])[admin.id] == "admin"
    # A plain member may do none of it.
    (await ann.call("groups.update", conversation_id=gid, name="mine")).fails(403, "forbidden")
    (await ann.call("groups.add_members", conversation_id=gid, user_ids=[outsider.id])).fails(403)
    (await ann.call("groups.remove_member", conversation_id=gid, user_id=ben.id)).fails(403)
    (await ann.call("groups.set_role", conversation_id=gid, user_id=ann.id, role="admin")).fails(
        403
    )
    # An admin renames, adds and removes members, but not admins or the owner, and no roles.
    (await admin.call("groups.update", conversation_id=gid, name="by admin")).expect()
    (await admin.call("groups.add_members", conversation_id=gid, user_ids=[outsider.id])).expect()
    (await admin.call("groups.remove_member", conversation_id=gid, user_id=outsider.id)).expect()
    (await admin.call("groups.remove_member", conversation_id=gid, user_id=owner.id)).fails(403)
    (await admin.call("groups.set_role", conversation_id=gid, user_id=ann.id, role="admin")).fails(
        403
    )
    await owner.call("groups.set_role", conversation_id=gid, user_id=ann.id, role="admin")
    (await admin.call("groups.remove_member", conversation_id=gid, user_id=ann.id)).fails(403)
    # The owner demotes and removes admins; its own role is fixed; roles are admin|member.
    demoted = await owner.call(
        "groups.set_role", conversation_id=gid, user_id=ann.id, role="member"
    )
    assert roles(demoted.expect()["conversation"])[ann.id] == "member"
    (
        await owner.call("groups.set_role", conversation_id=gid, user_id=owner.id, role="admin")
    ).fails(400, "validation_failed")
    (await owner.call("groups.set_role", conversation_id=gid, user_id=ann.id, role="owner")).fails(
        400, "validation_failed", "role"
    )
    (
        await owner.call("groups.set_role", conversation_id=gid, user_id=outsider.id, role="admin")
    ).fails(404)
    (await owner.call("groups.remove_member", conversation_id=gid, user_id=admin.id)).expect()
    final = (await owner.call("groups.get", conversation_id=gid)).expect()["conversation"]
    assert roles(final) == {owner.id: "owner", ann.id: "member", ben.id: "member"}
    assert final["name"] == "by admin"


async def test_ownership_passes_to_the_oldest_admin_else_the_oldest_member(
    server: RunningServer,
) -> None:
    owner = await join(server, "owner")
    first = await join(server, "first")
    second = await join(server, "second")
    third = await join(server, "third")
    gid = (await create(owner, "g", [first, second, third]))["id"]
    await owner.call("groups.set_role", conversation_id=gid, user_id=third.id, role="admin")
    await owner.call("groups.set_role", conversation_id=gid, user_id=second.id, role="admin")
    (await owner.call("groups.remove_member", conversation_id=gid, user_id=owner.id)).expect()
    group = (await first.call("groups.get", conversation_id=gid)).expect()["conversation"]
    # second and third are both admins; second joined first (list order is join order).
    assert roles(group) == {first.id: "member", second.id: "owner", third.id: "admin"}
    (await second.call("groups.set_role", conversation_id=gid, user_id=third.id, role="member"))
    (await second.call("groups.remove_member", conversation_id=gid, user_id=second.id)).expect()
    group = (await first.call("groups.get", conversation_id=gid)).expect()["conversation"]
    assert roles(group) == {first.id: "owner", third.id: "member"}
    # The new owner can do what owners do.
    (await first.call("groups.remove_member", conversation_id=gid, user_id=third.id)).expect()
    (await first.call("groups.remove_member", conversation_id=gid, user_id=first.id)).expect()
    # Nobody is left; the former members can still read what they saw.
    assert (await history(third, gid))["messages"] == []


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_group_size_is_limited(make_server: ServerFactory, transport: str) -> None:
    server = await make_server(max_group_size=3)
    owner = await join(server, "owner", transport)
    others = [await join(server, f"u{i}-", online=False) for i in range(3)]
    (await owner.call("groups.create", name="big", member_ids=[o.id for o in others])).fails(
        413, "group_full", "member_ids"
    )
    gid = (await create(owner, "ok", others[:1]))["id"]
    (
        await owner.call(
            "groups.add_members", conversation_id=gid, user_ids=[o.id for o in others[1:]]
        )
    ).fails(413, "group_full", "user_ids")
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[others[1].id])).expect()
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[others[2].id])).fails(
        413, "group_full"
    )
    group = (await owner.call("groups.get", conversation_id=gid)).expect()["conversation"]
    assert len(group["members"]) == 3
    # Leaving makes room again.
    await owner.call("groups.remove_member", conversation_id=gid, user_id=others[0].id)
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[others[2].id])).expect()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_removed_member_keeps_the_past_read_only_and_gets_nothing_new(
    server: RunningServer, transport: str
) -> None:
    owner = await join(server, "owner", transport)
    ann = await join(server, "ann", transport)
    gone = await join(server, "gone", transport)
    gid = (await create(owner, "g", [ann, gone]))["id"]
    before = [await send(owner, gid, f"before {i}") for i in range(3)]
    (await gone.call("conversations.read", conversation_id=gid, seq=2)).expect()
    listed = (await owner.call("conversations.list")).expect()["conversations"][0]
    assert listed["reads"][gone.id] == 2
    (await owner.call("groups.remove_member", conversation_id=gid, user_id=gone.id)).expect()
    listed = (await owner.call("conversations.list")).expect()["conversations"][0]
    assert gone.id not in listed["reads"]  # the read pointers of current members only
    assert (await gone.event("group.member_removed"))["user_id"] == gone.id
    for i in range(3):
        assert (await gone.event("message.new"))["message"]["id"] == before[i]["id"]
    after = await send(owner, gid, "after the removal")
    assert [(await ann.event("message.new"))["message"]["seq"] for _ in range(4)] == [1, 2, 3, 4]
    await gone.no_event("message.new")
    # Read-only: history up to the removal, never beyond, whichever way it asks.
    page = await history(gone, gid)
    assert seqs(page["messages"]) == [1, 2, 3] and page["has_more"] is False
    assert (await history(gone, gid, after_seq=3))["messages"] == []
    assert (await history(gone, gid, before_seq=after["seq"] + 1))["messages"][-1]["seq"] == 3
    everything = await gone.api.get(f"/api/conversations/{gid}/export")
    assert everything.status == 200
    [part] = everything.body["conversations"]
    assert [m["body"] for m in part["messages"]] == ["before 0", "before 1", "before 2"]
    assert part["conversation"]["member"] is False and "members" not in part["conversation"]
    # No writes of any kind.
    (await gone.call("messages.send", conversation_id=gid, body="hello?")).fails(403, "forbidden")
    (await gone.call("conversations.read", conversation_id=gid, seq=3)).fails(403, "forbidden")
    (await gone.call("typing", conversation_id=gid)).fails(403, "forbidden")
    (await gone.call("groups.get", conversation_id=gid)).fails(403, "forbidden")
    (await gone.call("groups.update", conversation_id=gid, name="x")).fails(403, "forbidden")
    (await gone.call("groups.remove_member", conversation_id=gid, user_id=gone.id)).fails(403)
    await owner.call("typing", conversation_id=gid)
    await gone.no_event("typing", wait=0.1)
    # Added back: a member again, with the whole history (what a newly added member sees).
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[gone.id])).expect()
    assert seqs((await history(gone, gid))["messages"]) == [1, 2, 3, 4]
    await send(owner, gid, "welcome back")
    assert (await gone.event("message.new"))["message"]["body"] == "welcome back"


async def test_removal_racing_with_sends_cuts_cleanly(server: RunningServer) -> None:
    owner = await join(server, "owner")
    gone = await join(server, "gone")
    gid = (await create(owner, "g", [gone]))["id"]
    sent: list[int] = []
    stop, enough = asyncio.Event(), asyncio.Event()

    async def keep_sending(tag: str) -> None:
        while not stop.is_set():
            sent.append((await send(owner, gid, tag))["seq"])
            if len(sent) >= 30:
                enough.set()

    senders = [asyncio.create_task(keep_sending(t)) for t in "abc"]
    try:
        received = [(await gone.event("message.new"))["message"]["seq"] for _ in range(3)]
        await owner.call("groups.remove_member", conversation_id=gid, user_id=gone.id)
        await asyncio.wait_for(enough.wait(), 20)
    finally:
        stop.set()
        await asyncio.gather(*senders)
    while True:
        try:
            received.append((await gone.event("message.new", timeout=0.3))["message"]["seq"])
        except TimeoutError:
            break
    readable = seqs((await history(gone, gid, limit=100))["messages"])
    # What it was sent is exactly what it may still read: a prefix of the seqs, in order.
    assert received == readable == list(range(1, len(readable) + 1))
    assert 3 <= len(readable) < len(sent)


async def test_a_dm_is_not_a_group(server: RunningServer) -> None:
    alice = await join(server, "alice")
    bob = await join(server, "bob", online=False)
    carol = await join(server, "carol", online=False)
    cid = (await open_dm(alice, bob))["id"]
    (await alice.call("groups.get", conversation_id=cid)).fails(404, "not_found")
    (await alice.call("groups.add_members", conversation_id=cid, user_ids=[carol.id])).fails(404)
    (await alice.call("groups.remove_member", conversation_id=cid, user_id=bob.id)).fails(404)
    (await alice.call("groups.update", conversation_id=cid, name="x")).fails(404)


async def test_blocked_users_cannot_be_added(server: RunningServer) -> None:
    owner = await join(server, "owner")
    grump = await join(server, "grump", online=False)
    assert (await grump.api.put(f"/api/blocks/{owner.id}")).status == 200
    (await owner.call("groups.create", name="g", member_ids=[grump.id])).fails(403, "blocked")
    gid = (await create(owner, "g", []))["id"]
    (await owner.call("groups.add_members", conversation_id=gid, user_ids=[grump.id])).fails(
        403, "blocked"
    )
