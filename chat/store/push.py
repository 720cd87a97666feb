"""Web Push subscriptions: `push_subscriptions`, {_id: endpoint, user_id, session_id, p256dh,
auth, created_at}.

Keyed by the endpoint: a push service's URL names one browser profile's subscription, so the
same browser posting it again (after a sign-in as someone else, say) replaces it instead of
pushing one device twice. Bound to the session that posted it: its end deletes it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from chat.store.base import Collections, InFlight, translated


@dataclasses.dataclass(frozen=True)
class Subscription:
    """Where and how to push to one browser: its endpoint and its keys (RFC 8291)."""

    endpoint: str
    user_id: str
    session_id: str
    p256dh: str  # the browser's P-256 public key, base64url
    auth: str  # the browser's auth secret, base64url

    def info(self) -> dict[str, Any]:
        """The subscription as pywebpush takes it."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


class PushStore(Collections):
    """The subscriptions of every session that enabled push."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._subs = db["push_subscriptions"]

    async def ensure_indexes(self) -> None:
        """Read by user (a push) and by session (its end)."""
        await self._subs.create_index("user_id")
        await self._subs.create_index("session_id")

    @translated
    async def save(self, sub: Subscription, now: datetime) -> None:
        """Store the subscription, replacing the endpoint's earlier one."""
        doc = dataclasses.asdict(sub)
        endpoint = doc.pop("endpoint")
        await self._subs.replace_one({"_id": endpoint}, {**doc, "created_at": now}, upsert=True)

    @translated
    async def of_user(self, user_id: str) -> list[Subscription]:
        """Every subscription of the user's sessions."""
        return [
            Subscription(d["_id"], d["user_id"], d["session_id"], d["p256dh"], d["auth"])
            async for d in self._subs.find({"user_id": user_id})
        ]

    @translated
    async def delete_endpoint(self, endpoint: str) -> None:
        """The push service said the subscription is gone (404/410)."""
        await self._subs.delete_one({"_id": endpoint})

    @translated
    async def delete_session(self, session_id: str, endpoint: str | None = None) -> int:
        """The session's subscriptions (or only the one at `endpoint`); how many went."""
        query: dict[str, Any] = {"session_id": session_id}
        if endpoint is not None:
            query["_id"] = endpoint
        result = await self._subs.delete_many(query)
        return result.deleted_count
