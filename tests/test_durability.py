"""Nothing acknowledged is lost when the database process dies: SIGKILL under traffic, on a
busy machine, then a restart on the same files, ten times over. Every message a sender got
201 for is in history at the seq it was given, and no seq ever goes out live as two
different messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.dbserver import EmbeddedDatabase, plan_embedded
from tests.conftest import ServerFactory
from tests.test_conversations import Member, close_sockets_cleanly, join

__all__ = ["close_sockets_cleanly"]

CYCLES = 10
SENDERS = 3


@pytest.fixture
def disk_database(tmp_path: Path) -> Iterator[EmbeddedDatabase]:
    db = plan_embedded(tmp_path)  # on disk, as ./run.sh runs it
    db.start()
    yield db
    db.stop()


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """A process that keeps one core busy, so the database is slow to reach the disk."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    hog.kill()
    hog.wait()


async def keep_sending(
    member: Member, cid: str, stop: asyncio.Event, acked: dict[str, tuple[str, int]]
) -> None:
    """Send until told to stop, retrying each message with its key until it is stored."""
    for n in range(100_000):
        if stop.is_set():
            return
        key = f"{member.name}-{n}"
        while True:
            result = await member.call(
                "messages.send", conversation_id=cid, body=f"{key} body", client_msg_id=key
            )
            if result.ok:
                message = result.data["message"]
                acked[key] = (message["id"], message["seq"])
                break
            assert result.status in (503, 409), (result.status, result.data)
            if stop.is_set():
                return
            await asyncio.sleep(0.1)


async def kill_cycles(
    db: EmbeddedDatabase, cycles: int, rng: random.Random, acknowledged: Callable[[], int],
    pause: tuple[float, float] = (0.6, 1.2),
) -> list[int]:  # fmt: skip
    """SIGKILL the database `cycles` times, a random pause apart, restarting it on the same
    files each time; how many operations were acknowledged between one kill and the next."""
    counts = []
    for _ in range(cycles):
        before = acknowledged()
        # Traffic first (after a restart the clients take a moment to find the database
        # again, longer on a busy machine), then the pause: every kill lands mid-traffic.
        for _ in range(600):
            if acknowledged() > before:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(*pause))
        pid = db.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        counts.append(acknowledged() - before)
        await asyncio.to_thread(db.restart)
    return counts


async def all_messages(member: Member, cid: str) -> dict[int, dict[str, Any]]:
    by_seq: dict[int, dict[str, Any]] = {}
    after = 0
    while True:
        # Over REST, in pages as large as allowed: the senders store thousands of messages,
        # more pages than one socket's command rate allows at once.
        result = await member.call_rest(
            "messages.history", conversation_id=cid, after_seq=after, limit=100
        )
        page = result.expect()
        for message in page["messages"]:
            by_seq[message["seq"]] = message
        if not page["has_more"] or not page["messages"]:
            return by_seq
        after = page["messages"][-1]["seq"]


async def test_sigkill_of_the_database_under_traffic_loses_nothing_acknowledged(
    disk_database: EmbeddedDatabase, busy_machine: None, make_server: ServerFactory
) -> None:
    server = await make_server(mongo_uri=disk_database.uri, db_timeout_ms=1000)
    reader = await join(server, "reader", "ws")
    senders = [await join(server, f"sender{i}", "rest") for i in range(SENDERS)]
    created = await senders[0].call(
        "groups.create", name="crash", member_ids=[reader.id] + [s.id for s in senders[1:]]
    )
    cid = created.expect(201)["conversation"]["id"]
    assert reader.ws is not None
    live: dict[int, set[str]] = {}

    async def read_live() -> None:
        assert reader.ws is not None
        while True:
            frame = await reader.ws.next_frame("event", timeout=60)
            event = frame["event"]
            if event["type"] == "message.new":
                live.setdefault(event["message"]["seq"], set()).add(event["message"]["id"])
            await reader.ws.send({"type": "ack", "last_event_id": frame["id"]})

    acked: dict[str, tuple[str, int]] = {}
    stop = asyncio.Event()
    reading = asyncio.create_task(read_live())
    sending = [asyncio.create_task(keep_sending(s, cid, stop, acked)) for s in senders]
    counts = await kill_cycles(disk_database, CYCLES, random.Random(12), lambda: len(acked))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*sending), 60)
    await asyncio.sleep(1.0)  # the last deliveries
    reading.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reading

    assert min(counts) > 0, counts  # there was traffic before every kill
    stored = await all_messages(reader, cid)
    lost = [key for key, (_, seq) in acked.items() if seq not in stored]
    moved = [key for key, (mid, seq) in acked.items() if seq in stored and stored[seq]["id"] != mid]
    reused = {seq: ids for seq, ids in live.items() if len(ids) > 1}
    vanished = [seq for seq, ids in live.items() if seq not in stored]
    assert (lost, moved, reused, vanished) == ([], [], {}, [])
