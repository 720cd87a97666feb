"""Reactions on messages (PROTOCOL.md section 7), kept on the message's document.

`reactions` is a list of `{e: emoji, u: [user ids]}` in the order the emoji were first used.
Every change is one conditional update of the document, so concurrent changes from several
processes are all applied exactly once: adding to an emoji already there is an $addToSet-like
push guarded by "not in it yet", a new emoji is a push guarded by "not there yet, and fewer
than the bound", removing is a $pull guarded by "in it". An update that matches nothing was
either a no-op (already reacted, or not) or lost a race, which the next attempt sees.
"""

from __future__ import annotations

from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from chat.errors import Conflict
from chat.store.base import Collections, InFlight, translated
from chat.store.lifecycle import message_key, stamped
from chat.store.messages import Message, message_from_doc

MAX_EMOJI = 20  # distinct emoji on one message (PROTOCOL.md section 7)
REACTIONS = "reactions"  # the change_type of a reaction change
ATTEMPTS = 5  # conditional updates tried before a lost race is reported


class TooManyReactions(Conflict):
    code = "too_many_reactions"


class ReactionStore(Collections):
    """Adds and removes one user's reaction to a message, atomically."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._messages = db["messages"]

    @translated
    async def add(
        self, conversation_id: str, message_id: str, emoji: str, user_id: str, change_seq: int
    ) -> tuple[Message | None, bool]:
        """React with emoji (once); the message after, and whether anything changed. None
        for a message that is not there or deleted; TooManyReactions beyond MAX_EMOJI."""
        key = message_key(conversation_id, message_id)
        if key is None:
            return None, False
        live = {**key, "deleted_at": None}
        for _ in range(ATTEMPTS):
            doc = await self._messages.find_one_and_update(
                {**live, "reactions": {"$elemMatch": {"e": emoji, "u": {"$ne": user_id}}}},
                stamped({"$push": {"reactions.$[r].u": user_id}}, change_seq, REACTIONS),
                array_filters=[{"r.e": emoji}],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                doc = await self._messages.find_one_and_update(
                    {
                        **live,
                        "reactions.e": {"$ne": emoji},
                        f"reactions.{MAX_EMOJI - 1}": {"$exists": False},
                    },
                    stamped(
                        {"$push": {"reactions": {"e": emoji, "u": [user_id]}}},
                        change_seq,
                        REACTIONS,
                    ),
                    return_document=ReturnDocument.AFTER,
                )
            if doc is not None:
                return message_from_doc(doc), True
            current = await self._messages.find_one(live)
            if current is None:
                return None, False
            entries = current.get("reactions") or []
            entry = next((r for r in entries if r["e"] == emoji), None)
            if entry is not None and user_id in entry["u"]:
                return message_from_doc(current), False
            if entry is None and len(entries) >= MAX_EMOJI:
                raise TooManyReactions(
                    f"A message has at most {MAX_EMOJI} different reactions.", field="emoji"
                )
        raise Conflict("The message changed too often; try again.")

    @translated
    async def remove(
        self, conversation_id: str, message_id: str, emoji: str, user_id: str, change_seq: int
    ) -> tuple[Message | None, bool]:
        """Take back the user's reaction (nothing if there is none); the message after, and
        whether anything changed. None for a message that is not there or deleted."""
        key = message_key(conversation_id, message_id)
        if key is None:
            return None, False
        live = {**key, "deleted_at": None}
        doc = await self._messages.find_one_and_update(
            {**live, "reactions": {"$elemMatch": {"e": emoji, "u": user_id}}},
            stamped({"$pull": {"reactions.$[r].u": user_id}}, change_seq, REACTIONS),
            array_filters=[{"r.e": emoji}],
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            current = await self._messages.find_one(live)
            return (message_from_doc(current) if current else None), False
        # An emoji nobody uses any more goes (a concurrent add to it keeps it).
        tidied = await self._messages.find_one_and_update(
            {**live, "reactions.u": {"$size": 0}},
            {"$pull": {"reactions": {"u": {"$size": 0}}}},
            return_document=ReturnDocument.AFTER,
        )
        return message_from_doc(tidied or doc), True
