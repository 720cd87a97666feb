"""Conversations, memberships and messages collections."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase


class ConversationStore:
    """Conversations, members, messages."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        """Create the indexes the conversation queries rely on."""
