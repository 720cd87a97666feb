"""messages.edit and messages.delete over REST and WebSocket: the events every member gets in
order with the messages, who may do what, what is left in the database (the body, the
files in GridFS), and history, the conversation list and exports showing the current state."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from bson import ObjectId

from tests.conftest import RunningServer
from tests.files_helpers import pdf, png, uploaded
from tests.test_conversations import TRANSPORTS, Member, history, join, open_dm, send


async def message_events(member: Member, n: int) -> list[dict[str, Any]]:
    """The member's next n message.* events, as (id, payload) in queue order."""
    assert member.ws is not None
    found: list[dict[str, Any]] = []
    while len(found) < n:
        frame = await member.ws.event(None)
        if frame["event"]["type"].startswith("message."):
            found.append({"id": frame["id"], **frame["event"]})
    return found


async def make_group(owner: Member, *members: Member) -> str:
    reply = await owner.call("groups.create", name="team", member_ids=[m.id for m in members])
    group_id: str = reply.expect(201)["conversation"]["id"]
    return group_id


def edit(member: Member, cid: str, mid: str, body: Any) -> Any:
    return member.call("messages.edit", conversation_id=cid, message_id=mid, body=body)


def delete(member: Member, cid: str, mid: str) -> Any:
    return member.call("messages.delete", conversation_id=cid, message_id=mid)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_edit_and_delete_reach_every_member_in_order_with_the_messages(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    first = await send(alice, cid, "helo")
    edited = (await edit(alice, cid, first["id"], "  hello  ")).expect()["message"]
    assert edited["body"] == "hello" and edited["seq"] == first["seq"]
    assert edited["edited_at"].endswith("Z") and edited["created_at"] == first["created_at"]
    second = await send(alice, cid, "oops")
    tomb = (await delete(alice, cid, second["id"])).expect()["message"]
    assert tomb["deleted"] is True and tomb["body"] == "" and tomb["seq"] == second["seq"]
    assert tomb["deleted_by"] == alice.id and tomb["deleted_at"].endswith("Z")
    third = await send(bob, cid, "after")
    for member in (alice, bob):
        got = await message_events(member, 5)
        assert [(e["type"], e["message"]["seq"]) for e in got] == [
            ("message.new", 1),
            ("message.updated", 1),
            ("message.new", 2),
            ("message.deleted", 2),
            ("message.new", 3),
        ]
        assert [e["id"] for e in got] == sorted(e["id"] for e in got)
        assert got[1]["message"] == edited and got[3]["message"] == tomb
    page = await history(bob, cid)
    assert page["messages"] == [edited, tomb, third]
    # Deleting a tombstone again answers it and tells nobody anything.
    assert (await delete(alice, cid, second["id"])).expect()["message"] == tomb
    (await edit(alice, cid, second["id"], "back")).fails(409, "conflict")
    stored = await server.store.db["messages"].find_one({"_id": ObjectId(second["id"])})
    assert stored is not None and "oops" not in json.dumps(stored, default=str)
    assert stored["seq"] == second["seq"] and stored["deleted_by"] == alice.id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_only_the_author_edits_and_bodies_follow_the_send_rules(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport, online=False)
    bob = await join(server, "bob", transport, online=False)
    cid = (await open_dm(alice, bob))["id"]
    mine = await send(alice, cid, "mine")
    (await edit(bob, cid, mine["id"], "theirs now")).fails(403, "forbidden")
    (await delete(bob, cid, mine["id"])).fails(403, "forbidden")  # a DM has no moderators
    (await edit(alice, cid, mine["id"], "   ")).fails(400, "validation_failed", "body")
    (await edit(alice, cid, mine["id"], "x" * 4001)).fails(400, "validation_failed", "body")
    (await alice.call("messages.edit", conversation_id=cid, message_id=mine["id"])).fails(
        400, "validation_failed", "body"
    )
    (await edit(alice, cid, str(ObjectId()), "nothing")).fails(404, "not_found")
    (await edit(alice, cid, "not-an-id", "nothing")).fails(400, "validation_failed", "message_id")
    assert [m["body"] for m in (await history(bob, cid))["messages"]] == ["mine"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_strangers_and_removed_members_can_neither_edit_nor_delete(
    server: RunningServer, transport: str
) -> None:
    owner = await join(server, "owner", transport, online=False)
    ann = await join(server, "ann", transport, online=False)
    eve = await join(server, "eve", transport, online=False)
    gid = await make_group(owner, ann)
    said = await send(ann, gid, "before I leave")
    (await edit(eve, gid, said["id"], "hijacked")).fails(404, "not_found")
    (await delete(eve, gid, said["id"])).fails(404, "not_found")
    # A message of another conversation is not found through this one.
    other = (await open_dm(eve, owner))["id"]
    (await delete(eve, other, said["id"])).fails(404, "not_found")
    (await ann.call("groups.remove_member", conversation_id=gid, user_id=ann.id)).expect()
    (await edit(ann, gid, said["id"], "changed my mind")).fails(403, "forbidden")
    (await delete(ann, gid, said["id"])).fails(403, "forbidden")
    assert [m["body"] for m in (await history(owner, gid))["messages"]] == ["before I leave"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_group_owner_and_admin_delete_anyones_message_members_do_not(
    server: RunningServer, transport: str
) -> None:
    owner = await join(server, "owner", transport, online=False)
    admin = await join(server, "admin", transport, online=False)
    ann = await join(server, "ann", transport)
    gid = await make_group(owner, admin, ann)
    (
        await owner.call("groups.set_role", conversation_id=gid, user_id=admin.id, role="admin")
    ).expect()
    one = await send(ann, gid, "one")
    two = await send(ann, gid, "two")
    mod = await send(owner, gid, "from the owner")
    (await delete(ann, gid, mod["id"])).fails(403, "forbidden")
    (await edit(owner, gid, one["id"], "owners cannot edit")).fails(403, "forbidden")
    assert (await delete(owner, gid, one["id"])).expect()["message"]["deleted_by"] == owner.id
    assert (await delete(admin, gid, two["id"])).expect()["message"]["deleted_by"] == admin.id
    got = await message_events(ann, 5)
    assert [(e["type"], e["message"]["seq"]) for e in got][-2:] == [
        ("message.deleted", one["seq"]),
        ("message.deleted", two["seq"]),
    ]


async def test_deleting_a_message_deletes_its_files_from_gridfs(server: RunningServer) -> None:
    alice = await join(server, "alice", "ws")
    bob = await join(server, "bob", "ws")
    cid = (await open_dm(alice, bob))["id"]
    image = await uploaded(alice, png(), "photo.png")
    doc = await uploaded(alice, pdf(), "doc.pdf")
    kept = await uploaded(alice, pdf(), "kept.pdf")
    sent = await send(alice, cid, "files", attachments=[image["id"], doc["id"]])
    other = await send(alice, cid, "", attachments=[kept["id"]])
    files, chunks = server.store.db["uploads.files"], server.store.db["uploads.chunks"]
    mine = [ObjectId(image["id"]), ObjectId(doc["id"])]
    meta = await files.find({"_id": {"$in": mine}}).to_list(None)
    thumbs = [
        ObjectId(m["metadata"]["thumbnail_id"]) for m in meta if m["metadata"].get("thumbnail_id")
    ]
    assert len(meta) == 2 and thumbs  # the picture has a thumbnail, stored as a file too
    gone = mine + thumbs
    assert await chunks.count_documents({"files_id": {"$in": gone}}) > 0
    tomb = (await delete(alice, cid, sent["id"])).expect()["message"]
    assert "attachments" not in tomb and tomb["body"] == ""
    assert await files.count_documents({"_id": {"$in": gone}}) == 0
    assert await chunks.count_documents({"files_id": {"$in": gone}}) == 0
    assert await files.count_documents({"_id": ObjectId(kept["id"])}) == 1  # not this message's
    stored = await server.store.db["messages"].find_one({"_id": ObjectId(sent["id"])})
    assert stored is not None and "attachments" not in stored and stored["body"] == ""
    # The other message's attachment stays; an edit keeps it and may leave the body empty.
    edited = (await edit(alice, cid, other["id"], "caption")).expect()["message"]
    assert edited["body"] == "caption" and edited["attachments"][0]["id"] == kept["id"]
    event = (await message_events(bob, 4))[-1]
    assert event["type"] == "message.updated" and event["message"]["attachments"][0]["url"]


async def test_list_and_exports_show_edits_and_tombstones(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    first = await send(alice, cid, "first draft")
    last = await send(bob, cid, "regrettable")
    edited = (await edit(alice, cid, first["id"], "final")).expect()["message"]
    listed = (await alice.call("conversations.list")).expect()["conversations"]
    assert listed[0]["last_message"] == last
    tomb = (await delete(bob, cid, last["id"])).expect()["message"]
    listed = (await alice.call("conversations.list")).expect()["conversations"]
    assert listed[0]["last_message"] == tomb
    one = await alice.api.get(f"/api/conversations/{cid}/export")
    assert one.body["conversations"][0]["messages"] == [edited, tomb]
    everything = await bob.api.get("/api/export?format=ndjson")
    lines = [json.loads(line) for line in everything.body.splitlines()]
    assert lines == [edited, tomb]
    text = json.dumps(one.body) + everything.body
    assert "regrettable" not in text and "first draft" not in text


async def test_a_long_polling_member_gets_the_changes_in_order_with_the_messages(
    server: RunningServer,
) -> None:
    alice = await join(server, "alice", "ws", online=False)
    bob = await join(server, "bob", "rest", online=False)
    cid = (await open_dm(alice, bob))["id"]
    first = (await bob.api.get("/api/events")).body  # a long-polling queue, its hello
    queue_id, last = first["queue_id"], first["events"][-1]["id"]
    one = await send(alice, cid, "one")
    await edit(alice, cid, one["id"], "one, edited")
    two = await send(alice, cid, "two")
    await delete(alice, cid, one["id"])
    got: list[dict[str, Any]] = []
    while len(got) < 4:
        page = await bob.api.get(f"/api/events?queue_id={queue_id}&last_event_id={last}&timeout=5")
        assert page.status == 200 and page.body["queue_id"] == queue_id
        for item in page.body["events"]:
            last = item["id"]
            if item["event"]["type"].startswith("message."):
                got.append(item["event"])
    assert [(e["type"], e["message"]["seq"]) for e in got] == [
        ("message.new", one["seq"]),
        ("message.updated", one["seq"]),
        ("message.new", two["seq"]),
        ("message.deleted", one["seq"]),
    ]
    assert got[1]["message"]["body"] == "one, edited" and got[3]["message"]["deleted"] is True


async def test_racing_changes_and_sends_leave_every_member_with_the_stored_state(
    server: RunningServer,
) -> None:
    alice = await join(server, "alice", "rest")
    bob = await join(server, "bob", "rest")
    cid = (await open_dm(alice, bob))["id"]
    sent = [await send(alice, cid, f"m{i}") for i in range(4)]
    # Edits, deletions and new sends of one conversation, all at once.
    calls = [edit(alice, cid, m["id"], f"{m['body']} edited") for m in sent]
    calls += [delete(alice, cid, m["id"]) for m in sent[::2]]
    calls += [alice.call("messages.send", conversation_id=cid, body=f"n{i}") for i in range(6)]
    results = await asyncio.gather(*calls)
    assert all(r.status in (200, 201, 409) for r in results), [r.data for r in results]
    changes = sum(r.status == 200 for r in results)
    stored = {m["id"]: m for m in (await history(bob, cid))["messages"]}
    for member in (alice, bob):
        got = await message_events(member, len(sent) + 6 + changes)
        assert [e["id"] for e in got] == sorted({e["id"] for e in got})
        latest: dict[str, dict[str, Any]] = {}
        for e in got:
            if e["type"] == "message.new":
                assert e["message"]["id"] not in latest  # new comes first, once
            else:
                assert e["message"]["id"] in latest
            latest[e["message"]["id"]] = e["message"]
        assert latest == stored
    assert all(stored[m["id"]].get("deleted") for m in sent[::2])
