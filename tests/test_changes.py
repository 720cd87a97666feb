"""messages.changes: after its event queue is lost (hello resumed:false), a client brings the
history it loaded up to date with exactly the edits, deletions and reaction changes it missed,
page by page, without reloading; two changes made at once are never stepped over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.client import WsClient
from tests.conftest import RunningServer
from tests.test_conversations import TRANSPORTS, Member, history, join, open_dm, send
from tests.test_lifecycle import delete, edit
from tests.test_reactions import react, unreact


async def changes(member: Member, cid: str, **args: Any) -> dict[str, Any]:
    page: dict[str, Any] = (
        await member.call("messages.changes", conversation_id=cid, **args)
    ).expect()
    return page


async def all_changes(member: Member, cid: str, since: int, limit: int) -> list[dict[str, Any]]:
    """Every change after since, page by page."""
    found, _ = await changes_from(member, cid, since, limit)
    return found


async def changes_from(
    member: Member, cid: str, since: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Every change after since, page by page, and the cursor to go on from; checks that
    paging ends."""
    found: list[dict[str, Any]] = []
    for _ in range(100):
        page = await changes(member, cid, since=since, limit=limit)
        assert len(page["changes"]) <= limit
        found += page["changes"]
        assert page["next"] >= since
        since = page["next"]
        if not page["has_more"]:
            return found, since
    raise AssertionError("messages.changes never ended")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_after_a_lost_queue_changes_give_exactly_what_was_missed(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport, online=False)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    sent = [await send(alice, cid, f"m{i}") for i in range(6)]
    await edit(alice, cid, sent[0]["id"], "seen live")
    # Bob's client loads history and takes the change number; then its queue is lost.
    cursor = (await changes(bob, cid))["next"]
    assert (await changes(bob, cid))["changes"] == []
    loaded = {m["id"]: m for m in (await history(bob, cid))["messages"]}
    assert bob.ws is not None
    bob.ws.close()
    (await edit(alice, cid, sent[1]["id"], "edited while away")).expect()
    (await edit(alice, cid, sent[2]["id"], "edited twice")).expect()
    (await edit(alice, cid, sent[2]["id"], "edited twice, really")).expect()
    (await delete(alice, cid, sent[3]["id"])).expect()
    (await react(alice, cid, sent[4]["id"], "🎉")).expect()
    (await react(alice, cid, sent[5]["id"], "👍")).expect()
    (await unreact(alice, cid, sent[5]["id"], "👍")).expect()
    (await react(alice, cid, sent[4]["id"], "🎉")).expect()  # no change: not listed again
    ws = await WsClient.connect(server.ws_url)
    hello = await ws.auth(bob.token, queue_id="gone", last_event_id=3)
    assert hello["resumed"] is False
    bob.ws = ws  # the new queue's socket (commands over WebSocket go through it)
    got = await all_changes(bob, cid, cursor, limit=2)
    assert [(c["message"]["id"], c["change"]["type"]) for c in got] == [
        (sent[1]["id"], "message.updated"),
        (sent[2]["id"], "message.updated"),
        (sent[3]["id"], "message.deleted"),
        (sent[4]["id"], "message.reactions"),
        (sent[5]["id"], "message.reactions"),
    ]
    numbers = [c["change"]["seq"] for c in got]
    assert numbers == sorted(set(numbers)) and numbers[0] > cursor
    for change in got:
        loaded[change["message"]["id"]] = change["message"]
    assert list(loaded.values()) == (await history(bob, cid))["messages"]
    assert loaded[sent[4]["id"]]["reactions"][0]["me"] is False
    assert "reactions" not in loaded[sent[5]["id"]]
    # Nothing new: an empty page (numbers taken by changes that changed nothing are gaps).
    last = await changes(bob, cid, since=numbers[-1])
    assert last["changes"] == [] and last["has_more"] is False and last["next"] >= numbers[-1]


async def test_paging_and_access(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    eve = await join(server, "eve", online=False)
    cid = (await open_dm(alice, bob))["id"]
    said = await send(alice, cid, "react")
    for i in range(7):
        (await react(bob, cid, said["id"], f":r{i}:")).expect()
    first = await changes(alice, cid, since=0, limit=1)
    assert len(first["changes"]) == 1 and first["has_more"] is False  # one message, once
    assert len(first["changes"][0]["message"]["reactions"]) == 7
    others = [await send(alice, cid, f"o{i}") for i in range(5)]
    for m in others:
        (await edit(alice, cid, m["id"], m["body"] + "!")).expect()
    page = await changes(alice, cid, since=first["next"], limit=2)
    assert page["has_more"] is True and len(page["changes"]) == 2
    got = await all_changes(alice, cid, first["next"], limit=2)
    assert [c["message"]["body"] for c in got] == [m["body"] + "!" for m in others]
    (await eve.call("messages.changes", conversation_id=cid, since=0)).fails(404, "not_found")
    (await alice.call("messages.changes", conversation_id=cid, since=-1)).fails(
        400, "validation_failed", "since"
    )


async def test_concurrent_changes_are_never_stepped_over(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    sent = [await send(alice, cid, f"m{i}") for i in range(10)]
    cursor = (await changes(bob, cid))["next"]
    seen: dict[str, dict[str, Any]] = {}

    async def follow() -> None:
        nonlocal cursor
        found, cursor = await changes_from(bob, cid, cursor, limit=3)
        for change in found:
            seen[change["message"]["id"]] = change["message"]

    async def follow_while(work: asyncio.Future[Any]) -> None:
        while not work.done():
            await follow()

    work = asyncio.gather(
        *[react(bob, cid, m["id"], "👍") for m in sent],
        *[edit(alice, cid, m["id"], m["body"] + " edited") for m in sent],
    )
    await asyncio.gather(work, follow_while(work))
    await follow()
    assert seen == {m["id"]: m for m in (await history(bob, cid))["messages"]}


async def test_a_reader_waits_for_a_change_numbered_before_one_written_first(
    server: RunningServer,
) -> None:
    """Two processes change one conversation: the one that took number n+1 writes first. A
    reader must not move its cursor past n before n is written (it would never see it)."""
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    one, two = await send(alice, cid, "one"), await send(alice, cid, "two")
    cursor = (await changes(bob, cid))["next"]
    reactions = server.store.reactions
    async with server.store.changes.stamp(cid) as slow:
        async with server.store.changes.stamp(cid) as fast:
            assert fast == slow + 1
            await reactions.add(cid, two["id"], "👍", alice.id, fast)
        page = await changes(bob, cid, since=cursor)
        assert page["changes"] == [] and page["next"] == cursor  # held back by the slow one
        await reactions.add(cid, one["id"], "👍", alice.id, slow)
    found, _ = await changes_from(bob, cid, cursor, limit=10)
    assert [c["message"]["id"] for c in found] == [one["id"], two["id"]]
