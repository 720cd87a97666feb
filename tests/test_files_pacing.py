"""Uploads give way to messages (chat/store/base.py BulkPacer): while messages are being
written, the chunks of an upload take a share of the database's time, and the upload still
ends; with no messages they go at full speed."""

from __future__ import annotations

import asyncio
import os
import time

from bson import ObjectId

from chat.models import utcnow
from chat.store import Store
from chat.store.base import BulkPacer
from chat.store.files import CHUNK_BYTES
from chat.store.messages import Message

CHUNKS = 8


async def write_chunks(store: Store, name: str) -> float:
    """Seconds to write CHUNKS chunks of one upload (each write() inserts one)."""
    data = os.urandom(CHUNK_BYTES)
    writer = store.files.open_writer(name)
    started = time.monotonic()
    for _ in range(CHUNKS):
        await writer.write(data)
    took = time.monotonic() - started
    await writer.abort()
    return took


async def chat(store: Store, stop: asyncio.Event) -> int:
    """Insert a message every few milliseconds until stop; how many were stored."""
    count = 0
    while not stop.is_set():
        message = Message(
            id=str(ObjectId()),
            conversation_id="pacing",
            seq=count + 1,
            sender_id="sender",
            body=f"message {count}",
            client_msg_id=f"pacing-{count}",
            created_at=utcnow(),
        )
        outcome = (await store.conversations.insert_messages([message]))[0]
        assert not isinstance(outcome, Exception), outcome
        count += 1
        await asyncio.sleep(0.005)
    return count


async def test_chunks_take_a_share_of_the_time_while_messages_flow(store: Store) -> None:
    alone = min([await write_chunks(store, "alone.bin") for _ in range(2)])
    stop = asyncio.Event()
    chatting = asyncio.create_task(chat(store, stop))
    await asyncio.sleep(0.05)  # messages are flowing
    try:
        beside_chat = await write_chunks(store, "beside-chat.bin")
    finally:
        stop.set()
        sent = await chatting
    assert sent > CHUNKS
    # At a share of 1/4 the chunks take at least 4 times as long; without pacing they take
    # about as long as alone (the messages' inserts are a small part of the time).
    assert beside_chat >= 2 * alone, (beside_chat, alone)
    # Each chunk waits at most MAX_WAIT_SECS for its turn: the upload always ends.
    assert beside_chat <= alone + CHUNKS * (BulkPacer.MAX_WAIT_SECS + 1), (beside_chat, alone)
    # Once the messages stop, an upload is at full speed again.
    await asyncio.sleep(BulkPacer.ACTIVE_SECS)
    assert await write_chunks(store, "after.bin") < beside_chat
