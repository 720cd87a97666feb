"""Storage: the only package that imports pymongo. Returns models, never raw documents."""

from __future__ import annotations

from typing import Any

import pymongo
from pymongo import AsyncMongoClient

from chat.store.accounts import SessionStore, UserStore, normalize_friend_code
from chat.store.activity import ActivityStore
from chat.store.base import BULK_TIMEOUT_SECS, InFlight, db_errors
from chat.store.changes import ChangeStore
from chat.store.conversations import ConversationStore
from chat.store.e2e import E2eStore
from chat.store.files import FileStore
from chat.store.invitations import InvitationStore
from chat.store.lifecycle import LifecycleStore
from chat.store.moderation import ModerationStore
from chat.store.notifications import NotificationStore
from chat.store.privacy import PrivacyStore
from chat.store.push import PushStore
from chat.store.reactions import ReactionStore
from chat.store.replies import ReplyStore
from chat.store.social import SocialStore

__all__ = ["Store", "normalize_friend_code"]


class Store:
    """One database client and a wrapper per collection family."""

    def __init__(
        self, uri: str, db_name: str, *, timeout_ms: int, notification_ttl_days: float = 90
    ) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri,
            tz_aware=True,
            # Every operation, whatever it waits on (a server, a connection, an answer), ends
            # within this: a stalled database is a 503 in 3 s, not a hang.
            timeoutMS=timeout_ms,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            # A write is acknowledged only once it is in the journal of a majority of the
            # replica set (on a standalone server: its own journal), so an acknowledged message,
            # and the seq state it was given, survive a crash and are never rolled back.
            w="majority",
            journal=True,
        )
        self.db = self.client[db_name]
        self.in_flight = InFlight()
        self.users = UserStore(self.db, self.in_flight)
        self.sessions = SessionStore(self.db, self.in_flight)
        self.social = SocialStore(self.db, self.in_flight)
        self.conversations = ConversationStore(self.db, self.in_flight)
        self.activity = ActivityStore(self.db, self.in_flight)
        self.privacy = PrivacyStore(self.db, self.in_flight)
        self.files = FileStore(self.db, self.in_flight)
        self.lifecycle = LifecycleStore(self.db, self.in_flight)
        self.invitations = InvitationStore(self.db, self.in_flight)
        self.replies = ReplyStore(self.db, self.in_flight)
        self.moderation = ModerationStore(self.db, self.in_flight)
        self.e2e = E2eStore(self.db, self.in_flight)
        self.reactions = ReactionStore(self.db, self.in_flight)
        self.changes = ChangeStore(self.db, self.in_flight)
        self.notifications = NotificationStore(self.db, self.in_flight, notification_ttl_days)
        self.push = PushStore(self.db, self.in_flight)

    async def ping(self) -> None:
        """Succeed if the database answers; DatabaseUnavailable otherwise."""
        with db_errors():
            await self.client.admin.command("ping")

    async def ensure_indexes(self) -> None:
        """Create every index the queries rely on (idempotent)."""
        # Building an index on a large existing collection takes longer than one request may.
        with db_errors(), pymongo.timeout(BULK_TIMEOUT_SECS):
            await self.users.ensure_indexes()
            await self.sessions.ensure_indexes()
            await self.social.ensure_indexes()
            await self.conversations.ensure_indexes()
            await self.privacy.ensure_indexes()
            await self.activity.ensure_indexes()
            await self.files.ensure_indexes()
            await self.moderation.ensure_indexes()
            await self.e2e.ensure_indexes()
            await self.changes.ensure_indexes()
            await self.notifications.ensure_indexes()
            await self.push.ensure_indexes()

    async def drop_database(self) -> None:
        """Remove all data of this database (tests)."""
        with pymongo.timeout(BULK_TIMEOUT_SECS):  # it syncs every collection's removal
            await self.client.drop_database(self.db.name)

    async def close(self, drain_secs: float = 0.0) -> None:
        """Close the client's connections, once the operations under way have ended (waiting
        at most drain_secs for them): closing under them fails them with tracebacks."""
        if drain_secs > 0:
            await self.in_flight.wait_idle(drain_secs)
        await self.client.close()
