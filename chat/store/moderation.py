"""Site roles, suspensions, reports and the audit log (PROTOCOL.md section 8).

Roles and suspensions live on the user's document (`role`, `suspension`), so that a sign-in
reads them with the account. Reports and audit entries have collections of their own; the
audit log is only ever inserted into (nothing here updates or deletes an entry).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from chat.models import iso, utcnow
from chat.store.accounts import LIVE, prefix_upper_bound
from chat.store.base import Collections, InFlight, object_id, translated

ROLES = ("user", "moderator", "admin")
STAFF = ("moderator", "admin")  # who may see the Admin view, reports and the audit log


def _oid(value: str) -> ObjectId | None:
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None


@dataclasses.dataclass(frozen=True)
class Suspension:
    reason: str
    until: datetime | None  # None: until lifted
    by: str
    at: datetime

    def active(self, now: datetime) -> bool:
        """True unless its end has come (a suspension past `until` is lifted by itself)."""
        return self.until is None or self.until > now

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "until": iso(self.until), "by": self.by, "at": iso(self.at)}


@dataclasses.dataclass(frozen=True)
class StaffView:
    """A user as the Admin view lists it: name, role and suspension."""

    id: str
    username: str
    role: str
    suspension: Suspension | None
    created_at: datetime

    def to_dict(self, now: datetime) -> dict[str, Any]:
        live = self.suspension if self.suspension and self.suspension.active(now) else None
        return {
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "suspended": live.to_dict() if live else None,
            "created_at": iso(self.created_at),
        }


def _suspension(doc: dict[str, Any]) -> Suspension | None:
    raw = doc.get("suspension")
    if not raw:
        return None
    return Suspension(raw["reason"], raw.get("until"), raw["by"], raw["at"])


def _staff_view(doc: dict[str, Any]) -> StaffView:
    return StaffView(
        str(doc["_id"]),
        doc["username"],
        doc.get("role", "user"),
        _suspension(doc),
        doc["created_at"],
    )


@dataclasses.dataclass(frozen=True)
class Report:
    id: str
    conversation_id: str
    message_id: str
    seq: int
    sender_id: str
    body: str  # the reported text, kept as evidence even once the message is deleted
    reporter_id: str
    reason: str
    created_at: datetime
    status: str  # open, dismissed, deleted, suspended
    resolved_by: str | None = None
    resolved_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "body": self.body,
            "reporter_id": self.reporter_id,
            "reason": self.reason,
            "created_at": iso(self.created_at),
            "status": self.status,
            "resolved_by": self.resolved_by,
            "resolved_at": iso(self.resolved_at),
        }


def _report(doc: dict[str, Any]) -> Report:
    return Report(
        str(doc["_id"]),
        doc["conversation_id"],
        doc["message_id"],
        doc["seq"],
        doc["sender_id"],
        doc["body"],
        doc["reporter_id"],
        doc["reason"],
        doc["created_at"],
        doc["status"],
        doc.get("resolved_by"),
        doc.get("resolved_at"),
    )


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(doc["_id"]),
        "actor_id": doc["actor_id"],
        "action": doc["action"],
        "target_id": doc["target_id"],
        "at": iso(doc["at"]),
        "reason": doc.get("reason"),
    }


class ModerationStore(Collections):
    """Roles and suspensions (in users), reports, and the append-only audit log."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._users = db["users"]
        self._reports = db["reports"]
        self._audit = db["audit"]

    async def ensure_indexes(self) -> None:
        """Open reports oldest first; the audit log newest first (its _id is its time)."""
        await self._reports.create_index([("status", ASCENDING), ("_id", ASCENDING)])

    # -- roles and suspensions ---------------------------------------------------------------

    @translated
    async def staff_view(self, user_id: str) -> StaffView | None:
        """The user's name, role and suspension; None when there is no such live account."""
        doc = await self._users.find_one({"_id": object_id(user_id, "user"), **LIVE})
        return _staff_view(doc) if doc else None

    @translated
    async def set_role(self, user_id: str, role: str) -> StaffView | None:
        """Give the user this role; the user as it is now, or None when it does not exist."""
        doc = await self._users.find_one_and_update(
            {"_id": object_id(user_id, "user"), **LIVE},
            {"$set": {"role": role}},
            return_document=ReturnDocument.AFTER,
        )
        return _staff_view(doc) if doc else None

    @translated
    async def suspend(
        self, user_id: str, reason: str, until: datetime | None, by: str
    ) -> StaffView | None:
        """Record the suspension (replacing an earlier one); None when no such account."""
        suspension = {"reason": reason, "until": until, "by": by, "at": utcnow()}
        doc = await self._users.find_one_and_update(
            {"_id": object_id(user_id, "user"), **LIVE},
            {"$set": {"suspension": suspension}},
            return_document=ReturnDocument.AFTER,
        )
        return _staff_view(doc) if doc else None

    @translated
    async def unsuspend(self, user_id: str) -> StaffView | None:
        """Lift the user's suspension (if any); None when no such account."""
        doc = await self._users.find_one_and_update(
            {"_id": object_id(user_id, "user"), **LIVE},
            {"$unset": {"suspension": ""}},
            return_document=ReturnDocument.AFTER,
        )
        return _staff_view(doc) if doc else None

    @translated
    async def search(self, prefix: str, limit: int) -> list[StaffView]:
        """Users whose lower-cased name starts with prefix, in name order (the username
        index's range, as the directory's search)."""
        bounds: dict[str, str] = {"$gte": prefix.lower()}
        upper = prefix_upper_bound(prefix.lower())
        if upper is not None:
            bounds["$lt"] = upper
        cursor = (
            self._users.find({"username_lower": bounds, **LIVE}, {"password_hash": 0})
            .sort("username_lower", ASCENDING)
            .limit(limit)
        )
        return [_staff_view(doc) async for doc in cursor]

    # -- reports -----------------------------------------------------------------------------

    @translated
    async def create_report(
        self,
        *,
        conversation_id: str,
        message_id: str,
        seq: int,
        sender_id: str,
        body: str,
        reporter_id: str,
        reason: str,
    ) -> Report:
        """A new open report, keeping the message's text as it is now."""
        doc = {
            "_id": ObjectId(),
            "conversation_id": conversation_id,
            "message_id": message_id,
            "seq": seq,
            "sender_id": sender_id,
            "body": body,
            "reporter_id": reporter_id,
            "reason": reason,
            "created_at": utcnow(),
            "status": "open",
        }
        await self._reports.insert_one(doc)
        return _report(doc)

    @translated
    async def open_reports(self, limit: int) -> tuple[list[Report], bool]:
        """The oldest open reports (at most limit) and whether more wait."""
        cursor = self._reports.find({"status": "open"}).sort("_id", ASCENDING).limit(limit + 1)
        reports = [_report(doc) async for doc in cursor]
        return reports[:limit], len(reports) > limit

    @translated
    async def get_report(self, report_id: str) -> Report | None:
        oid = _oid(report_id)
        doc = await self._reports.find_one({"_id": oid}) if oid is not None else None
        return _report(doc) if doc else None

    @translated
    async def close_report(self, report_id: str, status: str, by: str) -> Report | None:
        """Close an open report with this outcome; None when it is not open (or unknown):
        two moderators resolving at once cannot both act."""
        oid = _oid(report_id)
        if oid is None:
            return None
        doc = await self._reports.find_one_and_update(
            {"_id": oid, "status": "open"},
            {"$set": {"status": status, "resolved_by": by, "resolved_at": utcnow()}},
            return_document=ReturnDocument.AFTER,
        )
        return _report(doc) if doc else None

    # -- the audit log -------------------------------------------------------------------------

    @translated
    async def audit(self, actor_id: str, action: str, target_id: str, reason: str | None) -> None:
        """Append an entry (only ever inserted: the log is never rewritten)."""
        await self._audit.insert_one(
            {
                "_id": ObjectId(),
                "actor_id": actor_id,
                "action": action,
                "target_id": target_id,
                "at": utcnow(),
                "reason": reason,
            }
        )

    @translated
    async def audit_page(self, before: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Entries newest first, those older than the entry `before` when given; has_more."""
        query: dict[str, Any] = {}
        if before is not None:
            oid = _oid(before)
            if oid is None:
                return [], False
            query["_id"] = {"$lt": oid}
        cursor = self._audit.find(query).sort("_id", DESCENDING).limit(limit + 1)
        entries = [_entry(doc) async for doc in cursor]
        return entries[:limit], len(entries) > limit
