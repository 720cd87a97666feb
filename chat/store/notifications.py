"""The notifications and service_keys collections.

A notification belongs to one user; `read_at` is unset until it is read, and a TTL index on it
removes a read notification `ttl_days` after it was read (unread ones stay). A page is newest
first by `_id` (an ObjectId: the creation order), so `before` is a notification's id.

notification_counts keeps each user's unread count (`{_id: user id, unread}`) for the live
notification.new: counting them at each notification cost a read of every unread one of every
recipient, so a 1,000-member group's notification grew slower with each one before it. A
notification adds 1 after its insert; a read sets the count again from the notifications, so a
count a crash left behind is right again at the user's next read.

A service key is stored by its SHA-256 only, as the document's `_id`: a lookup is one exact
match on a unique index, and a stolen database yields no usable key.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat.models import utcnow
from chat.store.accounts import LIVE
from chat.store.base import (
    BULK_TIMEOUT_SECS,
    Collections,
    InFlight,
    bulk_upsert,
    in_chunks,
    translated,
)


@dataclasses.dataclass(frozen=True)
class Notification:
    id: str
    user_id: str
    kind: str
    created_at: datetime
    read_at: datetime | None
    actor_id: str | None
    conversation_id: str | None
    data: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class NewNotification:
    """What a notification says, before it is stored for each of its recipients."""

    kind: str
    actor_id: str | None = None
    conversation_id: str | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ServiceKey:
    name: str
    created_at: datetime


def key_hash(key: str) -> str:
    """What the database holds of a service key."""
    return hashlib.sha256(key.encode()).hexdigest()


def notification_from_doc(doc: dict[str, Any]) -> Notification:
    return Notification(
        id=str(doc["_id"]),
        user_id=doc["user_id"],
        kind=doc["kind"],
        created_at=doc["created_at"],
        read_at=doc.get("read_at"),
        actor_id=doc.get("actor_id"),
        conversation_id=doc.get("conversation_id"),
        data=doc.get("data") or {},
    )


def _valid_ids(ids: Iterable[str]) -> list[ObjectId]:
    """The ids that can be ours (others simply match nothing)."""
    return [ObjectId(i) for i in ids if ObjectId.is_valid(i)]


class NotificationStore(Collections):
    """Notifications per user, and the service keys allowed to send system ones."""

    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight, ttl_days: float = 90
    ) -> None:
        super().__init__(in_flight)
        self._notes = db["notifications"]
        self._counts = db["notification_counts"]
        self._keys = db["service_keys"]
        self._users = db["users"]
        self.ttl_days = ttl_days

    async def ensure_indexes(self) -> None:
        """A user's page newest first, its unread count, the TTL of read ones, key names."""
        await self._notes.create_index([("user_id", ASCENDING), ("_id", DESCENDING)])
        await self._notes.create_index([("user_id", ASCENDING), ("read_at", ASCENDING)])
        await self._notes.create_index(
            [("read_at", ASCENDING)], expireAfterSeconds=int(self.ttl_days * 86400)
        )
        await self._keys.create_index([("name", ASCENDING)], unique=True)
        # A database from before the counts: counted once, from the notifications.
        unread = await self._notes.find_one({"read_at": None}, {"_id": 1})
        if unread is not None and await self._counts.find_one({}, {"_id": 1}) is None:
            await self._count_all()

    async def _count_all(self) -> None:
        """Every user's count from the notifications themselves."""
        with pymongo.timeout(BULK_TIMEOUT_SECS):
            pipeline: list[dict[str, Any]] = [
                {"$match": {"read_at": None}},
                {"$group": {"_id": "$user_id", "unread": {"$sum": 1}}},
            ]
            counts = [d async for d in await self._notes.aggregate(pipeline)]
            for chunk in in_chunks(counts, 1000):
                ops = [UpdateOne({"_id": d["_id"]}, {"$set": d}, upsert=True) for d in chunk]
                await self._counts.bulk_write(ops, ordered=False)

    # -- notifications ------------------------------------------------------------------

    @translated
    async def add(self, user_ids: Sequence[str], note: NewNotification) -> list[Notification]:
        """One notification for each user, in one insert."""
        if not user_ids:
            return []
        now = utcnow()
        docs: list[dict[str, Any]] = []
        for uid in user_ids:
            doc: dict[str, Any] = {
                "_id": ObjectId(),
                "user_id": uid,
                "kind": note.kind,
                "created_at": now,
                "data": note.data,
            }
            if note.actor_id is not None:
                doc["actor_id"] = note.actor_id
            if note.conversation_id is not None:
                doc["conversation_id"] = note.conversation_id
            docs.append(doc)
        await self._notes.insert_many(docs, ordered=False)
        ops = [UpdateOne({"_id": uid}, {"$inc": {"unread": 1}}, upsert=True) for uid in user_ids]
        await bulk_upsert(self._counts, ops)
        return [notification_from_doc(d) for d in docs]

    @translated
    async def page(
        self, user_id: str, before: str | None, limit: int
    ) -> tuple[list[Notification], bool]:
        """Up to `limit` of the user's notifications older than `before`, newest first; and
        whether there are more."""
        query: dict[str, Any] = {"user_id": user_id}
        if before is not None:
            if not ObjectId.is_valid(before):
                return [], False
            query["_id"] = {"$lt": ObjectId(before)}
        cursor = self._notes.find(query).sort("_id", DESCENDING).limit(limit + 1)
        found = [notification_from_doc(d) async for d in cursor]
        return found[:limit], len(found) > limit

    @translated
    async def unread_counts(self, user_ids: Sequence[str]) -> dict[str, int]:
        """How many unread notifications each of these users has, as counted (one read by _id
        per 64 users, whatever their notifications)."""
        counts = dict.fromkeys(user_ids, 0)
        for chunk in in_chunks(user_ids):
            async for doc in self._counts.find({"_id": {"$in": chunk}}):
                counts[doc["_id"]] = max(0, doc["unread"])
        return counts

    @translated
    async def live_user_ids(self) -> list[str]:
        """Every account not deleted (the recipients of a notification to all)."""
        cursor = self._users.find(LIVE, {"_id": 1})
        return [str(d["_id"]) async for d in cursor]

    @translated
    async def mark_read(self, user_id: str, ids: Sequence[str] | None) -> int:
        """Mark these of the user's notifications read (None: all); how many changed."""
        query: dict[str, Any] = {"user_id": user_id, "read_at": None}
        if ids is not None:
            query["_id"] = {"$in": _valid_ids(ids)}
        result = await self._notes.update_many(query, {"$set": {"read_at": utcnow()}})
        # Counted again, not decremented: a count left wrong (a crash between a notification's
        # insert and its count) is right from here on.
        unread = await self._notes.count_documents({"user_id": user_id, "read_at": None})
        await self._counts.update_one({"_id": user_id}, {"$set": {"unread": unread}}, upsert=True)
        return result.modified_count

    # -- service keys ---------------------------------------------------------------------

    @translated
    async def add_key(self, name: str, key: str) -> ServiceKey | None:
        """Store the key (by its hash) under name; None when the name is taken."""
        now = utcnow()
        try:
            await self._keys.insert_one({"_id": key_hash(key), "name": name, "created_at": now})
        except DuplicateKeyError:
            return None
        return ServiceKey(name, now)

    @translated
    async def keys(self) -> list[ServiceKey]:
        cursor = self._keys.find({}, {"name": 1, "created_at": 1}).sort("name", ASCENDING)
        return [ServiceKey(d["name"], d["created_at"]) async for d in cursor]

    @translated
    async def revoke_key(self, name: str) -> bool:
        result = await self._keys.delete_one({"name": name})
        return result.deleted_count == 1

    @translated
    async def key_named(self, key: str) -> str | None:
        """The name of the service whose key this is, or None."""
        doc = await self._keys.find_one({"_id": key_hash(key)}, {"name": 1})
        return doc["name"] if doc else None
