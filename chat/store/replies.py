"""The messages that replies quote, read when replies are shown (chat/replies.py).

A reply stores only a reference to the message it quotes ({id, seq, sender_id}); the excerpt
is taken from the quoted message's body each time the reply is shown, by one batched read of
the quoted messages of a page. So a deletion (which erases the body) or an edit of the quoted
message is reflected in every reply at once, with no write to any reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.database import AsyncDatabase

from chat.store.base import Collections, InFlight, translated


@dataclasses.dataclass(frozen=True)
class Quoted:
    """What a reply shows of the message it quotes."""

    id: str
    seq: int
    sender_id: str
    body: str
    deleted: bool


class ReplyStore(Collections):
    """Reads of quoted messages, in the messages collection."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._messages = db["messages"]

    @translated
    async def quoted(self, conversation_id: str, message_ids: Iterable[str]) -> dict[str, Quoted]:
        """The messages of the conversation with these ids, by id (one query on _id; ids of
        other conversations or of no message are absent)."""
        oids = []
        for message_id in set(message_ids):
            try:
                oids.append(ObjectId(message_id))
            except (InvalidId, TypeError):
                continue
        if not oids:
            return {}
        cursor = self._messages.find(
            {"_id": {"$in": oids}, "conversation_id": conversation_id},
            projection={"seq": 1, "sender_id": 1, "body": 1, "deleted_at": 1},
        )
        found = {}
        async for doc in cursor:
            quoted = Quoted(
                str(doc["_id"]),
                doc["seq"],
                doc["sender_id"],
                doc.get("body") or "",
                doc.get("deleted_at") is not None,
            )
            found[quoted.id] = quoted
        return found
