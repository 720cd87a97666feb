"""A stored message's later life: its edits and its deletion (PROTOCOL.md section 7).

Each change is one conditional update of the message's document, so that two changes racing
each other (an edit and a delete, in two processes) cannot both apply to the same state: an
edit only applies to a message that is not deleted, a deletion only once. A deleted message
stays as a tombstone at its seq (the history cursor and the sender's client_msg_id keep
working); its body, attachments and reactions are removed from the document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from chat.store.base import Collections, InFlight, translated
from chat.store.messages import Message, message_from_doc

# What a deletion erases from the document (reactions: chat/store/reactions.py). A tombstone
# quotes nothing, mentions nobody and keeps no envelope.
ERASED_FIELDS = {
    "attachments": "",
    "reactions": "",
    "reply_to": "",
    "mentions": "",
    "envelopes": "",
}


def message_key(conversation_id: str, message_id: str) -> dict[str, Any] | None:
    try:
        return {"_id": ObjectId(message_id), "conversation_id": conversation_id}
    except (InvalidId, TypeError):
        return None


def stamped(update: dict[str, Any], change_seq: int, change_type: str) -> dict[str, Any]:
    """The update, also stamping the change's number (chat/store/changes.py) when given."""
    if not change_seq:
        return update
    fields = {**update.get("$set", {}), "change_type": change_type}
    return {**update, "$set": fields, "$max": {"change_seq": change_seq}}


class LifecycleStore(Collections):
    """Edits and deletions of messages, in the messages collection."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._messages = db["messages"]

    @translated
    async def get(self, conversation_id: str, message_id: str) -> Message | None:
        """The message with this id in this conversation, or None (also for ids that cannot be
        ours, and for a message of another conversation)."""
        key = message_key(conversation_id, message_id)
        doc = await self._messages.find_one(key) if key is not None else None
        return message_from_doc(doc) if doc else None

    @translated
    async def edit(
        self,
        conversation_id: str,
        message_id: str,
        sender_id: str,
        body: str,
        at: datetime,
        mentions: tuple[str, ...] = (),
        change_seq: int = 0,
    ) -> Message | None:
        """Replace the body of the sender's message (and the mentions it names) unless it is
        deleted; the message as edited, or None when nothing matched (deleted meanwhile, or
        not the sender's)."""
        key = message_key(conversation_id, message_id)
        if key is None:
            return None
        doc = await self._messages.find_one_and_update(
            {**key, "sender_id": sender_id, "deleted_at": None},
            stamped(
                {"$set": {"body": body, "edited_at": at, "mentions": list(mentions)}}
                if mentions
                else {"$set": {"body": body, "edited_at": at}, "$unset": {"mentions": ""}},
                change_seq,
                "edited",
            ),
            return_document=ReturnDocument.AFTER,
        )
        return message_from_doc(doc) if doc else None

    @translated
    async def tombstone(
        self,
        conversation_id: str,
        message_id: str,
        deleted_by: str,
        at: datetime,
        change_seq: int = 0,
    ) -> Message | None:
        """Erase the message's body, attachments and reactions, keeping its seq as a
        tombstone; the message as it was before (whose files the caller deletes), or None
        when it is already deleted or does not exist."""
        key = message_key(conversation_id, message_id)
        if key is None:
            return None
        doc = await self._messages.find_one_and_update(
            {**key, "deleted_at": None},
            stamped(
                {
                    "$set": {"body": "", "deleted_at": at, "deleted_by": deleted_by},
                    "$unset": ERASED_FIELDS,
                },
                change_seq,
                "deleted",
            ),
            return_document=ReturnDocument.BEFORE,
        )
        return message_from_doc(doc) if doc else None
