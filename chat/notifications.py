"""The notification centre and the services that send system notifications (PROTOCOL.md
section 10).

A notification is stored for its recipient first, then `notification.new` goes to every tab
of that user with its unread count; `notifications.read` tells the other tabs the new count.
Kinds: friend.request, friend.accepted (chat/social.py), group.added (chat/groups.py),
mention (notify_mentions, awaited by a send), system (a service, by its key). None is made
for or from a user a block stands between it and the actor.

A service key (chat-server service-key create NAME) authenticates only
POST /api/system/notifications: it is no session token, so every other endpoint answers 401.
It is looked up by its SHA-256 on every call (no cache: a revoked key stops at once).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from chat import shapes
from chat.accounts import AccountCommands
from chat.commands import Principal, Reply, command
from chat.errors import NotFound, RateLimited, Unauthorized, ValidationFailed
from chat.limits import AttemptLimiter, Attempts
from chat.models import User, iso
from chat.store.accounts import DELETED_USERNAME
from chat.store.messages import Message
from chat.store.notifications import NewNotification, Notification
from chat.validation import (
    ID,
    LIMIT,
    Fields,
    Schema,
    check_id,
    get_document,
    get_id_list,
    get_limit,
    get_str,
    id_list,
    require_object,
)

KINDS = (
    "friend.request",
    "friend.accepted",
    "group.added",
    "mention",
    "invitation",
    "invitation.answered",
    "system",
)
EXCERPT_CHARS = 140  # of a mentioning message, shown in the list
TITLE_MAX = 200
TEXT_MAX = 2000  # a system notification's body
RECIPIENTS_MAX = 10_000  # user_ids of one system notification
DATA_MAX_BYTES = 4096  # a service's own data, as JSON
ALL_BATCH = 1000  # recipients stored and counted per round, for `all: true`
SERVICE_KEY_BYTES = 32

NOTIFICATION: Schema = shapes.obj(
    {
        "id": ID,
        "kind": {"type": "string", "enum": list(KINDS)},
        "created_at": shapes.TIME,
        "read": {"type": "boolean"},
        "data": {"type": "object"},
    },
    {"actor": shapes.ref("UserRef"), "conversation_id": ID},
)
UNREAD: Schema = {"type": "integer", "minimum": 0}


def new_service_key() -> str:
    """A fresh key, shown once: what the database keeps is its hash."""
    return "svc_" + secrets.token_urlsafe(SERVICE_KEY_BYTES)


def actor_ref(actor_id: str, user: User | None) -> Reply:
    """Who caused a notification: its id and current name (an erased account's as such)."""
    return {"id": actor_id, "username": user.username if user else DELETED_USERNAME}


def _text(data: dict[str, Any], field: str, maximum: int) -> str:
    value = (get_str(data, field, required=True) or "").strip()
    if not 1 <= len(value) <= maximum:
        raise ValidationFailed(f"{field} must be 1-{maximum} characters.", field=field)
    return value


class NotificationCommands(AccountCommands):
    """notifications.list, notifications.read; the notify hook; system notifications."""

    def init_notifications(self) -> None:
        # Per key name; with --redis-url counted by every process (ChatService.share_limits).
        self.service_limiter: Attempts = AttemptLimiter(
            self.settings.service_sends_per_key, self.settings.service_send_window_secs
        )

    # -- making them ------------------------------------------------------------------

    async def notify(self, user_ids: Sequence[str], note: NewNotification) -> None:
        """Store the notification for each user (one insert) and tell each user's tabs; no
        one a block stands between and the actor, nor the actor itself, gets it."""
        recipients = list(dict.fromkeys(user_ids))
        if note.actor_id is not None:
            blocked = await self.blocked_either_way(note.actor_id)
            recipients = [u for u in recipients if u not in blocked and u != note.actor_id]
        if not recipients:
            return
        stored = await self.store.notifications.add(recipients, note)
        counts = await self.store.notifications.unread_counts(recipients)
        actor = await self._actor(note.actor_id)
        for item in stored:
            shown = self._shown(item, actor)
            event = {"type": "notification.new", "notification": shown}
            self.publish([item.user_id], {**event, "unread_count": counts[item.user_id]})
        self.notified([item.user_id for item in stored], note, actor)

    def notified(self, user_ids: Sequence[str], note: NewNotification, actor: Reply | None) -> None:
        """Stored and published for these users: where a push goes out (chat/push.py)."""

    async def notify_mentions(self, message: Message) -> None:
        """A mention notification to each member the message names (one insert for all)."""
        note = NewNotification(
            "mention",
            actor_id=message.sender_id,
            conversation_id=message.conversation_id,
            data={"message_id": message.id, "seq": message.seq, "excerpt": self._excerpt(message)},
        )
        await self.notify(message.mentions, note)

    @staticmethod
    def _excerpt(message: Message) -> str:
        body = " ".join(message.body.split())
        return body if len(body) <= EXCERPT_CHARS else body[: EXCERPT_CHARS - 1] + "…"

    async def _actor(self, actor_id: str | None) -> Reply | None:
        if actor_id is None:
            return None
        return actor_ref(actor_id, await self.known_users.get(actor_id))

    @staticmethod
    def _shown(item: Notification, actor: Reply | None) -> Reply:
        shown: Reply = {
            "id": item.id,
            "kind": item.kind,
            "created_at": iso(item.created_at),
            "read": item.read_at is not None,
            "data": item.data,
        }
        if actor is not None:
            shown["actor"] = actor
        if item.conversation_id is not None:
            shown["conversation_id"] = item.conversation_id
        return shown

    # -- the centre -----------------------------------------------------------------------

    @command(
        "notifications.list",
        takes=Fields({"before": ID, "limit": LIMIT}),
        gives=shapes.obj(
            {
                "notifications": shapes.list_of(NOTIFICATION),
                "unread_count": UNREAD,
                "has_more": {"type": "boolean"},
            }
        ),
    )
    async def list_notifications(self, principal: Principal, data: Any) -> Reply:
        """The caller's notifications, newest first (`before`: a notification id, for the
        next page), with the unread count of all of them."""
        data = require_object(data)
        before = get_str(data, "before", required=False)
        if before is not None:
            check_id(before, "before")
        limit = get_limit(data)
        me = principal.user_id
        items, more = await self.store.notifications.page(me, before, limit)
        counts = await self.store.notifications.unread_counts([me])
        actor_ids = list({i.actor_id for i in items if i.actor_id is not None})
        users = await self.store.users.get_many(actor_ids) if actor_ids else {}
        shown = [
            self._shown(item, actor_ref(item.actor_id, users.get(item.actor_id)))
            if item.actor_id is not None
            else self._shown(item, None)
            for item in items
        ]
        return {"notifications": shown, "unread_count": counts[me], "has_more": more}

    @command(
        "notifications.read",
        takes=Fields({"ids": id_list(), "all": {"type": "boolean"}}),
        gives=shapes.obj({"unread_count": UNREAD}),
    )
    async def read_notifications(self, principal: Principal, data: Any) -> Reply:
        """Mark the caller's notifications `ids` read, or every one with `all: true`;
        notifications.read with the new unread count goes to the caller's tabs."""
        data = require_object(data)
        every = data.get("all")
        if every is not None and not isinstance(every, bool):
            raise ValidationFailed("all must be true or false.", field="all")
        ids = None if every else get_id_list(data, "ids", max_items=1000)
        if ids is None and "ids" in data:
            raise ValidationFailed("Give ids or all: true, not both.", field="ids")
        if not every and not ids:
            raise ValidationFailed("Give ids or all: true.", field="ids")
        me = principal.user_id
        changed = await self.store.notifications.mark_read(me, ids)
        count = (await self.store.notifications.unread_counts([me]))[me]
        if changed:
            self.publish([me], {"type": "notifications.read", "unread_count": count})
        return {"unread_count": count}

    # -- services ---------------------------------------------------------------------------

    async def send_system(self, key: str | None, data: Any) -> Reply:
        """POST /api/system/notifications: a system notification from the service whose key
        this is to user_ids, a group's members or all users; {sent: N}."""
        name = await self.store.notifications.key_named(key) if key else None
        if name is None:
            raise Unauthorized("Not a valid service key.")
        wait = await self.service_limiter.take(name)
        if wait:
            raise RateLimited("Too many notifications from this service.", retry_after_secs=wait)
        data = require_object(data)
        content: dict[str, Any] = {
            "title": _text(data, "title", TITLE_MAX),
            "body": _text(data, "body", TEXT_MAX),
            "service": name,
        }
        extra = get_document(data, "data", max_bytes=DATA_MAX_BYTES)
        if extra is not None:
            content["data"] = extra
        recipients = await self._system_recipients(data)
        note = NewNotification("system", data=content)
        for start in range(0, len(recipients), ALL_BATCH):
            await self.notify(recipients[start : start + ALL_BATCH], note)
        return {"sent": len(recipients)}

    async def _system_recipients(self, data: dict[str, Any]) -> list[str]:
        """Exactly one of user_ids (those that exist), group_id (its members), all: true."""
        given = [f for f in ("user_ids", "group_id", "all") if data.get(f) not in (None, False)]
        if len(given) != 1:
            raise ValidationFailed("Give exactly one of user_ids, group_id, all.", field="user_ids")
        if given == ["all"]:
            if data["all"] is not True:
                raise ValidationFailed("all must be true.", field="all")
            return await self.store.notifications.live_user_ids()
        if given == ["group_id"]:
            group_id = get_str(data, "group_id") or ""
            conv = await self.store.conversations.get(group_id) if group_id.isalnum() else None
            if conv is None or conv.kind != "group":
                raise NotFound("No such group.", field="group_id")
            return [m.user_id for m in conv.members if not m.deleted]
        ids = get_id_list(data, "user_ids", max_items=RECIPIENTS_MAX)
        users = await self.store.users.get_many(ids)
        return [uid for uid in ids if uid in users]
