"""messages.history's around_seq: a page centred on one message, with has_more_before and
has_more_after; at either end the other side fills the page; gaps in seq are skipped; it does
not combine with before_seq or after_seq."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer
from tests.test_conversations import TRANSPORTS, Member, history, join, open_dm, send, seqs


async def conversation_of(server: RunningServer, transport: str, n: int) -> tuple[Member, str]:
    alice = await join(server, "alice", transport, online=False)
    bob = await join(server, "bob", transport, online=False)
    cid = (await open_dm(alice, bob))["id"]
    await server.store.conversations.import_messages(
        cid, alice.id, [f"m{i}" for i in range(n)], "imp-"
    )
    return alice, cid


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_page_centred_on_a_message(server: RunningServer, transport: str) -> None:
    alice, cid = await conversation_of(server, transport, 30)
    page = await history(alice, cid, around_seq=15, limit=5)
    assert seqs(page["messages"]) == [13, 14, 15, 16, 17]
    assert page["has_more_before"] and page["has_more_after"] and page["has_more"]
    even = await history(alice, cid, around_seq=15, limit=4)
    assert seqs(even["messages"]) == [14, 15, 16, 17]


async def test_at_the_ends_the_other_side_fills_the_page(server: RunningServer) -> None:
    alice, cid = await conversation_of(server, "rest", 10)
    first = await history(alice, cid, around_seq=1, limit=5)
    assert seqs(first["messages"]) == [1, 2, 3, 4, 5]
    assert not first["has_more_before"] and first["has_more_after"]
    last = await history(alice, cid, around_seq=10, limit=5)
    assert seqs(last["messages"]) == [6, 7, 8, 9, 10]
    assert last["has_more_before"] and not last["has_more_after"]
    beyond = await history(alice, cid, around_seq=99, limit=3)  # the newest, as far as visible
    assert seqs(beyond["messages"]) == [8, 9, 10]
    whole = await history(alice, cid, around_seq=5, limit=50)
    assert seqs(whole["messages"]) == list(range(1, 11)) and not whole["has_more"]


async def test_gaps_are_skipped(server: RunningServer) -> None:
    alice, cid = await conversation_of(server, "rest", 20)
    gone = {"conversation_id": cid, "seq": {"$in": [9, 10, 11, 13]}}
    await server.store.db["messages"].delete_many(gone)  # seqs a failed send never filled
    page = await history(alice, cid, around_seq=10, limit=5)  # 10 is a gap: centred still
    assert seqs(page["messages"]) == [7, 8, 12, 14, 15]
    assert page["has_more_before"] and page["has_more_after"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_around_seq_excludes_before_and_after(server: RunningServer, transport: str) -> None:
    alice, cid = await conversation_of(server, transport, 3)
    for other in ({"before_seq": 3}, {"after_seq": 1}):
        refused = await alice.call("messages.history", conversation_id=cid, around_seq=2, **other)
        refused.fails(400, field="around_seq")
    plain = await history(alice, cid)
    assert "has_more_before" not in plain  # the other pages answer as before
    assert seqs(plain["messages"]) == [1, 2, 3]
    await send(alice, cid, "and one more")
