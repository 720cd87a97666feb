"""Plain data the store returns and the service serializes; no database types pass the store."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds, as the contract fixes: 2026-11-20T12:00:00.123Z."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime | None:
    """What iso() wrote, back as an aware UTC datetime; None when it is not such a time."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def utcnow() -> datetime:
    """Now, in UTC, truncated to milliseconds (what BSON dates keep)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def format_friend_code(code: str) -> str:
    """K7QXM2PD -> K7QX-M2PD: the form people read and type."""
    return f"{code[:4]}-{code[4:]}"


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    friend_code: str  # stored without the dash
    created_at: datetime
    last_seen: datetime | None = None
    role: str = "user"  # the site role: user, moderator or admin (chat/moderation.py)

    def public(self) -> dict[str, Any]:
        """What any signed-in user may see of this user."""
        return {
            "id": self.id,
            "username": self.username,
            "last_seen": iso(self.last_seen),
        }

    def private(self) -> dict[str, Any]:
        """What the user itself sees: adds email and friend code."""
        return {
            **self.public(),
            "email": self.email,
            "friend_code": format_friend_code(self.friend_code),
            "created_at": iso(self.created_at),
            "role": self.role,
        }


@dataclasses.dataclass(frozen=True)
class Session:
    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    revoked: bool = False
    # What the sessions list shows (GET /api/account/sessions): the client that signed in,
    # and when and from where the session was last used (recorded at most once a minute).
    last_used_at: datetime | None = None
    address: str | None = None
    user_agent: str | None = None
