"""Mentions: @username in a group message is stored as the ids of the members it names
(members only, no duplicates, never the sender or a blocked pair), shown on the message live
and in history; DMs have none; the notification hook gets each message that mentions."""

from __future__ import annotations

import pytest
from bson import ObjectId

from chat.mentions import mentioned_names
from chat.store.messages import Message
from tests.conftest import RunningServer
from tests.test_conversations import TRANSPORTS, history, join, open_dm, send
from tests.test_lifecycle import edit, make_group, message_events


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_group_mentions_name_members_only_once_each(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    carol = await join(server, "carol", transport)
    outsider = await join(server, "dave", transport)
    gid = await make_group(alice, bob, carol)
    notified: list[Message] = []

    async def note(message: Message) -> None:
        notified.append(message)

    server.service.notify_mentions = note  # type: ignore[method-assign]
    body = (
        f"@{bob.name.upper()} and @{carol.name}, also @{bob.name}. "
        f"not @{outsider.name} nor me @{alice.name} nor mail x@{carol.name}"
    )
    sent = await send(alice, gid, body)
    assert sent["mentions"] == [bob.id, carol.id]
    live = (await message_events(bob, 1))[0]["message"]
    assert live["mentions"] == [bob.id, carol.id]
    assert (await history(carol, gid))["messages"][-1]["mentions"] == [bob.id, carol.id]
    stored = await server.store.db["messages"].find_one({"_id": ObjectId(sent["id"])})
    assert stored is not None and stored["mentions"] == [bob.id, carol.id]
    assert [m.id for m in notified] == [sent["id"]] and notified[0].mentions == (bob.id, carol.id)
    plain = await send(alice, gid, "no names here, mail a@b.example")
    assert "mentions" not in plain and len(notified) == 1
    # An edit names them again from the new text.
    edited = (await edit(alice, gid, sent["id"], f"only @{carol.name}")).expect()["message"]
    assert edited["mentions"] == [carol.id]
    edited = (await edit(alice, gid, sent["id"], "nobody")).expect()["message"]
    assert "mentions" not in edited
    stored = await server.store.db["messages"].find_one({"_id": ObjectId(sent["id"])})
    assert stored is not None and "mentions" not in stored and len(notified) == 1


async def test_a_blocked_pair_is_never_mentioned(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    carol = await join(server, "carol", online=False)
    gid = await make_group(alice, bob, carol)
    (await bob.call("blocks.add", user_id=alice.id)).expect()
    sent = await send(alice, gid, f"hi @{bob.name} and @{carol.name}")
    assert sent["mentions"] == [carol.id]
    back = await send(bob, gid, f"@{alice.name} @{carol.name}")
    assert back["mentions"] == [carol.id]


async def test_direct_messages_have_no_mentions(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    sent = await send(alice, cid, f"hey @{bob.name}")
    assert "mentions" not in sent


def test_mentioned_names() -> None:
    assert mentioned_names("@Bob, @bob and @carol. mail@x @@y (@dave)") == ["bob", "carol", "dave"]
