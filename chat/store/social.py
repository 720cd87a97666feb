"""Friend requests, friendships and blocks collections."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase


class SocialStore:
    """Friend requests, friendships, blocks."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def ensure_indexes(self) -> None:
        """Create the indexes the social queries rely on."""
