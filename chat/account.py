"""The account's self-service: change the password, list and revoke sessions, delete the
account (its messages stay, shown as a deleted user's)."""

from __future__ import annotations

from typing import Any

from chat import shapes
from chat.accounts import AccountCommands
from chat.commands import Principal, Reply, command
from chat.e2e import E2eCommands
from chat.errors import Forbidden, NotFound, Unauthorized
from chat.groups import GroupCommands
from chat.invitations import InvitationCommands
from chat.messages import MessageCommands
from chat.models import Session, iso
from chat.notifications import NotificationCommands
from chat.privacy import PrivacyCommands
from chat.reactions import ReactionCommands
from chat.realtime import RealtimeCommands
from chat.social import SocialCommands, user_ref
from chat.store.accounts import DELETED_USERNAME
from chat.store.conversations import Conversation
from chat.validation import (
    ID,
    NONEMPTY_TEXT,
    PASSWORD,
    Fields,
    check_id,
    check_password,
    require_object,
    require_password,
    require_str,
)

# Why a session ended, as its session.ended event says (a logout says none).
PASSWORD_CHANGED = "password_changed"
REVOKED = "revoked"
ACCOUNT_DELETED = "account_deleted"


SESSION_VIEW = shapes.obj(
    {
        "id": ID,
        "created_at": shapes.TIME,
        "last_used_at": shapes.TIME,
        "expires_at": shapes.TIME,
        "address": shapes.nullable({"type": "string"}),
        "user_agent": shapes.nullable({"type": "string"}),
        "current": {"type": "boolean"},
    }
)


def session_view(session: Session, current_id: str) -> Reply:
    """A session as its owner's sessions list shows it."""
    return {
        "id": session.id,
        "created_at": iso(session.created_at),
        "last_used_at": iso(session.last_used_at or session.created_at),
        "expires_at": iso(session.expires_at),
        "address": session.address,
        "user_agent": session.user_agent,
        "current": session.id == current_id,
    }


class SelfServiceCommands(
    NotificationCommands,
    PrivacyCommands,
    RealtimeCommands,
    E2eCommands,
    ReactionCommands,
    InvitationCommands,
    MessageCommands,
    GroupCommands,
    SocialCommands,
    AccountCommands,
):
    """account.password, account.sessions, account.sessions.revoke, account.delete. An
    account's erasure reaches every domain, so this mixin sits above all of them."""

    async def _prove_password(self, principal: Principal, password: str) -> None:
        """InvalidCredentials unless `password` is the caller's (counted as a sign-in)."""
        password_hash = await self.store.users.password_hash(principal.user_id)
        if password_hash is None:
            raise Unauthorized("The account no longer exists.")
        await self.check_password(principal.user_id, password, password_hash, "Wrong password.")

    @command(
        "account.password",
        takes=Fields(
            {"current_password": NONEMPTY_TEXT, "new_password": PASSWORD},
            ("current_password", "new_password"),
        ),
        gives=shapes.reply(revoked_sessions={"type": "integer", "minimum": 0}),
        errors=(401, 429),
    )
    async def change_password(self, principal: Principal, data: Any) -> Reply:
        """Replace the password (the current one proves the caller); every other session of
        the account is revoked at once, this one stays."""
        data = require_object(data)
        current = require_password(data, "current_password")
        new = check_password(require_str(data, "new_password"), "new_password")
        await self._prove_password(principal, current)
        new_hash = await self.hasher.hash(new)
        if not await self.store.users.set_password_hash(principal.user_id, new_hash):
            raise Unauthorized("The account no longer exists.")
        others = await self.store.sessions.revoke_all(principal.user_id, keep=principal.session_id)
        await self.end_sessions(others, PASSWORD_CHANGED)
        return {"revoked_sessions": len(others)}

    @command("account.sessions", gives=shapes.reply(sessions=shapes.list_of(SESSION_VIEW)))
    async def list_sessions(self, principal: Principal, data: Any) -> Reply:
        """The account's live sessions, newest first; the caller's marked current."""
        sessions = await self.store.sessions.live_of(principal.user_id)
        return {"sessions": [session_view(s, principal.session_id) for s in sessions]}

    @command(
        "account.sessions.revoke",
        takes=Fields({"session_id": ID}, ("session_id",)),
        gives=shapes.EMPTY,
        errors=(404,),
    )
    async def revoke_session(self, principal: Principal, data: Any) -> Reply:
        """Revoke one of the account's sessions (the caller's own too: a logout); 404 for an
        unknown, ended or someone else's session."""
        session_id = check_id(require_str(require_object(data), "session_id"), "session_id")
        if not await self.store.sessions.revoke(session_id, user_id=principal.user_id):
            raise NotFound("No such session.", field="session_id")
        await self.end_sessions([session_id], REVOKED)
        return {}

    @command(
        "account.delete",
        takes=Fields({"password": NONEMPTY_TEXT}, ("password",)),
        gives=shapes.EMPTY,
        errors=(401, 429),
    )
    async def delete_account(self, principal: Principal, data: Any) -> Reply:
        """Erase the account (the password proves the caller): it leaves its groups, its
        friendships, requests, blocks, settings and sessions are deleted, it is shown as
        DELETED_USERNAME wherever it was a member, its messages stay; its name and email are
        free at once. Every session ends, this one included."""
        password = require_password(require_object(data), "password")
        await self._prove_password(principal, password)
        me = principal.user_id
        # Each step below can be made again (a retry after a 503), up to the tombstone.
        conversations = await self.store.conversations.readable_by(me)
        for conv in conversations:
            if conv.kind == "group" and conv.member(me) is not None:
                await self.remove_member(principal, {"conversation_id": conv.id, "user_id": me})
        await self._erase_social(me)
        await self.store.privacy.erase_user(me)
        await self.store.conversations.mark_user_deleted(me, DELETED_USERNAME)
        for conv in conversations:
            self.sequencer.forget(conv.id)
        others = await self.store.sessions.revoke_all(me, keep=principal.session_id)
        await self.end_sessions(others, ACCOUNT_DELETED)
        await self.store.users.erase(me)
        self.known_users.forget(me)
        ended = await self.store.sessions.delete_all(me)
        await self.end_sessions(ended, ACCOUNT_DELETED)
        return {}

    async def check_dm_send(self, conv: Conversation, sender_id: str) -> None:
        """No message to a deleted account (its DM stays, to be read). A deleted account has
        left its groups, so only a DM is looked at: a group send costs nothing per member."""
        if conv.kind == "dm" and any(m.deleted for m in conv.members if m.user_id != sender_id):
            raise Forbidden("This account was deleted; it cannot receive messages.")
        await super().check_dm_send(conv, sender_id)

    async def _erase_social(self, me: str) -> None:
        """Delete the user's friendships, requests and blocks; the other sides are told as by
        friends.remove and a cancelled or declined request."""
        deleted = await self.store.users.get(me)
        friends, requests, blocks = await self.store.social.erase_user(me)
        for block in blocks:
            self._blocks_changed(block.blocker_id, block.blocked_id)
        self.presence.audience_changed([me, *friends])
        gone = user_ref(deleted) if deleted is not None else {"id": me}
        for friend_id in friends:
            self.publish([friend_id], {"type": "friend.removed", "user": gone})
        for request in requests:
            self._publish_request_ended(
                request, "cancelled" if request.from_id == me else "declined"
            )
