"""Conversations and messages collections.

A conversation document holds its members (with role and username), the members who were
removed (with the last seq they may still read, and the group's name when they left), every
member's read pointer, a version that every membership change bumps, and a floor of its last
seq and activity time (moved forward now and then, never per message). Messages live in their
own collection, keyed by (conversation_id, seq).

A message costs one write, its insert: its seq is chosen by the service from the last one it
knows, and the unique (conversation_id, seq) index is the arbiter: a seq taken meanwhile (by
another server process) fails that insert alone (SeqTaken), and the service takes the next.
Membership changes are compare-and-set updates on the version. The last seq of a conversation
is the higher of its floor and its newest stored message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Literal

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.read_concern import ReadConcern

from chat.batching import ReadBatcher
from chat.errors import Conflict, DatabaseUnavailable
from chat.models import iso, utcnow
from chat.store.base import (
    BULK_TIMEOUT_SECS,
    DUPLICATE_KEY,
    Collections,
    InFlight,
    db_errors,
    object_id,
    translated,
)

Kind = Literal["dm", "group"]
Role = Literal["owner", "admin", "member"]

# Seqs looked at per query when finding the newest message or counting unread: gaps in seq
# are rare, so the first window nearly always answers, and every query is a bounded range.
LATEST_WINDOW = 8
# Unread messages are counted among at most this many seqs after the read pointer: the count
# costs a bounded index range whatever the backlog (clients show "999+").
UNREAD_SCAN_MAX = 1000
EXPORT_BATCH = 500  # messages per cursor batch (and per flushed chunk) when exporting
IMPORT_BATCH = 5000  # documents per insert_many when importing messages in bulk
IMPORT_RETRIES = 100  # compare-and-set attempts to reserve a block of seqs


class SeqTaken(Conflict):
    """The message's seq is already another message's: choose the next one and insert again."""


# What insert_messages says about each message: stored (the message, and whether it is this
# send's own or one stored earlier under its sender's client_msg_id), or why not.
InsertOutcome = tuple["Message", bool] | Exception


@dataclasses.dataclass(frozen=True)
class Member:
    user_id: str
    username: str
    role: Role
    joined_at: datetime
    deleted: bool = False  # the account was deleted: the member stays, as "Deleted user"

    def to_dict(self) -> dict[str, Any]:
        """The member as the API shows it."""
        shown: dict[str, Any] = {
            "user_id": self.user_id,
            "username": self.username,
            "role": self.role,
            "joined_at": iso(self.joined_at),
        }
        if self.deleted:
            shown["deleted"] = True
        return shown


@dataclasses.dataclass(frozen=True)
class FormerMember:
    """A removed member: may still read messages up to until_seq, and nothing after; name is
    the conversation's name when it left (what its export shows)."""

    user_id: str
    username: str
    until_seq: int
    removed_at: datetime
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class ReadPointer:
    conversation_id: str
    user_id: str
    seq: int


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
        return shown


@dataclasses.dataclass(frozen=True)
class Conversation:
    id: str
    kind: Kind
    name: str | None
    members: tuple[Member, ...]
    former: tuple[FormerMember, ...]
    # user_id -> seq of the last message the user has read, as stored on the document before
    # read pointers had a collection of their own (a floor: see read_pointers)
    reads: dict[str, int]
    last_seq: int  # the last seq allocated (its message may have failed: gaps are allowed)
    version: int  # bumped by every membership or name change
    created_at: datetime
    last_activity_at: datetime

    def member(self, user_id: str) -> Member | None:
        """The current membership of the user, or None."""
        for member in self.members:
            if member.user_id == user_id:
                return member
        return None

    def former_member(self, user_id: str) -> FormerMember | None:
        """The user's removal record when it was removed and is not a member again."""
        for former in self.former:
            if former.user_id == user_id:
                return former
        return None

    @property
    def member_ids(self) -> list[str]:
        return [m.user_id for m in self.members]

    def shared_dict(self) -> dict[str, Any]:
        """What every member sees alike (the payload of group.* events)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "members": [m.to_dict() for m in self.members],
            "last_seq": self.last_seq,
            "created_at": iso(self.created_at),
            "last_activity_at": iso(self.last_activity_at),
        }


def member_doc(member: Member) -> dict[str, Any]:
    doc = dataclasses.asdict(member)
    if not member.deleted:
        del doc["deleted"]  # a live member's document stays as it always was
    return doc


def former_from_doc(doc: dict[str, Any], current_name: str | None) -> FormerMember:
    # A removal stored before names were kept shows the current name (all there is).
    return FormerMember(
        doc["user_id"], doc["username"], doc["until_seq"], doc["removed_at"],
        doc.get("name", current_name),
    )  # fmt: skip


def conversation_from_doc(doc: dict[str, Any]) -> Conversation:
    return Conversation(
        id=str(doc["_id"]),
        kind=doc["kind"],
        name=doc.get("name"),
        members=tuple(
            Member(m["user_id"], m["username"], m["role"], m["joined_at"], m.get("deleted", False))
            for m in doc.get("members", [])
        ),
        former=tuple(former_from_doc(f, doc.get("name")) for f in doc.get("former", [])),
        reads={k: int(v) for k, v in (doc.get("reads") or {}).items()},
        last_seq=doc.get("last_seq", 0),
        version=doc.get("version", 0),
        created_at=doc["created_at"],
        last_activity_at=doc["last_activity_at"],
    )


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
    )


def dm_key(a: str, b: str) -> str:
    """The one key of the pair, whoever opens the DM."""
    return ":".join(sorted((a, b)))


@dataclasses.dataclass(frozen=True)
class ListCursor:
    """Where a page of the conversation list ends: (last_activity_at, id) of its last item."""

    last_activity_at: datetime
    conversation_id: str


class ConversationStore(Collections):
    """Conversations (DMs and groups) with their members and read pointers; messages."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._db = db
        self._conversations = db["conversations"]
        self._messages = db["messages"]
        self._reads = db["read_pointers"]
        # Every user coming online reads its DM partners (its presence audience).
        self._partner_reads: ReadBatcher[str, set[str]] = ReadBatcher(self._dm_partners_many)

    async def ensure_indexes(self) -> None:
        """One DM per pair; a user's conversations by activity; messages by (conversation, seq);
        one message per (sender, client_msg_id); read pointers by conversation."""
        conv, msgs = self._conversations, self._messages
        await conv.create_index(
            [("dm_key", ASCENDING)], unique=True, partialFilterExpression={"kind": "dm"}
        )
        # A member's conversations. Deliberately without last_activity_at: in a multikey index
        # every message would rewrite one key per member (1,000 for a full group).
        await conv.create_index([("members.user_id", ASCENDING)])
        await conv.create_index([("former.user_id", ASCENDING)])
        # History pages, the newest message, unread counts and exports are ranges of this one.
        await msgs.create_index([("conversation_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await msgs.create_index(
            [("sender_id", ASCENDING), ("client_msg_id", ASCENDING)], unique=True
        )
        await self._reads.create_index([("conversation_id", ASCENDING)])

    # -- conversations --------------------------------------------------------

    @translated
    async def get(self, conversation_id: str) -> Conversation | None:
        """The conversation with this id, or None (also for ids that cannot be ours)."""
        try:
            oid = ObjectId(conversation_id)
        except (InvalidId, TypeError):
            return None
        doc = await self._conversations.find_one({"_id": oid})
        return conversation_from_doc(doc) if doc else None

    @translated
    async def open_dm(self, a: Member, b: Member) -> Conversation:
        """The one DM of the pair, created on first use; concurrent calls get the same one."""
        key = dm_key(a.user_id, b.user_id)
        # "kind" makes the query match the partial index's filter: without it neither MongoDB
        # nor SecantusDB may use the dm_key index, and each call scanned every conversation.
        doc = await self._conversations.find_one({"dm_key": key, "kind": "dm"})
        if doc is not None:
            return conversation_from_doc(doc)
        now = utcnow()
        doc = {
            "_id": ObjectId(),
            "kind": "dm",
            "dm_key": key,
            "name": None,
            "members": [member_doc(a), member_doc(b)],
            "member_count": 2,
            "former": [],
            "reads": {},
            "last_seq": 0,
            "version": 0,
            "created_at": now,
            "last_activity_at": now,
        }
        try:
            await self._conversations.insert_one(doc)
        except DuplicateKeyError:
            # The other open_dm won the race: its conversation is the pair's one.
            found = await self._conversations.find_one({"dm_key": key, "kind": "dm"})
            if found is None:  # deleted in between: not something this product does
                raise Conflict("The conversation changed; try again.") from None
            return conversation_from_doc(found)
        return conversation_from_doc(doc)

    @translated
    async def create_group(self, name: str, members: Sequence[Member]) -> Conversation:
        """A new group with these members (the first is the owner)."""
        now = utcnow()
        doc = {
            "_id": ObjectId(),
            "kind": "group",
            "name": name,
            "members": [member_doc(m) for m in members],
            "member_count": len(members),
            "former": [],
            "reads": {},
            "last_seq": 0,
            "version": 0,
            "created_at": now,
            "last_activity_at": now,
        }
        await self._conversations.insert_one(doc)
        return conversation_from_doc(doc)

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
    async def change_group(
        self,
        conv: Conversation,
        *,
        members: Sequence[Member],
        name: str | None = None,
        removed: Sequence[Member] = (),
        readded: Sequence[str] = (),
    ) -> Conversation | None:
        """Replace the members (and name) if the group is still at conv's version; removed
        members keep read access up to conv.last_seq (the last seq the caller allocated, which
        becomes the floor: no later message reuses it). The new state, or None when the group
        changed meanwhile."""
        now = utcnow()
        update: dict[str, Any] = {
            "$set": {
                "members": [member_doc(m) for m in members],
                "member_count": len(members),
                "name": conv.name if name is None else name,
            },
            "$inc": {"version": 1},
            "$max": {"last_seq": conv.last_seq},
        }
        gone = {m.user_id for m in removed} | set(readded)
        kept_former = [f for f in conv.former if f.user_id not in gone]
        former_docs = [dataclasses.asdict(f) for f in kept_former] + [
            {"user_id": m.user_id, "username": m.username, "until_seq": conv.last_seq,
             "removed_at": now, "name": conv.name}
            for m in removed
        ]  # fmt: skip
        if former_docs != [dataclasses.asdict(f) for f in conv.former]:
            update["$set"]["former"] = former_docs
        # A member's read pointer outlives a removal (it is read-only access, not amnesia).
        result = await self._conversations.update_one(
            {"_id": ObjectId(conv.id), "version": conv.version}, update
        )
        if result.matched_count != 1:
            return None
        new_former = tuple(former_from_doc(f, conv.name) for f in former_docs)
        return dataclasses.replace(
            conv,
            members=tuple(members),
            name=conv.name if name is None else name,
            former=new_former,
            version=conv.version + 1,
        )

    @translated
    async def read_pointers(self, conversation_id: str) -> dict[str, int]:
        """The members' read pointers kept apart from the document (user_id -> seq)."""
        cursor = self._reads.find(
            {"conversation_id": conversation_id}, projection={"user_id": 1, "seq": 1, "_id": 0}
        )
        return {doc["user_id"]: int(doc["seq"]) async for doc in cursor}

    @translated
    async def advance_reads(self, pointers: Sequence[ReadPointer]) -> list[bool | Exception]:
        """Move each (conversation, user) read pointer forward to its seq, in one bulk write:
        whether each moved (False: it already was there or beyond; it never moves back).
        Each pointer is a small document of its own: a group's read receipts never rewrite
        the group's document."""
        updates = [
            UpdateOne(
                {"_id": f"{p.conversation_id}:{p.user_id}", "seq": {"$lt": p.seq}},
                {"$set": dataclasses.asdict(p)},
                upsert=True,
            )
            for p in pointers
        ]
        moved: list[bool | Exception] = [True] * len(updates)
        try:
            await self._reads.bulk_write(updates, ordered=False)
        except BulkWriteError as exc:
            details = exc.details or {}
            if details.get("writeConcernErrors"):
                moved = [DatabaseUnavailable("The read pointer is not confirmed yet.")] * len(moved)
            for error in details.get("writeErrors", []):
                # A pointer at or past seq does not match, and the upsert then collides with it.
                moved[error["index"]] = (
                    False
                    if error.get("code") == DUPLICATE_KEY
                    else DatabaseUnavailable(f"The database refused: {error.get('errmsg', '')}")
                )
        return moved

    @translated
    async def member_heads(self, user_id: str) -> list[tuple[str, datetime]]:
        """(id, stored last activity) of each of the user's current conversations: small, one
        index lookup, so that the list is ordered before its page's documents, which can be
        large (groups), are read."""
        cursor = self._conversations.find(
            {"members.user_id": user_id}, projection={"last_activity_at": 1}
        )
        return [(str(doc["_id"]), doc["last_activity_at"]) async for doc in cursor]

    @translated
    async def get_many(self, conversation_ids: Sequence[str]) -> list[Conversation]:
        """These conversations, in this order (those that do not exist left out)."""
        oids = [object_id(cid, "conversation") for cid in conversation_ids]
        if not oids:
            return []
        docs = {d["_id"]: d async for d in self._conversations.find({"_id": {"$in": oids}})}
        return [conversation_from_doc(docs[oid]) for oid in oids if oid in docs]

    @translated
    async def readable_by(self, user_id: str) -> list[Conversation]:
        """Every conversation the user is or was a member of, oldest first."""
        found: dict[str, Conversation] = {}
        for field in ("members.user_id", "former.user_id"):
            async for doc in self._conversations.find({field: user_id}):
                conv = conversation_from_doc(doc)
                found[conv.id] = conv
        return sorted(found.values(), key=lambda c: (c.created_at, c.id))

    @translated
    async def mark_user_deleted(self, user_id: str, username: str) -> list[str]:
        """Show the user as `username`, marked deleted, wherever it is or was a member (its
        messages stay, and name it by id); the ids of the conversations it is a member of."""
        ids = [
            str(doc["_id"])
            async for doc in self._conversations.find({"members.user_id": user_id}, {"_id": 1})
        ]
        # A user is at most once in each array: the positional operator finds it. The version
        # moves, so that a group change made from an older copy is made again from this one.
        await self._conversations.update_many(
            {"members.user_id": user_id},
            {
                "$set": {"members.$.username": username, "members.$.deleted": True},
                "$inc": {"version": 1},
            },
        )
        await self._conversations.update_many(
            {"former.user_id": user_id},
            {"$set": {"former.$.username": username}, "$inc": {"version": 1}},
        )
        return ids

    async def dm_partners(self, user_id: str) -> set[str]:
        """Users this user has a DM conversation with (concurrent calls share one read)."""
        return set(await self._partner_reads.get(user_id) or ())

    @translated
    async def _dm_partners_many(self, user_ids: list[str]) -> dict[str, set[str]]:
        partners: dict[str, set[str]] = {}
        cursor = self._conversations.find(
            {"members.user_id": {"$in": user_ids}, "kind": "dm"},
            projection={"dm_key": 1},
            batch_size=len(user_ids),  # about one DM each: no second round trip
        )
        async for doc in cursor:
            a, b = doc["dm_key"].split(":")
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
        return partners

    # -- messages -------------------------------------------------------------

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
