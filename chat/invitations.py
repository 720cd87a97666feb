"""Invitations, for example to a game (PROTOCOL.md section 10): a message of kind
"invitation" and its answer.

An invitation is sent as any message is (chat/messages.py's send path: its seq, the group
commit, exactly-once storing and idempotent retries by client_msg_id), with the invitation's
fields on the message; its id is the message's. An answer (accept, decline, the inviter's
cancel) or the expiry is one compare-and-set update of the stored message (chat/store/
invitations.py): the first one wins everywhere, a later one is a 409. Each change goes to every
member as invitation.updated through the conversation's line, behind the message.new of the
invitation itself, as the lifecycle's events do (chat/lifecycle.py).

Expiry: a pending invitation whose expires_at passed is shown as expired whenever it is read
(chat/store/messages.py's invitation_view), so history, exports and the conversation list are
right without any write. The process that stored the invitation also keeps a timer for it, which
writes the expiry and publishes invitation.updated; after a restart that timer is gone, and the
invitation reads as expired all the same (without an event).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

from bson import ObjectId

from chat import shapes
from chat.commands import Principal, Reply, command
from chat.errors import Blocked, Conflict, Forbidden, NotFound, ValidationFailed
from chat.lifecycle import LifecycleCommands
from chat.messages import MessageCommands
from chat.models import utcnow
from chat.store.conversations import Conversation
from chat.store.messages import Message
from chat.store.notifications import NewNotification
from chat.validation import (
    CLIENT_MSG_ID,
    ID,
    Fields,
    check_id,
    get_document,
    get_int,
    get_str,
    integer,
    require_id,
    require_object,
)

TTL_DEFAULT_SECS = 10 * 60
TTL_MIN_SECS = 10  # low enough that a test can watch an expiry
TTL_MAX_SECS = 24 * 3600
GAME_MAX_CHARS = 64
DATA_MAX_BYTES = 4096  # the game's own data, as JSON
ANSWERS = {"accept": "accepted", "decline": "declined", "cancel": "cancelled"}

GAME: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": GAME_MAX_CHARS,
    "description": f"1-{GAME_MAX_CHARS} characters after trimming.",
}
ANSWER_TAKES = Fields({"invitation_id": ID}, ("invitation_id",))
ANSWER_GIVES = shapes.reply(message=shapes.ref("Message"))


class InvitationCommands(LifecycleCommands, MessageCommands):
    """invitations.send, invitations.accept, invitations.decline, invitations.cancel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}
        self._expiring: set[asyncio.Task[None]] = set()

    @command(
        "invitations.send",
        status=201,
        takes=Fields(
            {
                "conversation_id": ID,
                "game": GAME,
                "data": {"type": "object"},
                "ttl_secs": integer(TTL_MIN_SECS, TTL_MAX_SECS),
                "to": shapes.nullable(ID),  # null as absent: any member may answer
                "client_msg_id": CLIENT_MSG_ID,
            },
            ("conversation_id", "game"),
        ),
        gives=ANSWER_GIVES,
        errors=(403, 404, 409),
    )
    async def send_invitation(self, principal: Principal, data: Any) -> Reply:
        """Invite the conversation (or the one member `to`) to a game: a message of kind
        invitation, pending until answered, cancelled or expired (ttl_secs, 10 minutes by
        default)."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        game = (get_str(data, "game", required=True) or "").strip()
        if not game or len(game) > GAME_MAX_CHARS:
            raise ValidationFailed(f"game must be 1-{GAME_MAX_CHARS} characters.", field="game")
        extra = get_document(data, "data", max_bytes=DATA_MAX_BYTES) or {}
        ttl = get_int(data, "ttl_secs", minimum=TTL_MIN_SECS, maximum=TTL_MAX_SECS)
        to = get_str(data, "to", required=False)
        me = principal.user_id
        conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        if to is not None:
            await self._check_invitee(conv, me, check_id(to, "to"))
        invitation_id = str(ObjectId())
        invitation: dict[str, Any] = {
            "id": invitation_id,
            "game": game,
            "from": me,
            "status": "pending",
            "expires_at": utcnow() + timedelta(seconds=ttl or TTL_DEFAULT_SECS),
            "data": extra,
        }
        if to is not None:
            invitation["to"] = to
        send = {"conversation_id": conv.id, "body": f"Invitation: {game}"}
        if data.get("client_msg_id") is not None:
            send["client_msg_id"] = data["client_msg_id"]
        reply = await self.send_message(
            principal, send, {"id": invitation_id, "kind": "invitation", "invitation": invitation}
        )
        stored = reply["message"]
        if stored.get("kind") == "invitation" and stored["id"] == invitation_id:  # not a retry
            self._expire_later(invitation_id, ttl or TTL_DEFAULT_SECS)
            message = await self.store.invitations.get(invitation_id)
            if message is not None:
                await self.notify_invitation(message, "invitation")
        return reply

    async def _check_invitee(self, conv: Conversation, me: str, to: str) -> None:
        """`to` must be another current member, with no block between the two."""
        if to == me or conv.member(to) is None:
            raise ValidationFailed("to must be another member of the conversation.", field="to")
        if await self.is_blocked_between(me, to):
            raise Blocked("You cannot invite this user.")

    @command("invitations.accept", takes=ANSWER_TAKES, gives=ANSWER_GIVES, errors=(403, 404, 409))
    async def accept_invitation(self, principal: Principal, data: Any) -> Reply:
        """Accept a pending invitation (the invited; in a group any member but the inviter
        unless it names one): it gets a match_id, the same for both sides."""
        return await self._answer_invitation(principal, data, "accept")

    @command("invitations.decline", takes=ANSWER_TAKES, gives=ANSWER_GIVES, errors=(403, 404, 409))
    async def decline_invitation(self, principal: Principal, data: Any) -> Reply:
        """Decline a pending invitation (whoever may accept it)."""
        return await self._answer_invitation(principal, data, "decline")

    @command("invitations.cancel", takes=ANSWER_TAKES, gives=ANSWER_GIVES, errors=(403, 404, 409))
    async def cancel_invitation(self, principal: Principal, data: Any) -> Reply:
        """Withdraw a pending invitation (the inviter only)."""
        return await self._answer_invitation(principal, data, "cancel")

    async def _answer_invitation(self, principal: Principal, data: Any, answer: str) -> Reply:
        data = require_object(data)
        invitation_id = require_id(data, "invitation_id")
        me = principal.user_id
        message = await self.store.invitations.get(invitation_id)
        if message is None or message.invitation is None:
            raise NotFound("No such invitation.")
        conv, max_seq = await self.access_conversation(
            principal, message.conversation_id, write=True
        )
        if message.seq > self._visible_seq(conv.id, max_seq):
            raise NotFound("No such invitation.")
        inviter = message.invitation["from"]
        if answer == "cancel":
            if me != inviter:
                raise Forbidden("Only the inviter can cancel an invitation.")
        else:
            if me == inviter:
                raise Forbidden("The inviter cannot answer its own invitation.")
            to = message.invitation.get("to")
            if to is not None and to != me:
                raise Forbidden("This invitation is for another member.")
            if await self.is_blocked_between(me, inviter):
                raise Blocked("You cannot answer this user.")
        status = ANSWERS[answer]
        changes: dict[str, Any] = {"answered_by": me}
        if status == "accepted":
            changes["match_id"] = secrets.token_hex(16)
        changed = await self._settle(conv, invitation_id, status, changes)
        if changed is None:
            await self.expire_invitation(invitation_id)  # its time may be up: then say so
            raise Conflict("This invitation was already answered, cancelled or expired.")
        if answer != "cancel":
            await self.notify_invitation(changed, "invitation.answered")
        return {"message": self.present(changed, me)}

    async def _settle(
        self, conv: Conversation, invitation_id: str, status: str, changes: dict[str, Any]
    ) -> Message | None:
        """Write the change if the invitation is still pending, and queue invitation.updated
        to every member behind the messages before it (holding the line's lock, so that two
        changes reach the members in the order the database applied them)."""
        with self.sequencer.line(conv.id) as line:
            async with line.lock:
                changed = await self.store.invitations.settle(
                    invitation_id, status, utcnow(), changes
                )
                if changed is not None:
                    self._announce(line, conv, "invitation.updated", changed)
        if changed is not None:
            timer = self._expiry_timers.pop(invitation_id, None)
            if timer is not None:
                timer.cancel()
        return changed

    def _expire_later(self, invitation_id: str, ttl_secs: int) -> None:
        """A timer of this process that writes the expiry and tells the members."""

        def fire() -> None:
            self._expiry_timers.pop(invitation_id, None)
            task = asyncio.get_running_loop().create_task(self.expire_invitation(invitation_id))
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)

        loop = asyncio.get_running_loop()
        self._expiry_timers[invitation_id] = loop.call_later(ttl_secs + 0.05, fire)

    async def expire_invitation(self, invitation_id: str) -> None:
        """Mark the invitation expired if it is still pending and its time is up
        (invitation.updated to every member); nothing otherwise."""
        message = await self.store.invitations.get(invitation_id)
        if message is None:
            return
        conv = await self.load(message.conversation_id)
        if conv is not None:
            await self._settle(conv, invitation_id, "expired", {})

    async def close_sends(self) -> None:
        """Shutting down: the expiry timers stop too (the invitations still read as expired
        once their time is up)."""
        for timer in self._expiry_timers.values():
            timer.cancel()
        self._expiry_timers.clear()
        for task in list(self._expiring):
            task.cancel()
        await super().close_sends()

    async def notify_invitation(self, message: Message, kind: str) -> None:
        """The notification centre's part (chat/notifications.py): "invitation" when one is
        sent, for the invited (`to`, else every other member); "invitation.answered" when it
        is accepted or declined, for the inviter."""
        invitation = message.invitation or {}
        inviter = invitation.get("from", message.sender_id)
        if kind == "invitation":
            actor = inviter
            if invitation.get("to"):
                user_ids = [invitation["to"]]
            else:
                conv = await self.store.conversations.get(message.conversation_id)
                user_ids = [u for u in (conv.member_ids if conv else []) if u != inviter]
        else:
            actor, user_ids = invitation.get("answered_by"), [inviter]
        data = {"message_id": message.id, "game": invitation.get("game", "")}
        if kind != "invitation":
            data["status"] = invitation.get("status", "")
        note = NewNotification(
            kind, actor_id=actor, conversation_id=message.conversation_id, data=data
        )
        await self.notify(user_ids, note)
