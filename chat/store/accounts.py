"""Users and sessions collections."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat.batching import ReadBatcher
from chat.errors import Conflict
from chat.models import Session, User, utcnow
from chat.store.base import (
    Collections,
    InFlight,
    duplicate_key_fields,
    in_chunks,
    object_id,
    translated,
)

# No 0/O, 1/I/L: a code read aloud or copied by hand must not be ambiguous.
FRIEND_CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
FRIEND_CODE_LEN = 8  # 31**8 ~ 8.5e11 codes: collisions are rare and retried
FRIEND_CODE_RETRIES = 5
SURROGATES_START, SURROGATES_END = 0xD800, 0xDFFF
# A deleted account's document stays (its messages name it as their sender) with this name,
# and its unique keys replaced by ones no sign-up, sign-in or lookup can produce: the name,
# email and friend code are free again. The keys start with the last code point, so that the
# directory (username order) reaches tombstones last, if ever.
DELETED_USERNAME = "Deleted user"
TOMBSTONE_KEY_PREFIX = "\U0010ffffdeleted:"
LIVE: dict[str, Any] = {"deleted": {"$ne": True}}  # every read of accounts skips tombstones
MAX_SESSIONS_LISTED = 200  # newest first; a user rarely holds more than a few


def new_friend_code() -> str:
    """A random code in the unambiguous alphabet, without the dash."""
    return "".join(secrets.choice(FRIEND_CODE_ALPHABET) for _ in range(FRIEND_CODE_LEN))


def normalize_friend_code(code: str) -> str:
    """Accept the code with or without the dash, in any case, with stray spaces."""
    return code.replace("-", "").replace(" ", "").upper()


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with prefix; None for "" (no bound)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == SURROGATES_START:
            last = SURROGATES_END + 1  # surrogates cannot be stored: skip to the next character
        if last <= sys.maxunicode:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]  # the last character is the largest: bound on the shorter prefix
    return None


def user_from_doc(doc: dict[str, Any]) -> User:
    return User(
        id=str(doc["_id"]),
        username=doc["username"],
        email=doc["email"],
        friend_code=doc["friend_code"],
        created_at=doc["created_at"],
        last_seen=doc.get("last_seen"),
        role=doc.get("role", "user"),
    )


class UserStore(Collections):
    """Accounts: unique case-insensitive username and email, unique friend code."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._users = db["users"]
        self._reads: ReadBatcher[ObjectId, User] = ReadBatcher(self._get_by_oids)

    async def ensure_indexes(self) -> None:
        """Unique lower-cased username/email (also the prefix-search index) and friend code."""
        await self._users.create_index([("username_lower", ASCENDING)], unique=True)
        await self._users.create_index([("email_lower", ASCENDING)], unique=True)
        await self._users.create_index([("friend_code", ASCENDING)], unique=True)

    @translated
    async def create(self, username: str, email: str, password_hash: str) -> User:
        """Insert a new account; Conflict naming the field when username or email is taken."""
        for _ in range(FRIEND_CODE_RETRIES):
            doc = {
                "_id": ObjectId(),
                "username": username,
                "username_lower": username.lower(),
                "email": email,
                "email_lower": email.lower(),
                "password_hash": password_hash,
                "friend_code": new_friend_code(),
                "created_at": utcnow(),
                "last_seen": None,
            }
            try:
                await self._users.insert_one(doc)
            except DuplicateKeyError as exc:
                fields = duplicate_key_fields(exc)
                if "username_lower" in fields:
                    raise Conflict("That username is taken.", field="username") from exc
                if "email_lower" in fields:
                    raise Conflict(
                        "An account with that email already exists.", field="email"
                    ) from exc
                continue  # friend code collision: draw another
            return user_from_doc(doc)
        raise Conflict("Could not allocate a friend code; try again.")

    async def get(self, user_id: str) -> User | None:
        """The user with this id, or None. Concurrent calls share one read (every connect
        reads its user for hello)."""
        return await self._reads.get(object_id(user_id, "user"))

    @translated
    async def _get_by_oids(self, oids: list[ObjectId]) -> dict[ObjectId, User]:
        found: dict[ObjectId, User] = {}
        for chunk in in_chunks(oids):
            # At most one document per id: one batch more than that ends the cursor in one reply.
            docs = self._users.find({"_id": {"$in": chunk}, **LIVE}, batch_size=len(chunk) + 1)
            found.update({doc["_id"]: user_from_doc(doc) async for doc in docs})
        return found

    @translated
    async def get_many(self, user_ids: list[str]) -> dict[str, User]:
        """Users by id; unknown ids are left out."""
        oids = [object_id(uid, "user") for uid in user_ids]
        found: dict[str, User] = {}
        for chunk in in_chunks(oids):
            docs = self._users.find({"_id": {"$in": chunk}, **LIVE}, batch_size=len(chunk) + 1)
            found.update({str(doc["_id"]): user_from_doc(doc) async for doc in docs})
        return found

    @translated
    async def get_login(self, login: str) -> tuple[User, str] | None:
        """The user whose username or email matches (case-insensitively), with its hash."""
        key = "email_lower" if "@" in login else "username_lower"
        doc = await self._users.find_one({key: login.lower(), **LIVE})
        return (user_from_doc(doc), doc["password_hash"]) if doc else None

    @translated
    async def password_hash(self, user_id: str) -> str | None:
        """The account's bcrypt hash; None when it does not exist (or was deleted)."""
        doc = await self._users.find_one(
            {"_id": object_id(user_id, "user"), **LIVE}, {"password_hash": 1}
        )
        return doc["password_hash"] if doc else None

    @translated
    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        """Replace the account's hash; False when it does not exist (or was deleted)."""
        result = await self._users.update_one(
            {"_id": object_id(user_id, "user"), **LIVE}, {"$set": {"password_hash": password_hash}}
        )
        return result.matched_count == 1

    @translated
    async def erase(self, user_id: str) -> bool:
        """Turn the account into a tombstone: no password, email or friend code, shown as
        DELETED_USERNAME, invisible to every read here; its username, email and friend code
        can be taken again at once. True when it was live until now."""
        key = TOMBSTONE_KEY_PREFIX + user_id
        result = await self._users.update_one(
            {"_id": object_id(user_id, "user"), **LIVE},
            {
                "$set": {
                    "deleted": True,
                    "deleted_at": utcnow(),
                    "username": DELETED_USERNAME,
                    "username_lower": key,
                    "email": "",
                    "email_lower": key,
                    "friend_code": key,
                },
                "$unset": {"password_hash": ""},
            },
        )
        return result.modified_count == 1

    @translated
    async def get_by_friend_code(self, code: str) -> User | None:
        """The user with this friend code (any case, dash optional), or None."""
        doc = await self._users.find_one({"friend_code": normalize_friend_code(code), **LIVE})
        return user_from_doc(doc) if doc else None

    @translated
    async def set_last_seen_many(self, times: Mapping[str, datetime]) -> None:
        """Record when each user was last online, in one bulk write."""
        if not times:
            return
        updates = [
            UpdateOne({"_id": object_id(user_id, "user"), **LIVE}, {"$set": {"last_seen": when}})
            for user_id, when in times.items()
        ]
        await self._users.bulk_write(updates, ordered=False)

    @translated
    async def search(
        self, prefix: str, *, after: str | None, limit: int, exclude: Collection[str] = ()
    ) -> tuple[list[User], bool]:
        """Users whose lower-cased username starts with prefix ("" matches everyone), in that
        order, strictly after the cursor `after`; at most `limit` of them and whether more
        follow. Users in `exclude` are skipped without shortening the page."""
        # One range on the unique username_lower index: [prefix, next string after the
        # prefix). MongoDB walks that index range in order and stops at the limit; a
        # case-insensitive regex would have to test every key of the index.
        bounds: dict[str, str] = {}
        if after is not None and after >= prefix:
            bounds["$gt"] = after
        else:
            bounds["$gte"] = prefix
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            if after is not None and after >= upper:
                return [], False
            bounds["$lt"] = upper
        skipped = set(exclude)
        # Over-fetch by the number of excluded users so the page stays full when some of
        # them fall in the range; one more than the page tells whether another follows.
        cursor = (
            self._users.find({"username_lower": bounds, **LIVE}, {"password_hash": 0})
            .sort("username_lower", ASCENDING)
            .limit(limit + 1 + len(skipped))
        )
        users = [user_from_doc(d) async for d in cursor if str(d["_id"]) not in skipped]
        return users[:limit], len(users) > limit


def session_from_doc(doc: dict[str, Any]) -> Session:
    return Session(
        id=doc["_id"],
        user_id=doc["user_id"],
        created_at=doc["created_at"],
        expires_at=doc["expires_at"],
        revoked=doc.get("revoked_at") is not None,
        last_used_at=doc.get("last_used_at"),
        address=doc.get("address"),
        user_agent=doc.get("user_agent"),
    )


class SessionStore(Collections):
    """Sign-in sessions: a token is valid only while its session is stored and not revoked."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._sessions = db["sessions"]
        self._reads: ReadBatcher[str, Session] = ReadBatcher(self._get_many)

    async def ensure_indexes(self) -> None:
        """Sessions by user (to list or revoke them); expired ones removed by a TTL index."""
        await self._sessions.create_index([("user_id", ASCENDING)])
        await self._sessions.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)

    @translated
    async def create(
        self,
        user_id: str,
        expires_at: datetime,
        *,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> Session:
        """A new session with an unguessable id, noting the client that signed in."""
        now = utcnow()
        doc = {
            "_id": secrets.token_hex(16),
            "user_id": user_id,
            "created_at": now,
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": now,
            "address": address,
            "user_agent": user_agent,
        }
        await self._sessions.insert_one(doc)
        return session_from_doc(doc)

    async def get(self, session_id: str) -> Session | None:
        """The session, revoked or not, or None. Concurrent calls share one read (a connect
        storm checks hundreds of sessions at once)."""
        return await self._reads.get(session_id)

    @translated
    async def _get_many(self, session_ids: list[str]) -> dict[str, Session]:
        docs = self._sessions.find({"_id": {"$in": session_ids}}, batch_size=len(session_ids) + 1)
        return {doc["_id"]: session_from_doc(doc) async for doc in docs}

    @translated
    async def revoke(self, session_id: str, *, user_id: str | None = None) -> bool:
        """Mark the session revoked (only if it is user_id's, when given); True if it was
        live until now."""
        query: dict[str, Any] = {"_id": session_id, "revoked_at": None}
        if user_id is not None:
            query["user_id"] = user_id
        result = await self._sessions.update_one(query, {"$set": {"revoked_at": utcnow()}})
        return result.modified_count == 1

    @translated
    async def live_of(self, user_id: str) -> list[Session]:
        """The user's sessions neither revoked nor expired, newest first."""
        cursor = (
            self._sessions.find(
                {"user_id": user_id, "revoked_at": None, "expires_at": {"$gt": utcnow()}}
            )
            .sort("created_at", DESCENDING)
            .limit(MAX_SESSIONS_LISTED)
        )
        return [session_from_doc(doc) async for doc in cursor]

    @translated
    async def revoke_all(self, user_id: str, *, keep: str | None = None) -> list[str]:
        """Revoke every live session of the user but `keep`; the ids revoked."""
        query: dict[str, Any] = {"user_id": user_id, "revoked_at": None}
        if keep is not None:
            query["_id"] = {"$ne": keep}
        ids = [doc["_id"] async for doc in self._sessions.find(query, {"_id": 1})]
        if ids:
            await self._sessions.update_many(
                {"_id": {"$in": ids}, "revoked_at": None}, {"$set": {"revoked_at": utcnow()}}
            )
        return ids

    @translated
    async def delete_all(self, user_id: str) -> list[str]:
        """Delete every session of the user (its tokens fail from now on); the ids."""
        ids = [doc["_id"] async for doc in self._sessions.find({"user_id": user_id}, {"_id": 1})]
        if ids:
            await self._sessions.delete_many({"_id": {"$in": ids}})
        return ids

    @translated
    async def touch_many(self, uses: Mapping[str, tuple[datetime, str | None]]) -> None:
        """Record each session's last use: session id -> (when, from which address, when
        known), in one bulk write."""
        updates = []
        for session_id, (when, address) in uses.items():
            changes: dict[str, Any] = {"last_used_at": when}
            if address is not None:
                changes["address"] = address
            updates.append(UpdateOne({"_id": session_id}, {"$set": changes}))
        if updates:
            await self._sessions.bulk_write(updates, ordered=False)
