"""Invitations (to a game) over REST and WebSocket: a message of kind invitation at the
conversation's next seq; accept, decline, cancel and expiry, the first of them winning for
everyone and each reaching every member as invitation.updated in the one ordered queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import RunningServer
from tests.test_conversations import TRANSPORTS, Member, history, join, open_dm, send
from tests.test_lifecycle import make_group


def invite(member: Member, cid: str, game: str = "chess", **more: Any) -> Any:
    return member.call("invitations.send", conversation_id=cid, game=game, **more)


def answer(member: Member, verb: str, invitation_id: str) -> Any:
    return member.call(f"invitations.{verb}", invitation_id=invitation_id)


async def updates(member: Member, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The member's next n message.new / invitation.updated events, in queue order."""
    assert member.ws is not None
    found: list[dict[str, Any]] = []
    while len(found) < n:
        frame = await member.ws.event(None, timeout)
        if frame["event"]["type"] in ("message.new", "invitation.updated"):
            found.append(frame["event"])
    return found


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_accept_reaches_both_and_a_later_answer_conflicts(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    await send(alice, cid, "ready?")
    sent = (await invite(alice, cid, data={"board": 8})).expect(201)["message"]
    inv = sent["invitation"]
    assert sent["kind"] == "invitation" and sent["seq"] == 2 and sent["body"] == "Invitation: chess"
    assert inv["id"] == sent["id"] and inv["from"] == alice.id and inv["status"] == "pending"
    assert inv["data"] == {"board": 8} and inv["expires_at"].endswith("Z")
    (await answer(alice, "accept", inv["id"])).fails(403, "forbidden")
    done = (await answer(bob, "accept", inv["id"])).expect()["message"]
    assert done["invitation"]["status"] == "accepted" and done["invitation"]["match_id"]
    (await answer(bob, "decline", inv["id"])).fails(409, "conflict")
    (await answer(alice, "cancel", inv["id"])).fails(409, "conflict")
    for member in (alice, bob):
        got = await updates(member, 3)
        assert [e["type"] for e in got] == ["message.new", "message.new", "invitation.updated"]
        assert got[2]["message"]["invitation"] == done["invitation"]
    page = await history(bob, cid)
    assert page["messages"][-1]["invitation"] == done["invitation"]
    listed = (await bob.call("conversations.list")).expect()["conversations"]
    assert listed[0]["last_message"]["body"] == "Invitation: chess"
    assert listed[0]["last_message"]["invitation"] == done["invitation"]
    # A message without kind is exactly as before.
    assert "kind" not in page["messages"][0] and "invitation" not in page["messages"][0]


async def test_decline_cancel_and_validation(server: RunningServer) -> None:
    alice = await join(server, "alice", "ws")
    bob = await join(server, "bob", "ws")
    cid = (await open_dm(alice, bob))["id"]
    first = (await invite(alice, cid)).expect(201)["message"]["invitation"]
    assert (await answer(bob, "decline", first["id"])).expect()["message"]["invitation"][
        "status"
    ] == "declined"
    second = (await invite(alice, cid, game="go")).expect(201)["message"]["invitation"]
    (await answer(bob, "cancel", second["id"])).fails(403, "forbidden")
    assert (await answer(alice, "cancel", second["id"])).expect()["message"]["invitation"][
        "status"
    ] == "cancelled"
    (await invite(alice, cid, ttl_secs=9)).fails(400)
    (await invite(alice, cid, ttl_secs=86401)).fails(400)
    (await invite(alice, cid, game=" ")).fails(400)
    # The game's data is stored as it is: a key the database cannot keep is a 400, not a 500.
    for key in ("a\u0000b", "$where", "$"):
        (await invite(alice, cid, data={"ok": {key: 1}})).fails(400, "validation_failed", "data")
    kept = (await invite(alice, cid, data={"a.b": [{"c": None}], "": 1})).expect(201)
    assert kept["message"]["invitation"]["data"] == {"a.b": [{"c": None}], "": 1}
    (await answer(bob, "accept", "0" * 24)).fails(404)
    stranger = await join(server, "carol", "rest")
    (await answer(stranger, "accept", second["id"])).fails(404)


async def test_a_retry_with_the_same_client_msg_id_stores_one_invitation(
    server: RunningServer,
) -> None:
    alice = await join(server, "alice", "rest")
    bob = await join(server, "bob", "rest")
    cid = (await open_dm(alice, bob))["id"]
    one = (await invite(alice, cid, client_msg_id="k1")).expect(201)["message"]
    two = (await invite(alice, cid, client_msg_id="k1")).expect(201)["message"]
    assert one["id"] == two["id"] and one["seq"] == two["seq"]
    assert len((await history(bob, cid))["messages"]) == 1


async def test_expiry_is_shown_and_published(server: RunningServer) -> None:
    alice = await join(server, "alice", "ws")
    bob = await join(server, "bob", "ws")
    cid = (await open_dm(alice, bob))["id"]
    inv = (await invite(alice, cid, ttl_secs=10)).expect(201)["message"]["invitation"]
    got = await updates(bob, 2, timeout=15)
    assert got[1]["type"] == "invitation.updated"
    assert got[1]["message"]["invitation"]["status"] == "expired"
    (await answer(bob, "accept", inv["id"])).fails(409, "conflict")
    assert (await history(alice, cid))["messages"][0]["invitation"]["status"] == "expired"
    exported = await alice.api.get(f"/api/conversations/{cid}/export")
    assert exported.body["conversations"][0]["messages"][0]["invitation"]["status"] == "expired"


async def test_twenty_concurrent_answers_one_wins_for_everyone(server: RunningServer) -> None:
    owner = await join(server, "owner", "ws")
    members = [await join(server, f"m{i:02d}", "ws" if i % 2 else "rest") for i in range(20)]
    gid = await make_group(owner, *members)
    inv = (await invite(owner, gid)).expect(201)["message"]["invitation"]
    replies = await asyncio.gather(
        *(answer(m, "accept" if i % 2 else "decline", inv["id"]) for i, m in enumerate(members))
    )
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [409] * 19
    winner = next(r for r in replies if r.status == 200).expect()["message"]["invitation"]
    for member in [owner] + [m for m in members if m.ws is not None]:
        got = await updates(member, 2)
        assert got[1]["type"] == "invitation.updated"
        assert got[1]["message"]["invitation"] == winner
        assert [e["type"] for e in await updates_now(member)] == []


async def updates_now(member: Member) -> list[dict[str, Any]]:
    """Events already queued after a short wait (none expected: one change, one event)."""
    try:
        return await updates(member, 1, timeout=0.3)
    except TimeoutError:
        return []


async def test_blocks_removed_members_and_to_in_a_group(server: RunningServer) -> None:
    ann = await join(server, "ann", "rest")
    ben = await join(server, "ben", "rest")
    cat = await join(server, "cat", "rest")
    dan = await join(server, "dan", "rest")
    cid = (await open_dm(ann, ben))["id"]
    gid = await make_group(ann, ben, cat, dan)
    (await ann.call("blocks.add", user_id=ben.id)).expect(200)
    (await invite(ann, cid)).fails(403, "blocked")
    (await invite(ann, gid, to=ben.id)).fails(403, "blocked")
    open_one = (await invite(ann, gid)).expect(201)["message"]["invitation"]
    (await answer(ben, "accept", open_one["id"])).fails(403, "blocked")
    for_cat = (await invite(ann, gid, to=cat.id)).expect(201)["message"]["invitation"]
    assert for_cat["to"] == cat.id
    (await answer(dan, "accept", for_cat["id"])).fails(403, "forbidden")
    (await ann.call("groups.remove_member", conversation_id=gid, user_id=cat.id)).expect()
    (await answer(cat, "accept", for_cat["id"])).fails(403, "forbidden")
    assert (await answer(dan, "accept", open_one["id"])).expect()["message"]["invitation"][
        "status"
    ] == "accepted"


async def test_an_invitation_and_its_answer_are_notifications(server: RunningServer) -> None:
    alice = await join(server, "alice", "rest")
    bob = await join(server, "bob", "rest")
    cid = (await open_dm(alice, bob))["id"]
    inv = (await invite(alice, cid, game="go")).expect(201)["message"]["invitation"]
    [note] = (await bob.call("notifications.list")).expect()["notifications"]
    assert (note["kind"], note["actor"]["id"], note["conversation_id"]) == (
        "invitation",
        alice.id,
        cid,
    )
    assert note["data"]["game"] == "go" and note["data"]["message_id"] == inv["id"]
    assert (await alice.call("notifications.list")).expect()["notifications"] == []
    (await answer(bob, "decline", inv["id"])).expect()
    [answered] = (await alice.call("notifications.list")).expect()["notifications"]
    assert (answered["kind"], answered["actor"]["id"]) == ("invitation.answered", bob.id)
    assert answered["data"]["status"] == "declined"
