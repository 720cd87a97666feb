"""The per-conversation change counter behind messages.changes (PROTOCOL.md section 7).

Every edit, deletion and reaction change takes the next value of its conversation's counter
and stamps it on the message (`change_seq`, raised with $max in the same update as the
change, so the stamp and the state it describes are one write). Two changes of one
conversation can be made at once (two processes): the one that took 6 may be written before
the one that took 5. So that a reader never steps past a change not yet written, a writer
takes its number and notes it as pending in one atomic update, and removes the note once its
change is written; a reader returns changes only up to the watermark, one below the oldest
pending number (the counter itself when none is pending). A note left by a process that died
mid-change stops holding readers back after PENDING_EXPIRE_SECS.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from chat.models import utcnow
from chat.store.base import Collections, InFlight, translated
from chat.store.messages import Message, message_from_doc

# A change is written within the database timeout (seconds); a note older than this is one
# whose writer died, and readers go past it.
PENDING_EXPIRE_SECS = 30


class ChangeStore(Collections):
    """The change counters (one document per conversation) and the changed messages."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._counters = db["message_changes"]
        self._messages = db["messages"]

    async def ensure_indexes(self) -> None:
        """The changes of a conversation are a range of (conversation_id, change_seq)."""
        await self._messages.create_index(
            [("conversation_id", ASCENDING), ("change_seq", ASCENDING)],
            partialFilterExpression={"change_seq": {"$exists": True}},
        )

    @contextlib.asynccontextmanager
    async def stamp(self, conversation_id: str) -> AsyncIterator[int]:
        """The number the change made inside the block stamps on its message; pending (holding
        readers back) until the block ends, whether the change was made or not."""
        number = await self._take(conversation_id)
        try:
            yield number
        finally:
            await self._release(conversation_id, number)

    @translated
    async def _take(self, conversation_id: str) -> int:
        now = utcnow()
        cutoff = now - timedelta(seconds=PENDING_EXPIRE_SECS)
        live = {
            "$filter": {
                "input": {"$ifNull": ["$pending", []]},
                "cond": {"$gte": ["$$this.at", cutoff]},
            }
        }
        doc = await self._counters.find_one_and_update(
            {"_id": conversation_id},
            [
                {"$set": {"n": {"$add": [{"$ifNull": ["$n", 0]}, 1]}}},
                {"$set": {"pending": {"$concatArrays": [live, [{"n": "$n", "at": now}]]}}},
            ],
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # upserted
        return int(doc["n"])

    @translated
    async def _release(self, conversation_id: str, number: int) -> None:
        await self._counters.update_one(
            {"_id": conversation_id}, {"$pull": {"pending": {"n": number}}}
        )

    @translated
    async def watermark(self, conversation_id: str) -> int:
        """The highest change number below which every change is written."""
        doc = await self._counters.find_one({"_id": conversation_id})
        if doc is None:
            return 0
        cutoff = utcnow() - timedelta(seconds=PENDING_EXPIRE_SECS)
        pending = [p["n"] for p in doc.get("pending") or () if p["at"] >= cutoff]
        return min(pending) - 1 if pending else int(doc["n"])

    @translated
    async def changed(
        self, conversation_id: str, since: int, upto: int, max_seq: int, limit: int
    ) -> list[Message]:
        """The messages (seq up to max_seq) whose last change is in (since, upto], in change
        order, at most limit."""
        cursor = (
            self._messages.find(
                {
                    "conversation_id": conversation_id,
                    "change_seq": {"$gt": since, "$lte": upto},
                    "seq": {"$lte": max_seq},
                }
            )
            .sort("change_seq", ASCENDING)
            .limit(limit)
        )
        return [message_from_doc(doc) async for doc in cursor]
