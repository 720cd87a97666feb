"""Messages collection: inserts, history ranges, unread counts, exports and imports.

A message costs one write, its insert: its seq is chosen by the service from the last one it
knows, and the unique (conversation_id, seq) index is the arbiter: a seq taken meanwhile (by
another server process) fails that insert alone (SeqTaken), and the service takes the next.
Every read is a bounded range of that index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from pymongo.read_concern import ReadConcern

from chat.errors import Conflict, DatabaseUnavailable
from chat.models import iso, utcnow
from chat.store.base import (
    BULK_TIMEOUT_SECS,
    DUPLICATE_KEY,
    Collections,
    db_errors,
    object_id,
    translated,
)

# Unread messages are counted among at most this many seqs after the read pointer: the count
# costs a bounded index range whatever the backlog (clients show "999+").
UNREAD_SCAN_MAX = 1000
EXPORT_BATCH = 500  # messages per cursor batch (and per flushed chunk) when exporting
IMPORT_BATCH = 5000  # documents per insert_many when importing messages in bulk
IMPORT_RETRIES = 100  # compare-and-set attempts to reserve a block of seqs
REPLY_REF_FIELDS = ("id", "seq", "sender_id")  # what a reply stores of the message it quotes


class SeqTaken(Conflict):
    """The message's seq is already another message's: choose the next one and insert again."""


# What insert_messages says about each message: stored (the message, and whether it is this
# send's own or one stored earlier under its sender's client_msg_id), or why not.
InsertOutcome = tuple["Message", bool] | Exception


@dataclasses.dataclass(frozen=True)
class Message:
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    body: str
    client_msg_id: str
    created_at: datetime
    # What the message stores of each attached file (chat/store/files.py); none for most.
    attachments: tuple[dict[str, Any], ...] = dataclasses.field(default=(), hash=False)
    edited_at: datetime | None = None  # the body's last edit (chat/lifecycle.py)
    deleted_at: datetime | None = None  # a tombstone since then: no body, no attachments
    deleted_by: str | None = None  # who deleted it: the author, or a group owner/admin
    # The quoted message, {id, seq, sender_id}, and as shown (chat/replies.py) its excerpt or
    # deleted: true; None for a message that replies to none.
    reply_to: dict[str, Any] | None = dataclasses.field(default=None, hash=False)
    mentions: tuple[str, ...] = ()  # ids of the group members named by @username
    # An encrypted conversation's message (chat/e2e.py): the sending device, and one
    # envelope per recipient device; its body stays empty.
    sender_device: str | None = None
    envelopes: tuple[dict[str, Any], ...] = dataclasses.field(default=(), hash=False)
    # (emoji, user ids) in the order the emoji were first used (chat/store/reactions.py).
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = dataclasses.field(default=(), hash=False)
    change_seq: int = 0  # the number of its last change (chat/store/changes.py); 0: none
    change_type: str | None = None  # what that change was: edited, deleted, reactions
    # A message of another kind than text ("invitation": chat/invitations.py), with what that
    # kind stores (its expires_at a datetime); None for an ordinary message.
    kind: str | None = None
    invitation: dict[str, Any] | None = dataclasses.field(default=None, hash=False)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def to_dict(self) -> dict[str, Any]:
        """The contract's message shape (attachments without their URLs, which are signed
        per reader: chat/attachments.py); a message never edited nor deleted shows exactly
        what it always did."""
        shown: dict[str, Any] = {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "body": self.body,
            "client_msg_id": self.client_msg_id,
            "created_at": iso(self.created_at),
        }
        if self.attachments:
            shown["attachments"] = [dict(a) for a in self.attachments]
        if self.edited_at is not None:
            shown["edited_at"] = iso(self.edited_at)
        if self.deleted_at is not None:
            shown["deleted"] = True
            shown["deleted_at"] = iso(self.deleted_at)
            shown["deleted_by"] = self.deleted_by
        if self.reply_to is not None:
            shown["reply_to"] = dict(self.reply_to)
        if self.mentions:
            shown["mentions"] = list(self.mentions)
        if self.sender_device is not None:  # envelopes are shown per device (chat/e2e.py)
            shown["encrypted"] = True
            shown["sender_device_id"] = self.sender_device
        if self.reactions:
            shown["reactions"] = reactions_view(self.reactions)
        if self.kind is not None:
            shown["kind"] = self.kind
        if self.invitation is not None:
            shown["invitation"] = invitation_view(self.invitation)
        return shown


REACTION_USERS_SHOWN = 20  # user ids shown per emoji (the count says how many in all)


def reactions_view(reactions: tuple[tuple[str, tuple[str, ...]], ...]) -> list[dict[str, Any]]:
    """The contract's reactions, without `me` (which depends on the reader)."""
    return [
        {"emoji": e, "count": len(users), "user_ids": list(users[:REACTION_USERS_SHOWN])}
        for e, users in reactions
    ]


def invitation_view(stored: dict[str, Any]) -> dict[str, Any]:
    """The invitation as shown: a pending one whose time is up reads as expired, whether or
    not the expiry was written yet (chat/invitations.py)."""
    shown = dict(stored)
    expires_at = stored["expires_at"]
    if expires_at.tzinfo is None:  # as read back from the database
        expires_at = expires_at.replace(tzinfo=UTC)
    if shown["status"] == "pending" and expires_at <= utcnow():
        shown["status"] = "expired"
    for field in ("expires_at", "answered_at"):
        if isinstance(shown.get(field), datetime):
            shown[field] = iso(shown[field])
    return shown


def message_doc(message: Message) -> dict[str, Any]:
    doc = {
        "_id": ObjectId(message.id),
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender_id": message.sender_id,
        "body": message.body,
        "client_msg_id": message.client_msg_id,
        "created_at": message.created_at,
    }
    if message.attachments:  # a message without any stores what it always did
        doc["attachments"] = list(message.attachments)
    if message.reply_to is not None:  # the reference only: the excerpt is read when shown
        doc["reply_to"] = {k: message.reply_to[k] for k in REPLY_REF_FIELDS}
    if message.mentions:
        doc["mentions"] = list(message.mentions)
    if message.sender_device is not None:
        doc["sender_device"] = message.sender_device
        doc["envelopes"] = list(message.envelopes)
    if message.kind is not None:
        doc["kind"] = message.kind
    if message.invitation is not None:
        doc["invitation"] = dict(message.invitation)
    return doc


def message_from_doc(doc: dict[str, Any]) -> Message:
    return Message(
        id=str(doc["_id"]),
        conversation_id=doc["conversation_id"],
        seq=doc["seq"],
        sender_id=doc["sender_id"],
        body=doc["body"],
        client_msg_id=doc["client_msg_id"],
        created_at=doc["created_at"],
        attachments=tuple(doc.get("attachments") or ()),
        edited_at=doc.get("edited_at"),
        deleted_at=doc.get("deleted_at"),
        deleted_by=doc.get("deleted_by"),
        reply_to=doc.get("reply_to"),
        mentions=tuple(doc.get("mentions") or ()),
        sender_device=doc.get("sender_device"),
        envelopes=tuple(doc.get("envelopes") or ()),
        reactions=tuple((r["e"], tuple(r["u"])) for r in doc.get("reactions") or () if r["u"]),
        change_seq=doc.get("change_seq", 0),
        change_type=doc.get("change_type"),
        kind=doc.get("kind"),
        invitation=doc.get("invitation"),
    )


class MessageStore(Collections):
    """The messages of conversations (a part of ConversationStore, which owns the
    collections: the last seq of a conversation is also the floor kept on its document)."""

    _conversations: AsyncCollection[dict[str, Any]]
    _messages: AsyncCollection[dict[str, Any]]

    async def latest_seq(self, conversation_id: str) -> int:
        """The highest seq of a stored message of the conversation (0 for none), read at
        majority: what a new seq is chosen after when this process knows no later one."""
        seq, _ = await self.latest_head(conversation_id)
        return seq

    @translated
    async def latest_head(self, conversation_id: str) -> tuple[int, datetime | None]:
        """The seq and time of the conversation's newest stored message, read at majority;
        (0, None) for none."""
        durable = self._messages.with_options(read_concern=ReadConcern("majority"))
        doc = await durable.find_one(
            {"conversation_id": conversation_id},
            projection={"seq": 1, "created_at": 1, "_id": 0},
            sort=[("seq", DESCENDING)],
        )
        return (int(doc["seq"]), doc["created_at"]) if doc else (0, None)

    @translated
    async def insert_messages(self, messages: Sequence[Message]) -> list[InsertOutcome]:
        """Store the messages in one write (their ids chosen by the caller, so that trying
        again is safe), each on its own: the outcome of each, in order. (message, True) once
        the database holds it, also when an earlier attempt whose answer was lost stored it;
        (the message stored under its sender's client_msg_id by another send, False);
        SeqTaken; DatabaseUnavailable while its outcome is unknown. Raises
        DatabaseUnavailable when the outcome of all of them is unknown."""
        docs = [message_doc(m) for m in messages]
        outcomes: list[InsertOutcome] = [(m, True) for m in messages]
        try:
            with self.in_flight.pacer.interactive():
                await self._messages.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            if details.get("writeConcernErrors"):  # written, but not yet as durable as asked
                unconfirmed = DatabaseUnavailable("The messages are not confirmed yet.")
                outcomes = [unconfirmed for _ in messages]
            for error in details.get("writeErrors", []):
                index = error["index"]
                if error.get("code") != DUPLICATE_KEY:
                    outcomes[index] = DatabaseUnavailable(
                        f"The database refused the message: {error.get('errmsg', '')}"
                    )
                    continue
                fields = set(error.get("keyPattern") or error.get("keyValue") or {})
                try:
                    outcomes[index] = await self._duplicate(messages[index], fields)
                except (Conflict, DatabaseUnavailable) as failure:
                    outcomes[index] = failure
        return outcomes

    async def _duplicate(self, message: Message, fields: set[str]) -> tuple[Message, bool]:
        """The outcome of a message whose insert a unique index refused (fields: its keys)."""
        oid = ObjectId(message.id)
        # What an earlier attempt wrote counts only once it is as durable as an acknowledged
        # write: read at majority, and until then the outcome is unknown.
        durable = self._messages.with_options(read_concern=ReadConcern("majority"))
        mine = await durable.find_one({"_id": oid})
        if mine is not None:  # an earlier attempt got through
            return message_from_doc(mine), True
        if "client_msg_id" not in fields:
            if await self._messages.find_one({"_id": oid}, projection={"_id": 1}):
                raise DatabaseUnavailable("The message is not confirmed yet.")
            if "seq" in fields:
                raise SeqTaken("That message position is taken; try again.")
            raise Conflict("The message could not be stored; try again.")
        key = {"sender_id": message.sender_id, "client_msg_id": message.client_msg_id}
        stored = await durable.find_one(key)
        if stored is None:
            if await self._messages.find_one(key, projection={"_id": 1}):
                raise DatabaseUnavailable("The message is not confirmed yet.")
            raise Conflict("The message changed; try again.")
        return message_from_doc(stored), stored["_id"] == oid

    @translated
    async def by_client_msg_id(self, sender_id: str, client_msg_id: str) -> Message | None:
        """The sender's stored message with this key, or None (one unique index lookup)."""
        doc = await self._messages.find_one(
            {"sender_id": sender_id, "client_msg_id": client_msg_id}
        )
        return message_from_doc(doc) if doc else None

    async def _range(
        self, conversation_id: str, low: int, high: int, *, descending: bool, limit: int = 0
    ) -> list[Message]:
        # Bounded on both sides: one index range of at most high - low entries.
        cursor = self._messages.find(
            {"conversation_id": conversation_id, "seq": {"$gt": low, "$lte": high}}
        ).sort("seq", DESCENDING if descending else ASCENDING)
        if limit:
            cursor = cursor.limit(limit)
        return [message_from_doc(d) async for d in cursor]

    @translated
    async def page_before(
        self, conversation_id: str, before_seq: int, after_seq: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages with after_seq < seq < before_seq, the newest of them,
        oldest first; and whether older ones in the range remain."""
        found: list[Message] = []
        high = before_seq - 1
        window = limit + 1
        # The window grows only when seq gaps left it short: normally one query.
        while high > after_seq and len(found) <= limit:
            low = max(after_seq, high - window)
            found += await self._range(
                conversation_id, low, high, descending=True, limit=limit + 1 - len(found)
            )
            high, window = low, window * 2
        return list(reversed(found[:limit])), len(found) > limit

    @translated
    async def page_after(
        self, conversation_id: str, after_seq: int, before_seq: int, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages with after_seq < seq < before_seq, the oldest of them,
        oldest first; and whether newer ones in the range remain."""
        found: list[Message] = []
        low = after_seq
        window = limit + 1
        while low < before_seq - 1 and len(found) <= limit:
            high = min(before_seq - 1, low + window)
            found += await self._range(
                conversation_id, low, high, descending=False, limit=limit + 1 - len(found)
            )
            low, window = high, window * 2
        return found[:limit], len(found) > limit

    @translated
    async def latest_message(self, conversation_id: str, last_seq: int) -> Message | None:
        """The stored message with the highest seq up to last_seq, or None."""
        messages, _ = await self.page_before(conversation_id, last_seq + 1, 0, 1)
        return messages[0] if messages else None

    @translated
    async def count_unread(
        self, conversation_id: str, user_id: str, read_seq: int, last_seq: int
    ) -> int:
        """Messages after read_seq not sent by the user, among the newest UNREAD_SCAN_MAX seqs
        up to last_seq (exact below that backlog)."""
        low = max(read_seq, last_seq - UNREAD_SCAN_MAX)
        if last_seq <= low:
            return 0
        cursor = self._messages.find(
            {"conversation_id": conversation_id, "seq": {"$gt": low, "$lte": last_seq}},
            projection={"sender_id": 1, "_id": 0},
        )
        return sum([1 async for doc in cursor if doc["sender_id"] != user_id])

    async def iter_messages(
        self, conversation_id: str, max_seq: int, batch_size: int = EXPORT_BATCH
    ) -> AsyncIterator[list[Message]]:
        """Every message of the conversation up to max_seq in seq order, in bounded batches."""
        cursor = (
            self._messages.find(
                {"conversation_id": conversation_id, "seq": {"$gt": 0, "$lte": max_seq}}
            )
            .sort("seq", ASCENDING)
            .batch_size(batch_size)
        )
        try:
            while True:
                with db_errors():
                    docs = await cursor.to_list(batch_size)
                if not docs:
                    return
                yield [message_from_doc(d) for d in docs]
        finally:
            await cursor.close()

    @translated
    async def import_messages(
        self, conversation_id: str, sender_id: str, bodies: Sequence[str], key_prefix: str
    ) -> int:
        """Append many messages at once (imports, tests, benchmarks): reserves a block of seqs
        and inserts in batches; returns the first seq. client_msg_ids are key_prefix + index."""
        with pymongo.timeout(BULK_TIMEOUT_SECS):
            return await self._import(conversation_id, sender_id, bodies, key_prefix)

    async def _import(
        self, conversation_id: str, sender_id: str, bodies: Sequence[str], key_prefix: str
    ) -> int:
        oid = object_id(conversation_id, "conversation")
        count = len(bodies)
        for _ in range(IMPORT_RETRIES):
            doc = await self._conversations.find_one({"_id": oid}, projection={"last_seq": 1})
            if doc is None:
                raise Conflict("No such conversation.")
            floor = int(doc.get("last_seq", 0))
            first = max(floor, await self.latest_seq(conversation_id)) + 1
            result = await self._conversations.update_one(
                {"_id": oid, "last_seq": floor},
                {"$set": {"last_seq": first - 1 + count, "last_activity_at": utcnow()}},
            )
            if result.matched_count == 1:
                break
        else:
            raise Conflict("The conversation is too busy to import into; try again.")
        now = utcnow()
        for start in range(0, count, IMPORT_BATCH):
            docs = [
                {
                    "_id": ObjectId(),
                    "conversation_id": conversation_id,
                    "seq": first + i,
                    "sender_id": sender_id,
                    "body": bodies[i],
                    "client_msg_id": f"{key_prefix}{i}",
                    "created_at": now,
                }
                for i in range(start, min(count, start + IMPORT_BATCH))
            ]
            await self._messages.insert_many(docs, ordered=False)
        return first
