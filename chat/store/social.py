"""Friend requests, friendships and blocks collections.

Every state change that two clients may race on is one atomic operation on one document:
a pending request is a document that accept, decline, cancel and block each try to delete,
so exactly one of them gets it; a friendship and a block each have a deterministic `_id`,
so a second insert of the same one fails instead of creating a duplicate.
"""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat.batching import ReadBatcher
from chat.errors import Conflict
from chat.models import utcnow
from chat.store.base import Collections, InFlight, in_chunks, object_id, translated

MAX_PENDING_LISTED = 1000  # newest requests listed per direction: bounds what spam can cost
BLOCK_RETRIES = 3  # a block and an unblock racing on the same pair


def pair_key(a: str, b: str) -> str:
    """The unordered pair's key: the same for (a, b) and (b, a)."""
    return f"{a}:{b}" if a < b else f"{b}:{a}"


def block_key(blocker_id: str, blocked_id: str) -> str:
    """The ordered pair's key: blocks are directional."""
    return f"{blocker_id}:{blocked_id}"


@dataclasses.dataclass(frozen=True)
class FriendRequest:
    id: str
    from_id: str
    to_id: str
    created_at: datetime


@dataclasses.dataclass(frozen=True)
class Friendship:
    user_ids: tuple[str, str]
    created_at: datetime

    def other(self, user_id: str) -> str:
        """The friend of user_id in this pair."""
        a, b = self.user_ids
        return b if a == user_id else a


@dataclasses.dataclass(frozen=True)
class Block:
    blocker_id: str
    blocked_id: str
    created_at: datetime


def request_from_doc(doc: dict[str, Any]) -> FriendRequest:
    return FriendRequest(
        id=str(doc["_id"]),
        from_id=doc["from_id"],
        to_id=doc["to_id"],
        created_at=doc["created_at"],
    )


def friendship_from_doc(doc: dict[str, Any]) -> Friendship:
    a, b = doc["users"]
    return Friendship(user_ids=(a, b), created_at=doc["created_at"])


def block_from_doc(doc: dict[str, Any]) -> Block:
    return Block(
        blocker_id=doc["blocker_id"], blocked_id=doc["blocked_id"], created_at=doc["created_at"]
    )


class SocialStore(Collections):
    """Friend requests, friendships, blocks."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._requests = db["friend_requests"]
        self._friendships = db["friendships"]
        self._blocks = db["blocks"]
        # Every user coming online reads both to find its presence audience: a connect storm
        # shares a few reads.
        self._friend_reads: ReadBatcher[str, set[str]] = ReadBatcher(self._friend_ids_many)
        self._block_reads: ReadBatcher[str, set[str]] = ReadBatcher(self._blocked_either_way_many)
        # A conversation's first message after a start (friends-only DMs) reads its pair's.
        self._friendship_reads: ReadBatcher[str, Friendship] = ReadBatcher(self._friendships_many)

    async def ensure_indexes(self) -> None:
        """One pending request per unordered pair; lookups by either side of every relation."""
        # Only pending requests are stored (answered ones are deleted), so a plain unique
        # index on the unordered pair means: at most one pending request between two users,
        # in either direction. Two people asking each other at once collide here, and the
        # loser accepts the winner's request instead of leaving two crossed requests.
        await self._requests.create_index([("pair", ASCENDING)], unique=True)
        await self._requests.create_index([("to_id", ASCENDING), ("_id", DESCENDING)])
        await self._requests.create_index([("from_id", ASCENDING), ("_id", DESCENDING)])
        # Friendships: _id is the pair key (unique for free); `users` finds a user's friends.
        await self._friendships.create_index([("users", ASCENDING)])
        # Blocks: _id is "blocker:blocked"; both directions are looked up.
        await self._blocks.create_index([("blocker_id", ASCENDING), ("created_at", DESCENDING)])
        await self._blocks.create_index([("blocked_id", ASCENDING)])

    # -- friend requests --------------------------------------------------------

    @translated
    async def create_request(self, from_id: str, to_id: str) -> FriendRequest | None:
        """Store a pending request; None when one is already pending between the two."""
        doc = {
            "_id": ObjectId(),
            "pair": pair_key(from_id, to_id),
            "from_id": from_id,
            "to_id": to_id,
            "created_at": utcnow(),
        }
        try:
            await self._requests.insert_one(doc)
        except DuplicateKeyError:
            return None
        return request_from_doc(doc)

    @translated
    async def pending_between(self, a: str, b: str) -> FriendRequest | None:
        """The pending request between the two users, in either direction, or None."""
        doc = await self._requests.find_one({"pair": pair_key(a, b)})
        return request_from_doc(doc) if doc else None

    @translated
    async def take_request(
        self, request_id: str, *, to_id: str | None = None, from_id: str | None = None
    ) -> FriendRequest | None:
        """Atomically remove the pending request if it is addressed to to_id / sent by
        from_id; None when it is gone (answered, cancelled) or not theirs.

        Of several concurrent takers of one request exactly one gets it."""
        query: dict[str, Any] = {"_id": object_id(request_id, "friend request")}
        if to_id is not None:
            query["to_id"] = to_id
        if from_id is not None:
            query["from_id"] = from_id
        doc = await self._requests.find_one_and_delete(query)
        return request_from_doc(doc) if doc else None

    @translated
    async def take_pending_between(self, a: str, b: str) -> FriendRequest | None:
        """Atomically remove the pending request between the two, if any, and return it."""
        doc = await self._requests.find_one_and_delete({"pair": pair_key(a, b)})
        return request_from_doc(doc) if doc else None

    @translated
    async def incoming(self, user_id: str) -> list[FriendRequest]:
        """Pending requests addressed to the user, newest first."""
        cursor = self._requests.find({"to_id": user_id}).sort("_id", DESCENDING)
        return [request_from_doc(d) async for d in cursor.limit(MAX_PENDING_LISTED)]

    @translated
    async def outgoing(self, user_id: str) -> list[FriendRequest]:
        """Pending requests the user sent, newest first."""
        cursor = self._requests.find({"from_id": user_id}).sort("_id", DESCENDING)
        return [request_from_doc(d) async for d in cursor.limit(MAX_PENDING_LISTED)]

    # -- friendships ------------------------------------------------------------

    @translated
    async def add_friendship(self, a: str, b: str) -> bool:
        """Make the two friends; False when they already were (never a second document)."""
        first, second = sorted((a, b))
        try:
            await self._friendships.insert_one(
                {"_id": pair_key(a, b), "users": [first, second], "created_at": utcnow()}
            )
        except DuplicateKeyError:
            return False
        return True

    @translated
    async def remove_friendship(self, a: str, b: str) -> bool:
        """End the friendship; True when there was one (exactly one concurrent caller)."""
        result = await self._friendships.delete_one({"_id": pair_key(a, b)})
        return result.deleted_count == 1

    @translated
    async def friendship(self, a: str, b: str) -> Friendship | None:
        """The friendship between the two, or None."""
        return await self._friendship_reads.get(pair_key(a, b))

    async def _friendships_many(self, keys: list[str]) -> dict[str, Friendship]:
        docs = self._friendships.find({"_id": {"$in": keys}}, batch_size=len(keys) + 1)
        return {doc["_id"]: friendship_from_doc(doc) async for doc in docs}

    @translated
    async def friendships_of(self, user_id: str) -> list[Friendship]:
        """Every friendship the user is part of."""
        return [friendship_from_doc(d) async for d in self._friendships.find({"users": user_id})]

    async def friend_ids(self, user_id: str) -> set[str]:
        """Ids of the user's friends (concurrent calls share one read)."""
        return set(await self._friend_reads.get(user_id) or ())

    @translated
    async def _friend_ids_many(self, user_ids: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for chunk in in_chunks(user_ids):
            query = {"users": {"$in": chunk}}
            async for doc in self._friendships.find(query, {"users": 1}, batch_size=len(chunk)):
                a, b = doc["users"]
                found.setdefault(a, set()).add(b)
                found.setdefault(b, set()).add(a)
        return found

    # -- blocks -----------------------------------------------------------------

    @translated
    async def add_block(self, blocker_id: str, blocked_id: str) -> tuple[Block, bool]:
        """Record the block (idempotent); the block and True when it is new."""
        doc = {
            "_id": block_key(blocker_id, blocked_id),
            "blocker_id": blocker_id,
            "blocked_id": blocked_id,
            "created_at": utcnow(),
        }
        for _ in range(BLOCK_RETRIES):
            try:
                await self._blocks.insert_one(doc)
            except DuplicateKeyError:
                existing = await self._blocks.find_one({"_id": doc["_id"]})
                if existing is not None:
                    return block_from_doc(existing), False
                continue  # unblocked in between: this call's block is the one to store
            return block_from_doc(doc), True
        raise Conflict("The block changed concurrently; try again.")

    @translated
    async def remove_block(self, blocker_id: str, blocked_id: str) -> bool:
        """Lift the block; True when there was one."""
        result = await self._blocks.delete_one({"_id": block_key(blocker_id, blocked_id)})
        return result.deleted_count == 1

    @translated
    async def blocks_by(self, blocker_id: str) -> list[Block]:
        """The blocks the user made, newest first."""
        cursor = self._blocks.find({"blocker_id": blocker_id}).sort("created_at", DESCENDING)
        return [block_from_doc(d) async for d in cursor]

    async def blocked_either_way(self, user_id: str) -> set[str]:
        """Users this user blocked and users who blocked it (concurrent calls share reads)."""
        return set(await self._block_reads.get(user_id) or ())

    @translated
    async def _blocked_either_way_many(self, user_ids: list[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        projection = {"blocker_id": 1, "blocked_id": 1}
        for field, chunk in itertools.product(("blocker_id", "blocked_id"), in_chunks(user_ids)):
            query = {field: {"$in": chunk}}  # one indexed range each
            async for doc in self._blocks.find(query, projection, batch_size=len(chunk)):
                blocker, blocked = doc["blocker_id"], doc["blocked_id"]
                found.setdefault(blocker, set()).add(blocked)
                found.setdefault(blocked, set()).add(blocker)
        return found

    # -- an account's erasure ---------------------------------------------------

    @translated
    async def erase_user(self, user_id: str) -> tuple[list[str], list[FriendRequest], list[Block]]:
        """Delete every friendship, pending request and block the user is part of (either
        side); what was deleted: the friends' ids, the requests, the blocks."""
        friends = [f.other(user_id) for f in await self.friendships_of(user_id)]
        requests = [
            request_from_doc(d)
            async for d in self._requests.find({"$or": [{"from_id": user_id}, {"to_id": user_id}]})
        ]
        either = {"$or": [{"blocker_id": user_id}, {"blocked_id": user_id}]}
        blocks = [block_from_doc(d) async for d in self._blocks.find(either)]
        await self._friendships.delete_many({"users": user_id})
        await self._requests.delete_many({"$or": [{"from_id": user_id}, {"to_id": user_id}]})
        await self._blocks.delete_many(either)
        return friends, requests, blocks
