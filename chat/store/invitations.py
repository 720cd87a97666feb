"""Invitations' answers (chat/invitations.py): each is one compare-and-set update of the
invitation message's document, on status pending and a time not up yet, so that of any number
of answers racing each other, in any number of processes, exactly one applies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from chat.store.base import Collections, InFlight, translated
from chat.store.messages import Message, message_from_doc


def _key(invitation_id: str) -> dict[str, Any] | None:
    """An invitation's id is its message's: found by the primary key, no index more."""
    try:
        return {"_id": ObjectId(invitation_id), "kind": "invitation"}
    except (InvalidId, TypeError):
        return None


class InvitationStore(Collections):
    """Invitation messages, in the messages collection."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._messages = db["messages"]

    @translated
    async def get(self, invitation_id: str) -> Message | None:
        key = _key(invitation_id)
        doc = await self._messages.find_one(key) if key is not None else None
        return message_from_doc(doc) if doc else None

    @translated
    async def settle(
        self, invitation_id: str, status: str, at: datetime, changes: dict[str, Any]
    ) -> Message | None:
        """Set the status (and changes, invitation fields) if it is still pending: before its
        expiry for an answer, after it for "expired". The message as changed, or None when
        another change came first (or the time is up, or not yet for an expiry)."""
        key = _key(invitation_id)
        if key is None:
            return None
        when = {"$lte": at} if status == "expired" else {"$gt": at}
        fields = {"status": status, "answered_at": at, **changes}
        doc = await self._messages.find_one_and_update(
            {
                **key,
                "deleted_at": None,
                "invitation.status": "pending",
                "invitation.expires_at": when,
            },
            {"$set": {f"invitation.{k}": v for k, v in fields.items()}},
            return_document=ReturnDocument.AFTER,
        )
        return message_from_doc(doc) if doc else None
