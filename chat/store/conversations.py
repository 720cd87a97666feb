"""Conversations collection (messages: chat/store/messages.py).

A conversation document holds its members (with role and username), the members who were
removed (with the last seq they may still read, and the group's name when they left), every
member's read pointer, a version that every membership change bumps, and a floor of its last
seq and activity time (moved forward now and then, never per message). Messages live in their
own collection, keyed by (conversation_id, seq).

Membership changes are compare-and-set updates on the version. The last seq of a conversation
is the higher of its floor and its newest stored message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chat.batching import ReadBatcher
from chat.errors import Conflict, DatabaseUnavailable
from chat.models import iso, utcnow
from chat.store.base import (
    DUPLICATE_KEY,
    InFlight,
    in_chunks,
    object_id,
    translated,
)
from chat.store.messages import MessageStore

Kind = Literal["dm", "group"]
Role = Literal["owner", "admin", "member"]


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
    encrypted: bool = False  # end-to-end encrypted (chat/e2e.py), fixed at creation

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
        shown: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "members": [m.to_dict() for m in self.members],
            "last_seq": self.last_seq,
            "created_at": iso(self.created_at),
            "last_activity_at": iso(self.last_activity_at),
        }
        if self.encrypted:
            shown["encrypted"] = True
        return shown


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
        encrypted=doc.get("encrypted", False),
    )


E2E_DM_SUFFIX = ":e2e"  # the pair's encrypted DM is a second DM, keyed apart


def dm_key(a: str, b: str) -> str:
    """The one key of the pair, whoever opens the DM."""
    return ":".join(sorted((a, b)))


@dataclasses.dataclass(frozen=True)
class ListCursor:
    """Where a page of the conversation list ends: (last_activity_at, id) of its last item."""

    last_activity_at: datetime
    conversation_id: str


class ConversationStore(MessageStore):
    """Conversations (DMs and groups) with their members and read pointers; their messages
    (chat/store/messages.py)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._db = db
        self._conversations = db["conversations"]
        self._messages = db["messages"]
        self._reads = db["read_pointers"]
        # Every user coming online reads its DM partners (its presence audience).
        self._partner_reads: ReadBatcher[str, set[str]] = ReadBatcher(self._dm_partners_many)
        self._conversation_reads: ReadBatcher[ObjectId, Conversation] = ReadBatcher(self._get_many)

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
        # The first messages after a start (every conversation unknown here) read together.
        return await self._conversation_reads.get(oid)

    async def _get_many(self, oids: list[ObjectId]) -> dict[ObjectId, Conversation]:
        docs = self._conversations.find({"_id": {"$in": oids}}, batch_size=len(oids) + 1)
        return {doc["_id"]: conversation_from_doc(doc) async for doc in docs}

    @translated
    async def open_dm(self, a: Member, b: Member, *, encrypted: bool = False) -> Conversation:
        """The one DM of the pair (or their one encrypted DM), created on first use;
        concurrent calls get the same one."""
        key = dm_key(a.user_id, b.user_id) + (E2E_DM_SUFFIX if encrypted else "")
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
        if encrypted:
            doc["encrypted"] = True
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
    async def create_group(
        self, name: str, members: Sequence[Member], *, encrypted: bool = False
    ) -> Conversation:
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
        if encrypted:
            doc["encrypted"] = True
        await self._conversations.insert_one(doc)
        return conversation_from_doc(doc)

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
        docs = {}
        for chunk in in_chunks(oids):
            docs.update(
                {d["_id"]: d async for d in self._conversations.find({"_id": {"$in": chunk}})}
            )
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
            a, b = doc["dm_key"].split(":")[:2]  # an encrypted DM's key has a suffix
            partners.setdefault(a, set()).add(b)
            partners.setdefault(b, set()).add(a)
        return partners
