"""Replies over REST and WebSocket: reply_to with the quoted message's excerpt in message.new,
history, exports and the conversation list; refused for a message of another conversation;
a deleted original shows deleted, and its text is nowhere in the database."""

from __future__ import annotations

import json

import pytest
from bson import ObjectId

from chat.replies import EXCERPT_MAX_CHARS, excerpt
from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import TRANSPORTS, history, join, open_dm, send
from tests.test_lifecycle import delete, edit, make_group, message_events
from tests.test_write_path import QUIET, Profiler, inserted, profiler, writes

__all__ = ["profiler"]  # the fixture of tests/test_write_path.py


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_reply_quotes_the_original_live_in_history_and_on_retry(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    original = await send(alice, cid, "lunch at noon?")
    reply = await send(bob, cid, "yes", reply_to=original["id"], client_msg_id="r-1")
    quote = {"id": original["id"], "seq": original["seq"], "sender_id": alice.id}
    assert reply["reply_to"] == {**quote, "excerpt": "lunch at noon?"}
    live = (await message_events(alice, 2))[-1]
    assert live["type"] == "message.new" and live["message"] == reply
    assert (await history(alice, cid))["messages"] == [original, reply]
    # A retry with the same key returns the stored message, quote included, storing nothing.
    again = await send(bob, cid, "yes", reply_to=original["id"], client_msg_id="r-1")
    assert again == reply
    stored = await server.store.db["messages"].find_one({"_id": ObjectId(reply["id"])})
    assert stored is not None and stored["reply_to"] == quote  # the reference only, no text
    # The quote follows an edit of the original.
    (await edit(alice, cid, original["id"], "lunch at one?")).expect()
    assert (await history(bob, cid))["messages"][1]["reply_to"]["excerpt"] == "lunch at one?"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_reply_to_another_conversations_message_is_refused(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    carol = await join(server, "carol", transport)
    ours = (await open_dm(alice, bob))["id"]
    theirs = (await open_dm(alice, carol))["id"]
    elsewhere = await send(alice, theirs, "secret for carol")
    for bad in (elsewhere["id"], str(ObjectId()), "not-an-id"):
        refused = await bob.call(
            "messages.send", conversation_id=ours, body="hm", reply_to=bad, client_msg_id=bad
        )
        refused.fails(400, field="reply_to")
    assert (await history(bob, ours))["messages"] == []
    count = await server.store.db["messages"].count_documents({"conversation_id": ours})
    assert count == 0


async def test_a_reply_to_a_deleted_message_shows_it_deleted_and_keeps_no_text(
    server: RunningServer,
) -> None:
    alice = await join(server, "alice", "ws")
    bob = await join(server, "bob", "rest")
    cid = (await open_dm(alice, bob))["id"]
    original = await send(alice, cid, "a regrettable thing to say")
    reply = await send(bob, cid, "wow", reply_to=original["id"])
    (await delete(alice, cid, original["id"])).expect()
    gone = {"id": original["id"], "seq": original["seq"], "sender_id": alice.id, "deleted": True}
    page = (await history(bob, cid))["messages"]
    assert page[1]["id"] == reply["id"] and page[1]["reply_to"] == gone
    listed = (await bob.call("conversations.list")).expect()["conversations"]
    assert listed[0]["last_message"]["reply_to"] == gone
    # Nothing in the messages collection holds the text any more.
    docs = await server.store.db["messages"].find({"conversation_id": cid}).to_list(None)
    assert len(docs) == 2 and "regrettable" not in json.dumps(docs, default=str)
    export = await bob.api.get(f"/api/conversations/{cid}/export")
    messages = export.body["conversations"][0]["messages"]
    assert messages[1]["reply_to"] == gone and "regrettable" not in json.dumps(export.body)
    # A reply to a tombstone shows it deleted too; a deleted reply quotes nothing.
    late = await send(bob, cid, "still", reply_to=original["id"])
    assert late["reply_to"] == gone
    tomb = (await delete(bob, cid, reply["id"])).expect()["message"]
    assert "reply_to" not in tomb


async def test_exports_show_the_quote(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    original = await send(alice, cid, "x" * 300)
    reply = await send(bob, cid, "long", reply_to=original["id"])
    assert len(reply["reply_to"]["excerpt"]) <= EXCERPT_MAX_CHARS
    one = await alice.api.get(f"/api/conversations/{cid}/export")
    assert one.body["conversations"][0]["messages"] == [original, reply]
    everything = await bob.api.get("/api/export?format=ndjson")
    assert [json.loads(line) for line in everything.body.splitlines()] == [original, reply]


def test_the_excerpt_is_bounded_and_cut_at_a_grapheme_boundary() -> None:
    assert excerpt("short") == "short"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme of five code points
    for pad in range(EXCERPT_MAX_CHARS - 8, EXCERPT_MAX_CHARS):
        cut = excerpt("a" * pad + family * 10)
        assert len(cut) <= EXCERPT_MAX_CHARS and cut.endswith("…")
        assert cut[:-1].endswith(family) or cut[:-1] == "a" * pad  # never half a family
    flags = "\U0001f1eb\U0001f1f7" * 80  # French flags: pairs of regional indicators
    assert (len(excerpt(flags)) - 1) % 2 == 0
    accented = "e\u0301" * 80  # e + combining acute
    assert not excerpt(accented)[:-1].endswith("e")


async def test_a_reply_costs_one_read_more_and_a_plain_send_nothing_more(
    make_server: ServerFactory, profiler: Profiler
) -> None:
    server = await make_server(**QUIET)
    alice = await join(server, "alice", "ws")
    bob = await join(server, "bob", "ws")
    gid = await make_group(alice, bob)
    original = await send(alice, gid, "warm-up")
    await profiler.start()
    await send(alice, gid, "plain")
    await send(alice, gid, f"hi @{bob.name}")  # a mention: the blocks are known here
    plain = await profiler.ops()
    assert inserted(writes(plain, "messages")) == 2
    # The mention's notification reads its recipient's unread count by id (the notification
    # centre's own work, tests/test_notifications.py); nothing else is read.
    reads = [op for op in plain if op["op"] == "query"]
    assert [op["ns"].rsplit(".", 1)[1] for op in reads] == ["notification_counts"], reads
    await profiler.start()
    await send(bob, gid, "a reply", reply_to=original["id"])
    ops = await profiler.ops()
    assert inserted(writes(ops, "messages")) == 1
    others = [op for op in ops if op["op"] in ("insert", "update", "delete")]
    assert len(others) == 1, others
    reads = [op for op in ops if op["op"] == "query"]
    assert len(reads) == 1 and reads[0]["ns"].endswith(".messages"), reads
    # A page of history without replies reads what it did; one with replies, one query more.
    await profiler.start()
    await history(alice, gid, before_seq=4)
    without = [op["command"].get("filter") for op in await profiler.ops() if op["op"] == "query"]
    await profiler.start()
    await history(alice, gid)
    with_replies = [
        op["command"].get("filter") for op in await profiler.ops() if op["op"] == "query"
    ]
    assert len(with_replies) == len(without) + 1, (without, with_replies)
