"""Privacy collections: each user's settings, and the state of each DM between people who are
not friends (a request until the recipient answers).

A DM's state is one document keyed by the unordered pair, written once when its first message
is sent: `pending` (from the sender, to the recipient) or `accepted`. A pending state becomes
accepted by one conditional update, and never goes back: every process may remember an
accepted pair for good.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from chat.batching import ReadBatcher
from chat.models import utcnow
from chat.store.base import Collections, InFlight, ensure_collection, in_chunks, translated

DmPolicy = Literal["everyone", "friends"]
DM_POLICIES: tuple[DmPolicy, ...] = ("everyone", "friends")
DEFAULT_DM_POLICY: DmPolicy = "everyone"
RequestState = Literal["pending", "accepted"]


@dataclasses.dataclass(frozen=True)
class UserSettings:
    user_id: str
    dm_policy: DmPolicy = DEFAULT_DM_POLICY

    def to_dict(self) -> dict[str, Any]:
        """The settings as the API shows them."""
        return {"dm_policy": self.dm_policy}


@dataclasses.dataclass(frozen=True)
class DmState:
    """Whether a DM between non-friends was answered: pending (from_id asked to_id) or
    accepted."""

    pair: str
    conversation_id: str
    from_id: str
    to_id: str
    state: RequestState
    created_at: datetime


def _state_from_doc(doc: dict[str, Any]) -> DmState:
    return DmState(
        pair=doc["_id"],
        conversation_id=doc["conversation_id"],
        from_id=doc["from_id"],
        to_id=doc["to_id"],
        state=doc["state"],
        created_at=doc["created_at"],
    )


class PrivacyStore(Collections):
    """user_settings (one document per user who changed a setting) and dm_states (one per DM
    pair whose first message was sent since privacy settings exist)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._settings = db["user_settings"]
        self._states = db["dm_states"]
        # A conversation list renders every DM at once: their states are read together.
        self._state_reads: ReadBatcher[str, DmState] = ReadBatcher(self._states_many)
        # A conversation's first message after a start reads its recipient's.
        self._settings_reads: ReadBatcher[str, UserSettings] = ReadBatcher(self._settings_many)

    async def ensure_indexes(self) -> None:
        """Both collections are read by _id only; made now, not by a first write under
        load."""
        await ensure_collection(self._settings)
        await ensure_collection(self._states)

    @translated
    async def settings(self, user_id: str) -> UserSettings:
        """The user's settings; defaults for a user who never changed them."""
        return await self._settings_reads.get(user_id) or UserSettings(user_id)

    async def _settings_many(self, user_ids: list[str]) -> dict[str, UserSettings]:
        found: dict[str, UserSettings] = {}
        docs = self._settings.find({"_id": {"$in": user_ids}}, batch_size=len(user_ids) + 1)
        async for doc in docs:
            policy = doc.get("dm_policy")
            found[doc["_id"]] = UserSettings(
                doc["_id"], policy if policy in DM_POLICIES else DEFAULT_DM_POLICY
            )
        return found

    @translated
    async def update_settings(self, user_id: str, changes: dict[str, Any]) -> UserSettings:
        """Store these setting values (already validated) and return the settings."""
        if changes:
            await self._settings.update_one({"_id": user_id}, {"$set": changes}, upsert=True)
        doc = await self._settings.find_one({"_id": user_id}) or {}
        policy = doc.get("dm_policy")
        return UserSettings(user_id, policy if policy in DM_POLICIES else DEFAULT_DM_POLICY)

    @translated
    async def erase_user(self, user_id: str) -> None:
        """Delete the user's settings (an account's erasure)."""
        await self._settings.delete_one({"_id": user_id})

    async def dm_state(self, pair: str) -> DmState | None:
        """The pair's DM state, or None (concurrent calls share one read)."""
        return await self._state_reads.get(pair)

    @translated
    async def _states_many(self, pairs: list[str]) -> dict[str, DmState]:
        found: dict[str, DmState] = {}
        for chunk in in_chunks(pairs):
            cursor = self._states.find({"_id": {"$in": chunk}}, batch_size=len(chunk))
            found.update({doc["_id"]: _state_from_doc(doc) async for doc in cursor})
        return found

    @translated
    async def start_request(
        self, pair: str, conversation_id: str, from_id: str, to_id: str
    ) -> DmState:
        """Record that from_id wrote first to to_id, a stranger; the state already stored
        when there is one (a concurrent first message, or an earlier one)."""
        doc = {
            "_id": pair,
            "conversation_id": conversation_id,
            "from_id": from_id,
            "to_id": to_id,
            "state": "pending",
            "created_at": utcnow(),
        }
        try:
            await self._states.insert_one(doc)
        except DuplicateKeyError:
            found = await self._states.find_one({"_id": pair})
            if found is not None:
                return _state_from_doc(found)
        return _state_from_doc(doc)

    @translated
    async def settle(self, pair: str, conversation_id: str, from_id: str, to_id: str) -> bool:
        """Mark the pair's DM accepted (created so when it has no state yet); True when this
        call changed a pending request."""
        for _ in range(2):  # a pending state written between the two steps: once more
            result = await self._states.update_one(
                {"_id": pair, "state": "pending"},
                {"$set": {"state": "accepted", "accepted_at": utcnow()}},
            )
            if result.modified_count:
                return True
            doc = {
                "_id": pair,
                "conversation_id": conversation_id,
                "from_id": from_id,
                "to_id": to_id,
                "state": "accepted",
                "created_at": utcnow(),
            }
            try:
                await self._states.insert_one(doc)
                return False
            except DuplicateKeyError:
                found = await self._states.find_one({"_id": pair})
                if found is None or found["state"] == "accepted":
                    return False
        return False
