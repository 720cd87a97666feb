"""Site roles and moderation (PROTOCOL.md section 8): roles, suspensions, reports and the
audit log.

An actor's role is read from the database at every moderation command (never from a cache):
a role taken away in one process stops working at once in all of them. A suspension revokes
every session of the user through the path a password change takes (end_sessions), so that
its sockets close and its long-polls end in every process on the bus; sign-in checks it
again, and a suspension whose `until` has passed is over by itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId

from chat import shapes
from chat.account import SelfServiceCommands
from chat.commands import Principal, Reply, command
from chat.errors import Conflict, Forbidden, NotFound, ValidationFailed
from chat.lifecycle import GROUP_MODERATORS
from chat.models import User, iso, parse_iso, utcnow
from chat.store import Store
from chat.store.conversations import Conversation
from chat.store.messages import Message
from chat.store.moderation import ROLES, STAFF, Report, StaffView
from chat.validation import (
    ID,
    LIMIT,
    Fields,
    check_id,
    get_limit,
    get_str,
    one_of,
    require_id,
    require_object,
    require_str,
)

SUSPENDED = "suspended"  # session.ended's reason; the socket closes with 4403
REASON_MAX = 500  # characters of a suspension's or report's reason
CONTEXT_MESSAGES = 2  # messages shown before and after a reported one
CLI_ACTOR = "cli"  # the audit log's actor for `chat-server admin`
RESOLUTIONS = ("dismiss", "delete", "suspend")
# The report's status once resolved, by action.
CLOSED_AS = {"dismiss": "dismissed", "delete": "deleted", "suspend": "suspended"}

REASON: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": REASON_MAX + 100}
SUSPENSION = shapes.obj(
    {"reason": {"type": "string"}, "until": shapes.OPTIONAL_TIME, "by": ID, "at": shapes.TIME}
)
STAFF_USER = shapes.obj(
    {
        "id": ID,
        "username": {"type": "string"},
        "role": one_of(*ROLES),
        "suspended": shapes.nullable(SUSPENSION),
        "created_at": shapes.TIME,
    }
)
REPORT = shapes.obj(
    {
        "id": ID,
        "conversation_id": ID,
        "message_id": ID,
        "seq": shapes.SEQ,
        "sender_id": ID,
        "body": {"type": "string", "description": "the text as reported (kept as evidence)"},
        "reporter_id": ID,
        "reason": {"type": "string"},
        "created_at": shapes.TIME,
        "status": one_of("open", *CLOSED_AS.values()),
        "resolved_by": shapes.nullable(ID),
        "resolved_at": shapes.OPTIONAL_TIME,
    }
)
AUDIT_ENTRY = shapes.obj(
    {
        "id": ID,
        "actor_id": {"type": "string", "description": "a user id, or cli"},
        "action": {"type": "string"},
        "target_id": {"type": "string"},
        "at": shapes.TIME,
        "reason": shapes.nullable({"type": "string"}),
    }
)
USER_REPLY = shapes.reply(user=STAFF_USER)
# The names of the users a page mentions, by id.
NAMES: dict[str, Any] = {"type": "object", "additionalProperties": shapes.ref("UserRef")}


class Suspended(Forbidden):
    """Sign-in of a suspended account: 403 with the reason and the end (None: until lifted)."""

    code = "suspended"

    def __init__(self, reason: str, until: datetime | None) -> None:
        end = f"until {iso(until)}" if until is not None else "until a moderator lifts it"
        super().__init__(f"This account is suspended {end}: {reason}")
        self.reason = reason
        self.until = until

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["reason"] = self.reason
        body["error"]["until"] = iso(self.until)
        return body


def check_reason(data: dict[str, Any], *, required: bool = True) -> str | None:
    """A reason: 1 to REASON_MAX characters once trimmed."""
    raw = get_str(data, "reason", required=required)
    if raw is None:
        return None
    reason = raw.strip()
    if not reason or len(reason) > REASON_MAX:
        raise ValidationFailed(f"reason must be 1 to {REASON_MAX} characters.", field="reason")
    return reason


def role_action(role: str) -> str:
    """The audit log's action for giving this role."""
    return "role.revoke" if role == "user" else "role.grant"


async def set_role_by_name(store: Store, username: str, role: str) -> bool:
    """`chat-server admin`: give the user named so this role, logged as the command line's
    act; False when there is no such user. A running server shows the new role to the user
    from its next sign-in (its rights apply at once: roles are read at every command)."""
    found = await store.users.get_login(username)
    if found is None or "@" in username:
        return False
    user, _ = found
    if await store.moderation.set_role(user.id, role) is None:
        return False
    await store.moderation.audit(CLI_ACTOR, role_action(role), user.id, role)
    return True


class ModerationCommands(SelfServiceCommands):
    """admin.* and messages.report; the sign-in check and the site-moderator rule of
    messages.delete."""

    async def _staff(self, principal: Principal, roles: tuple[str, ...] = STAFF) -> StaffView:
        """The caller's account if its role is among `roles`; Forbidden otherwise."""
        me = await self.store.moderation.staff_view(principal.user_id)
        if me is None or me.role not in roles:
            raise Forbidden("Only site moderators and administrators may do this.")
        return me

    async def _target(self, user_id: str) -> StaffView:
        target = await self.store.moderation.staff_view(user_id)
        if target is None:
            raise NotFound("No such user.", field="user_id")
        return target

    async def _audit(
        self, actor_id: str, action: str, target_id: str, reason: str | None = None
    ) -> None:
        await self.store.moderation.audit(actor_id, action, target_id, reason)

    # -- hooks of the other domains ----------------------------------------------------------

    async def _suspension_now(self, user_id: str) -> Suspended | None:
        """The error a sign-in gets while the account's suspension lasts, else None."""
        view = await self.store.moderation.staff_view(user_id)
        suspension = view.suspension if view else None
        if suspension is not None and suspension.active(utcnow()):
            return Suspended(suspension.reason, suspension.until)
        return None

    async def check_sign_in(self, user: User) -> None:
        """Suspended (403) while the account's suspension lasts."""
        # The sign-in's reply has the role as stored: a role given on the command line (in
        # another process) reaches the cache of hello from here on.
        self.known_users.forget(user.id)
        refused = await self._suspension_now(user.id)
        if refused is not None:
            raise refused

    async def _start_session(self, user: User) -> Reply:
        """A session, unless a suspension was recorded while it was being made: suspend_user
        writes the suspension before it revokes the sessions, so a sign-in that read none
        before and whose new session that revocation missed sees it here, and ends it."""
        reply = await super()._start_session(user)
        refused = await self._suspension_now(user.id)
        if refused is not None:
            ended = await self.store.sessions.revoke_all(user.id)
            await self.end_sessions(ended, SUSPENDED)
            raise refused
        return reply

    async def is_site_moderator(self, principal: Principal) -> bool:
        """A site moderator or administrator (read now, not cached)."""
        me = await self.store.moderation.staff_view(principal.user_id)
        return me is not None and me.role in STAFF

    async def message_erased(
        self, principal: Principal, conv: Conversation, before: Message
    ) -> None:
        """A deletion by the site-moderator rule (neither the author nor a group owner or
        admin) goes into the audit log."""
        member = conv.member(principal.user_id)
        if before.sender_id == principal.user_id:
            return
        if conv.kind == "group" and member is not None and member.role in GROUP_MODERATORS:
            return
        await self._audit(principal.user_id, "message.delete", before.id)

    # -- roles --------------------------------------------------------------------------------

    async def set_site_role(self, actor_id: str, user_id: str, role: str) -> StaffView:
        """Give the user this role and log it (the API's and the command line's path)."""
        view = await self.store.moderation.set_role(user_id, role)
        if view is None:
            raise NotFound("No such user.", field="user_id")
        self.known_users.forget(user_id)  # its `me` shows the role
        await self._audit(actor_id, role_action(role), user_id, role)
        return view

    @command(
        "admin.users.search",
        takes=Fields({"q": {"type": "string"}, "limit": LIMIT}),
        gives=shapes.reply(users=shapes.list_of(STAFF_USER)),
        errors=(403,),
    )
    async def search_users_as_staff(self, principal: Principal, data: Any) -> Reply:
        """Users whose name starts with q, with their role and suspension (moderators,
        administrators)."""
        data = require_object(data)
        await self._staff(principal)
        prefix = (get_str(data, "q", required=False) or "").strip()
        found = await self.store.moderation.search(prefix, get_limit(data, 20))
        now = utcnow()
        return {"users": [u.to_dict(now) for u in found]}

    @command(
        "admin.users.role",
        takes=Fields({"user_id": ID, "role": one_of(*ROLES)}, ("user_id", "role")),
        gives=USER_REPLY,
        errors=(403, 404),
    )
    async def change_role(self, principal: Principal, data: Any) -> Reply:
        """Set a user's site role (administrators only: only they make moderators)."""
        data = require_object(data)
        user_id = require_id(data, "user_id")
        role = require_str(data, "role")
        if role not in ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(ROLES)}.", field="role")
        await self._staff(principal, ("admin",))
        view = await self.set_site_role(principal.user_id, user_id, role)
        return {"user": view.to_dict(utcnow())}

    # -- suspensions ------------------------------------------------------------------------

    async def _may_suspend(self, principal: Principal, user_id: str) -> StaffView:
        """The target, if the caller may suspend it: an administrator anyone but itself, a
        moderator plain users only."""
        me = await self._staff(principal)
        target = await self._target(user_id)
        if target.id == me.id:
            raise Forbidden("You cannot suspend yourself.")
        if me.role != "admin" and target.role != "user":
            raise Forbidden("Only an administrator can suspend a moderator or administrator.")
        return target

    async def suspend_user(
        self, actor_id: str, user_id: str, reason: str, until: datetime | None
    ) -> StaffView:
        """Record the suspension, end every session of the user at once (sockets close with
        4403 after session.ended, long-polls are answered), and log it."""
        view = await self.store.moderation.suspend(user_id, reason, until, actor_id)
        if view is None:
            raise NotFound("No such user.", field="user_id")
        ended = await self.store.sessions.revoke_all(user_id)
        await self.end_sessions(ended, SUSPENDED)
        await self._audit(actor_id, "user.suspend", user_id, reason)
        return view

    @command(
        "admin.users.suspend",
        takes=Fields(
            {
                "user_id": ID,
                "reason": REASON,
                "until": shapes.nullable(
                    {**shapes.TIME, "description": "when it ends (absent or null: when lifted)"}
                ),
            },
            ("user_id", "reason"),
        ),
        gives=USER_REPLY,
        errors=(403, 404),
    )
    async def suspend(self, principal: Principal, data: Any) -> Reply:
        """Suspend a user until `until` or until lifted: every session ends at once and
        sign-in is refused (administrators; moderators for plain users only)."""
        data = require_object(data)
        user_id = require_id(data, "user_id")
        reason = check_reason(data)
        assert reason is not None
        raw_until = get_str(data, "until", required=False)
        until = None
        if raw_until is not None:
            until = parse_iso(raw_until)
            if until is None or until <= utcnow():
                raise ValidationFailed("until must be a time in the future.", field="until")
        await self._may_suspend(principal, user_id)
        view = await self.suspend_user(principal.user_id, user_id, reason, until)
        return {"user": view.to_dict(utcnow())}

    @command(
        "admin.users.unsuspend",
        takes=Fields({"user_id": ID}, ("user_id",)),
        gives=USER_REPLY,
        errors=(403, 404),
    )
    async def unsuspend(self, principal: Principal, data: Any) -> Reply:
        """Lift a user's suspension (whoever may suspend the user may lift it)."""
        user_id = require_id(require_object(data), "user_id")
        await self._may_suspend(principal, user_id)
        view = await self.store.moderation.unsuspend(user_id)
        if view is None:
            raise NotFound("No such user.", field="user_id")
        await self._audit(principal.user_id, "user.unsuspend", user_id)
        return {"user": view.to_dict(utcnow())}

    # -- reports ------------------------------------------------------------------------------

    @command(
        "messages.report",
        status=201,
        takes=Fields(
            {"conversation_id": ID, "message_id": ID, "reason": REASON},
            ("conversation_id", "message_id", "reason"),
        ),
        gives=shapes.reply(report=REPORT),
        errors=(404, 409),
    )
    async def report_message(self, principal: Principal, data: Any) -> Reply:
        """Report a message to the site's moderators (any member who can read it); the
        report keeps its text as evidence."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        message_id = require_id(data, "message_id")
        reason = check_reason(data)
        assert reason is not None
        conv, max_seq = await self.access_conversation(principal, conversation_id, write=False)
        message = await self.store.lifecycle.get(conv.id, message_id)
        if message is None or message.seq > self._visible_seq(conv.id, max_seq):
            raise NotFound("No such message.")
        if message.deleted:
            raise Conflict("This message was deleted.")
        report = await self.store.moderation.create_report(
            conversation_id=conv.id,
            message_id=message.id,
            seq=message.seq,
            sender_id=message.sender_id,
            body=message.body,
            reporter_id=principal.user_id,
            reason=reason,
        )
        return {"report": report.to_dict()}

    async def _report_view(self, report: Report) -> Reply:
        """A report with the message as it is now (None once gone) and its neighbours."""
        conv_id, seq = report.conversation_id, report.seq
        store = self.store.conversations
        before, _ = await store.page_before(conv_id, seq, 0, CONTEXT_MESSAGES)
        after, _ = await store.page_after(
            conv_id, seq, seq + CONTEXT_MESSAGES + 1, CONTEXT_MESSAGES
        )
        current = await self.store.lifecycle.get(conv_id, report.message_id)
        return {
            **report.to_dict(),
            "message": current.to_dict() if current else None,
            "context": [m.to_dict() for m in (*before, *([current] if current else []), *after)],
        }

    @command(
        "admin.reports",
        takes=Fields({"limit": LIMIT}),
        gives=shapes.reply(
            reports=shapes.list_of(
                {
                    "allOf": [
                        REPORT,
                        shapes.obj(
                            {
                                "message": shapes.nullable(shapes.ref("Message")),
                                "context": shapes.list_of(shapes.ref("Message")),
                            }
                        ),
                    ]
                }
            ),
            users=NAMES,
            has_more={"type": "boolean"},
        ),
        errors=(403,),
    )
    async def list_reports(self, principal: Principal, data: Any) -> Reply:
        """Open reports, oldest first, each with the message, a few messages around it and
        the names of the people involved (moderators, administrators)."""
        data = require_object(data)
        await self._staff(principal)
        reports, has_more = await self.store.moderation.open_reports(get_limit(data, 20))
        views = [await self._report_view(r) for r in reports]
        ids = {r.sender_id for r in reports} | {r.reporter_id for r in reports}
        for view in views:
            ids |= {m["sender_id"] for m in view["context"]}
        return {"reports": views, "users": await self._names(ids), "has_more": has_more}

    async def _names(self, ids: set[str]) -> dict[str, Reply]:
        """{id: {id, username}} of the live users among these ids (others are left out)."""
        user_ids = sorted(i for i in ids if ObjectId.is_valid(i))
        users = await self.store.users.get_many(user_ids)
        return {uid: {"id": uid, "username": u.username} for uid, u in users.items()}

    @command(
        "admin.reports.resolve",
        takes=Fields(
            {"report_id": ID, "action": one_of(*RESOLUTIONS), "reason": REASON},
            ("report_id", "action"),
        ),
        gives=shapes.reply(report=REPORT),
        errors=(403, 404, 409),
    )
    async def resolve_report(self, principal: Principal, data: Any) -> Reply:
        """Close an open report: dismiss it, delete the message, or suspend its author (as
        admin.users.suspend allows; the reason defaults to the report's)."""
        data = require_object(data)
        report_id = require_id(data, "report_id")
        action = require_str(data, "action")
        if action not in RESOLUTIONS:
            raise ValidationFailed(
                f"action must be one of {', '.join(RESOLUTIONS)}.", field="action"
            )
        note = check_reason(data, required=False)
        me = await self._staff(principal)
        report = await self.store.moderation.get_report(report_id)
        if report is None:
            raise NotFound("No such report.", field="report_id")
        if action == "suspend":
            await self._may_suspend(principal, report.sender_id)
        closed = await self.store.moderation.close_report(report.id, CLOSED_AS[action], me.id)
        if closed is None:
            raise Conflict("This report is already resolved.")
        if action == "delete":
            await self._erase_reported(principal, report)
        elif action == "suspend":
            await self.suspend_user(me.id, report.sender_id, note or report.reason, None)
        await self._audit(me.id, "report.resolve", report.id, f"{action}: {note or report.reason}")
        return {"report": closed.to_dict()}

    async def _erase_reported(self, principal: Principal, report: Report) -> None:
        """Delete the reported message (wherever it is: the report is the moderator's
        access), logged as a moderator's deletion."""
        conv = await self.load(report.conversation_id)
        message = await self.store.lifecycle.get(report.conversation_id, report.message_id)
        if conv is None or message is None or message.deleted:
            return
        await self.erase_message(principal, conv, message)

    # -- the audit log ------------------------------------------------------------------------

    @command(
        "admin.audit",
        takes=Fields({"before": ID, "limit": LIMIT}),
        gives=shapes.reply(
            entries=shapes.list_of(AUDIT_ENTRY), users=NAMES, has_more={"type": "boolean"}
        ),
        errors=(403,),
    )
    async def audit_log(self, principal: Principal, data: Any) -> Reply:
        """Moderation acts, newest first (before: an entry's id, for the next page);
        moderators and administrators."""
        data = require_object(data)
        await self._staff(principal)
        before = get_str(data, "before", required=False)
        if before is not None:
            check_id(before, "before")
        entries, has_more = await self.store.moderation.audit_page(before, get_limit(data))
        ids = {e["actor_id"] for e in entries} | {e["target_id"] for e in entries}
        return {"entries": entries, "users": await self._names(ids), "has_more": has_more}
