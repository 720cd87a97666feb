"""Conversations' activity (the floor of their last seq, the time of their last message), in
a collection of small documents of its own: `conversation_activity`, {_id: conversation id,
last_seq, last_activity_at}.

Not on the conversation's document: that one holds the members, and a database may rewrite
every index entry of a document it updates (SecantusDB does), 1,000 entries of the multikey
`members.user_id` index for a full group. Here an update rewrites one small document and its
`_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from chat.store.base import (
    Collections,
    InFlight,
    bulk_upsert,
    ensure_collection,
    in_chunks,
    translated,
)


class ActivityStore(Collections):
    """Floors of conversations' activity, moved forward in bulk, never back."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._activity = db["conversation_activity"]

    async def ensure_indexes(self) -> None:
        """Read by _id only; made now, not by the first write under load (a database may
        hold other writes while it creates a collection)."""
        await ensure_collection(self._activity)

    @translated
    async def touch_many(self, activity: dict[str, tuple[int, datetime]]) -> None:
        """Move each conversation's floors (last seq, last activity) forward in one bulk write,
        creating its document on first use."""
        if not activity:
            return
        updates = [
            UpdateOne(
                {"_id": cid},
                {"$max": {"last_seq": last_seq, "last_activity_at": when}},
                upsert=True,
            )
            for cid, (last_seq, when) in activity.items()
        ]
        await bulk_upsert(self._activity, updates)

    @translated
    async def last_activity_many(self, conversation_ids: Sequence[str]) -> dict[str, datetime]:
        """The stored last activity of those of these conversations that have one."""
        found: dict[str, datetime] = {}
        for chunk in in_chunks(conversation_ids):
            async for doc in self._activity.find(
                {"_id": {"$in": chunk}}, projection={"last_activity_at": 1}
            ):
                found[doc["_id"]] = doc["last_activity_at"]
        return found
