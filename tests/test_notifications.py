"""The notification centre (PROTOCOL.md section 10): each kind arrives live to every tab of
its recipient and is in the list after a reload; none across a block; paging newest first;
marking some or all read, with notifications.read telling the other tabs the count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat.store import Store
from chat.store.notifications import NewNotification
from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import TRANSPORTS, Member, join, send
from tests.test_lifecycle import make_group
from tests.test_write_path import QUIET, Profiler, profiler, writes

__all__ = ["profiler"]  # the fixture of tests/test_write_path.py


async def notifications(member: Member, **args: Any) -> dict[str, Any]:
    page: dict[str, Any] = (await member.call("notifications.list", **args)).expect()
    return page


async def befriend(a: Member, b: Member) -> str:
    request_id: str = (await a.call("friends.request", user_id=b.id)).expect(201)["request"]["id"]
    return request_id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_friend_request_and_acceptance_notify_live_and_after_a_reload(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    second_tab = await bob.connect()
    request_id = await befriend(alice, bob)
    for tab in (bob.ws, second_tab):
        assert tab is not None
        event = (await tab.event("notification.new"))["event"]
        note = event["notification"]
        assert event["unread_count"] == 1
        assert note["kind"] == "friend.request" and note["read"] is False
        assert note["actor"] == {"id": alice.id, "username": alice.name}
        assert note["data"] == {"request_id": request_id}
        assert note["created_at"].endswith("Z")
    (await bob.call("friends.accept", request_id=request_id)).expect()
    accepted = await alice.event("notification.new")
    assert accepted["notification"]["kind"] == "friend.accepted"
    assert accepted["notification"]["actor"]["id"] == bob.id
    await bob.no_event("notification.new")  # the one who accepted gets none
    page = await notifications(bob)  # a reload: the same from the list
    assert [n["kind"] for n in page["notifications"]] == ["friend.request"]
    assert page["unread_count"] == 1 and page["has_more"] is False
    assert page["notifications"][0]["id"] == note["id"]
    assert (await notifications(alice))["notifications"][0]["kind"] == "friend.accepted"


async def test_group_added_and_mentions_notify_with_their_conversation(
    server: RunningServer,
) -> None:
    owner = await join(server, "owner")
    bob = await join(server, "bob")
    carol = await join(server, "carol")
    group_id = await make_group(owner, bob)
    added = (await bob.event("notification.new"))["notification"]
    assert added["kind"] == "group.added" and added["conversation_id"] == group_id
    assert added["data"] == {"name": "team"} and added["actor"]["id"] == owner.id
    await owner.no_event("notification.new")
    (await owner.call("groups.add_members", conversation_id=group_id, user_ids=[carol.id])).expect()
    assert (await carol.event("notification.new"))["notification"]["kind"] == "group.added"
    message = await send(owner, group_id, f"@{bob.name} and @{carol.name}: ready?")
    for member in (bob, carol):
        event = await member.event("notification.new")
        note = event["notification"]
        assert note["kind"] == "mention" and note["conversation_id"] == group_id
        assert note["data"]["message_id"] == message["id"]
        assert note["data"]["seq"] == message["seq"]
        assert note["data"]["excerpt"].endswith("ready?")
        assert event["unread_count"] == 2
    page = await notifications(bob)
    assert [n["kind"] for n in page["notifications"]] == ["mention", "group.added"]
    assert page["unread_count"] == 2


async def test_no_notification_across_a_block(server: RunningServer) -> None:
    owner = await join(server, "owner")
    bob = await join(server, "bob")
    blocker = await join(server, "blocker")
    group_id = await make_group(owner, bob, blocker)
    assert (await blocker.event("notification.new"))["notification"]["kind"] == "group.added"
    (await blocker.call("blocks.add", user_id=bob.id)).expect()
    await send(bob, group_id, f"@{blocker.name} @{owner.name} hi")
    assert (await owner.event("notification.new"))["notification"]["kind"] == "mention"
    await blocker.no_event("notification.new")
    kinds = [n["kind"] for n in (await notifications(blocker))["notifications"]]
    assert kinds == ["group.added"]
    (await bob.call("friends.request", user_id=blocker.id)).fails(403, "blocked")
    assert len((await notifications(blocker))["notifications"]) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_pages_newest_first_and_marking_read(server: RunningServer, transport: str) -> None:
    bob = await join(server, "bob", transport)
    other_tab = await bob.connect()
    senders = [await join(server, f"s{i}", online=False) for i in range(5)]
    for sender in senders:
        await befriend(sender, bob)
    first = await notifications(bob, limit=2)
    assert first["has_more"] is True and first["unread_count"] == 5
    actors = [n["actor"]["id"] for n in first["notifications"]]
    assert actors == [senders[4].id, senders[3].id]
    rest = await notifications(bob, before=first["notifications"][-1]["id"], limit=10)
    assert [n["actor"]["id"] for n in rest["notifications"]] == [s.id for s in senders[2::-1]]
    assert rest["has_more"] is False
    some = [first["notifications"][0]["id"], rest["notifications"][0]["id"]]
    assert (await bob.call("notifications.read", ids=some)).expect() == {"unread_count": 3}
    while True:  # the tab drains the five notification.new first
        frame = await other_tab.event()
        if frame["event"]["type"] == "notifications.read":
            assert frame["event"]["unread_count"] == 3
            break
    page = await notifications(bob)
    assert [n["read"] for n in page["notifications"]] == [True, False, True, False, False]
    assert page["unread_count"] == 3
    assert (await bob.call("notifications.read", all=True)).expect() == {"unread_count": 0}
    page = await notifications(bob)
    assert page["unread_count"] == 0 and all(n["read"] for n in page["notifications"])
    # someone else's ids change nothing; neither ids nor all is invalid
    (await senders[0].call("notifications.read", ids=some)).expect()
    (await bob.call("notifications.read")).fails(400, "validation_failed", "ids")
    (await bob.call("notifications.read", all="yes")).fails(400, "validation_failed", "all")


async def test_read_notifications_expire_by_a_ttl_index(server: RunningServer) -> None:
    indexes = await server.store.db["notifications"].index_information()
    ttl = [spec for spec in indexes.values() if "expireAfterSeconds" in spec]
    assert ttl == [{**ttl[0], "key": [("read_at", 1)], "expireAfterSeconds": 90 * 86400}]


async def test_a_mention_of_several_members_is_one_insert(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    server = await make_server(**QUIET)
    alice = await join(server, "alice", "ws")
    members = [await join(server, f"m{i}", "ws") for i in range(3)]
    gid = await make_group(alice, *members)
    await send(alice, gid, "warm-up")
    await profiler.start()
    await send(alice, gid, " ".join(f"@{m.name}" for m in members))
    ops = await profiler.ops()
    assert [len(op["command"]["documents"]) for op in writes(ops, "notifications")] == [3]
    for member in members:
        assert (await member.event("notification.new"))["notification"]["kind"] == "group.added"
        assert (await member.event("notification.new"))["notification"]["kind"] == "mention"


async def test_unread_counts_are_kept_per_user_and_counted_again_at_each_read(
    store: Store,
) -> None:
    """notification.new's counts come from a count kept per user (counting every recipient's
    unread notifications at each notification grew slower with each one): concurrent adds
    count once each, a new user's too; a read counts again, so a count left wrong is right
    after it; a database from before the counts is counted at start."""
    notes = store.notifications
    a, b, c = "a" * 24, "b" * 24, "c" * 24
    note = NewNotification("system", data={})
    await asyncio.gather(*(notes.add([a, b], note) for _ in range(10)))
    assert await notes.unread_counts([a, b, c]) == {a: 10, b: 10, c: 0}
    page, _ = await notes.page(a, None, 3)
    assert await notes.mark_read(a, [n.id for n in page]) == 3
    assert await notes.unread_counts([a, b]) == {a: 7, b: 10}
    # A count left wrong (a crash between a notification's insert and its count).
    await notes._counts.update_one({"_id": b}, {"$set": {"unread": 99}})
    assert await notes.mark_read(b, []) == 0
    assert await notes.unread_counts([b]) == {b: 10}
    await notes._counts.drop()
    await notes.ensure_indexes()
    assert await notes.unread_counts([a, b]) == {a: 7, b: 10}
