"""An acknowledged upload survives the database's death: SIGKILL under upload traffic, then a
restart on the same files, several times over. Every upload that got 201 downloads whole,
with the sha256 it was acknowledged with; the others answered 503 (or were cut off)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

from chat.dbserver import EmbeddedDatabase
from tests.conftest import ServerFactory
from tests.files_helpers import download, upload
from tests.test_conversations import Member, join
from tests.test_durability import busy_machine, disk_database, kill_cycles

__all__ = ["busy_machine", "disk_database"]

CYCLES = 3
UPLOADERS = 3
SIZE = 3 * 1024 * 1024 + 12345  # four chunks, the last one short


async def keep_uploading(
    member: Member, stop: asyncio.Event, acked: dict[str, tuple[str, Member]]
) -> None:
    """Upload new bytes until told to stop; every acknowledged upload is noted with its bytes."""
    n = 0
    while not stop.is_set():
        data = os.urandom(SIZE)
        try:
            response = await upload(member, data, f"{member.name}-{n}.bin")
        except OSError:  # the server cut the body off while the database was away
            await asyncio.sleep(0.1)
            continue
        if response.status == 201:
            reply = response.body["upload"]
            assert reply["sha256"] == hashlib.sha256(data).hexdigest()
            acked[reply["id"]] = (reply["sha256"], member)
            n += 1
        else:
            assert response.status in (503, 429), (response.status, response.body)
            await asyncio.sleep(0.1)


async def test_sigkill_of_the_database_under_uploads_loses_no_acknowledged_file(
    disk_database: EmbeddedDatabase, busy_machine: None, make_server: ServerFactory
) -> None:
    server = await make_server(mongo_uri=disk_database.uri, db_timeout_ms=1000)
    uploaders = [await join(server, f"up{i}", "rest") for i in range(UPLOADERS)]
    acked: dict[str, tuple[str, Member]] = {}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(keep_uploading(m, stop, acked)) for m in uploaders]
    counts = await kill_cycles(
        disk_database, CYCLES, random.Random(16), lambda: len(acked), pause=(0.8, 1.5)
    )
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)

    assert min(counts) > 0, counts  # files were acknowledged before every kill
    broken = []
    for file_id, (digest, member) in acked.items():
        got = await download(member, f"/api/files/{file_id}", auth=True)
        if got.status != 200 or hashlib.sha256(got.body).hexdigest() != digest:
            broken.append((file_id, got.status, len(got.body)))
    assert broken == [], broken
