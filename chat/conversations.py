"""Conversations: DMs and groups as one kind of thing, who may read and write them, how they are
shown, the list, and the export. Messages are in chat/messages.py, group changes in
chat/groups.py, the order of events in chat/sequencer.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from chat import shapes
from chat.activity import ActivityLog, with_activity
from chat.commands import Principal, Reply, ServiceBase, command
from chat.errors import (
    Blocked,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from chat.models import User, iso, utcnow
from chat.sequencer import Sequencer
from chat.store.conversations import Conversation, ListCursor, Member, Role
from chat.store.messages import Message
from chat.validation import (
    ID,
    LIMIT,
    Fields,
    get_flag,
    get_limit,
    get_str,
    require_id,
    require_object,
)

LIST_PAGE_DEFAULT = 100  # conversations per page of conversations.list


@dataclasses.dataclass(frozen=True)
class ExportPart:
    """One conversation of an export: what to say about it, and the last seq to include."""

    conversation: dict[str, Any]
    conversation_id: str
    max_seq: int
    reader_device: str | None = None  # the reader's device (chat/e2e.py: its envelopes)


def now_member(user: User, role: Role, joined_at: datetime) -> Member:
    """The user as a member of a conversation, from joined_at on."""
    return Member(user_id=user.id, username=user.username, role=role, joined_at=joined_at)


def _parse_cursor(value: str | None) -> ListCursor | None:
    if not value:
        return None
    stamp, _, conversation_id = value.partition("_")
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed("before is not a cursor this server gave.", field="before") from exc
    if not conversation_id.isalnum():
        raise ValidationFailed("before is not a cursor this server gave.", field="before")
    return ListCursor(moment, conversation_id)


class ConversationCommands(ServiceBase):
    """Conversations: access, rendering, the list, DMs, export; the base of the message and
    group commands, which share its lines of order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequencer = Sequencer(self.publish)
        self.activity = ActivityLog(
            self.store.activity.touch_many,
            self.settings.activity_flush_secs,
            self.settings.activity_rewrite_secs,
        )

    # -- state ----------------------------------------------------------------

    async def load(self, conversation_id: str) -> Conversation | None:
        """The conversation as stored, with its current last seq and activity."""
        store = self.store.conversations
        head = None
        if self.sequencer.snapshot(conversation_id) is None:
            # Unknown here (the first message since the start): its newest message is read
            # beside it, not after it.
            conv, head = await asyncio.gather(
                store.get(conversation_id), store.latest_head(conversation_id)
            )
        else:
            conv = await store.get(conversation_id)
        return await self.current(conv, head) if conv is not None else None

    async def current(
        self, conv: Conversation, head: tuple[int, datetime | None] | None = None
    ) -> Conversation:
        """A stored conversation with its last seq and last activity brought up to date: its
        document holds neither (chat/activity.py). They are what this process allocated last
        when it has the conversation's line, else the newest stored message's (one index
        lookup, unless `head` is what it gave)."""
        conv = self.activity.overlay(conv)
        snapshot = self.sequencer.snapshot(conv.id)
        if snapshot is not None:
            seq, when = snapshot.last_seq, snapshot.last_activity_at
        else:
            seq, newest = head or await self.store.conversations.latest_head(conv.id)
            when = newest or conv.last_activity_at
        return with_activity(conv, seq, when)

    def _activity_at(self, conversation_id: str, stored: datetime) -> datetime:
        """The conversation's last activity as this process knows it, `stored` at least."""
        when = self.activity.last_activity(conversation_id, stored)
        snapshot = self.sequencer.snapshot(conversation_id)
        return max(when, snapshot.last_activity_at) if snapshot is not None else when

    async def _ordered_ids(self, user_id: str) -> list[tuple[datetime, str]]:
        """The user's conversations as (last activity, id), newest first: from the documents,
        their activity documents, and what this process knows that they lack."""
        heads = await self.store.conversations.member_heads(user_id)
        stored = await self.store.activity.last_activity_many([cid for cid, _ in heads])
        order = [(self._activity_at(cid, max(at, stored.get(cid, at))), cid) for cid, at in heads]
        order.sort(reverse=True)
        return order

    # -- access ---------------------------------------------------------------

    async def access_conversation(
        self, principal: Principal, conversation_id: str, *, write: bool
    ) -> tuple[Conversation, int]:
        """The conversation and the last seq the caller may read. NotFound unless the caller
        is or was a member; Forbidden for a write by a removed member."""
        conv = await self.load(conversation_id)
        if conv is None:
            raise NotFound("No such conversation.")
        if conv.member(principal.user_id) is not None:
            return conv, conv.last_seq
        former = conv.former_member(principal.user_id)
        if former is None:
            # Same answer as for an id that does not exist: ids cannot be probed.
            raise NotFound("No such conversation.")
        if write:
            raise Forbidden("You are no longer a member of this conversation.")
        return conv, former.until_seq

    async def access_group(self, principal: Principal, conversation_id: str) -> Conversation:
        """The group if the caller is a current member; NotFound/Forbidden otherwise."""
        conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        if conv.kind != "group":
            raise NotFound("No such group.")
        return conv

    def _visible_seq(self, conversation_id: str, max_seq: int) -> int:
        until = self.sequencer.visible_until(conversation_id)
        return max_seq if until is None else min(max_seq, until)

    async def _dm_blocked(self, conv: Conversation, user_id: str) -> bool:
        if conv.kind != "dm":
            return False
        others = [m.user_id for m in conv.members if m.user_id != user_id]
        return bool(others) and await self.is_blocked_between(user_id, others[0])

    async def render(
        self, conv: Conversation, user_id: str, blocked: set[str] | None = None
    ) -> dict[str, Any]:
        """The conversation as this user sees it: with its last message, unread count and the
        members' read pointers, except those of users a block stands between it and (blocked:
        those users, when the caller already knows them)."""
        store = self.store.conversations
        reads = await self.read_pointers(conv)
        read_seq = reads.get(user_id, 0)
        top = self._visible_seq(conv.id, conv.last_seq)
        last, unread, hidden, request = await asyncio.gather(
            store.latest_message(conv.id, top),
            store.count_unread(conv.id, user_id, read_seq, top),
            self._blocked_or(blocked, user_id),
            self.dm_request_for(conv, user_id),  # chat/privacy.py
        )
        if last is not None and last.reply_to is not None:
            last = (await self.with_quotes([last]))[0]
        members = set(conv.member_ids) - hidden
        blocked_dm = conv.kind == "dm" and any(m != user_id for m in set(conv.member_ids) & hidden)
        return {
            **conv.shared_dict(),
            "last_message": self.present(last, user_id) if last else None,
            "unread_count": unread,
            "read_seq": read_seq,
            "request": request,  # a DM request waiting for this user's answer
            "blocked": blocked_dm,  # a DM that a block (either way) closes for now
            # Every current member's read pointer, so that receipts survive a reload;
            # conversation.read events keep them current from there.
            "reads": {uid: seq for uid, seq in reads.items() if uid in members and seq > 0},
        }

    def present(self, message: Message, user_id: str) -> dict[str, Any]:
        """The message as this user is shown it (chat/attachments.py signs its files' URLs)."""
        return message.to_dict()

    def present_for_export(self, message: Message) -> dict[str, Any]:
        """The message as an export shows it (chat/attachments.py adds download paths)."""
        return message.to_dict()

    async def with_quotes(self, messages: Sequence[Message]) -> list[Message]:
        """The messages with what each reply quotes (chat/replies.py fills it in)."""
        return list(messages)

    async def read_pointers(self, conv: Conversation) -> dict[str, int]:
        """Every member's read pointer (user_id -> seq)."""
        reads = dict(conv.reads)  # pointers stored on the document by earlier versions
        for user_id, seq in (await self.store.conversations.read_pointers(conv.id)).items():
            reads[user_id] = max(seq, reads.get(user_id, 0))
        return reads

    async def _blocked_or(self, known: set[str] | None, user_id: str) -> set[str]:
        return known if known is not None else await self.blocked_either_way(user_id)

    async def presence_candidates(self, user_id: str) -> set[str]:
        """Adds the user's DM partners to those who see its presence."""
        partners = await self.store.conversations.dm_partners(user_id)
        return await super().presence_candidates(user_id) | partners

    # -- conversations --------------------------------------------------------

    @command(
        "conversations.list",
        takes=Fields({"limit": LIMIT, "before": {"type": "string"}}),
        gives=shapes.reply(
            conversations=shapes.list_of(shapes.ref("Conversation")),
            has_more={"type": "boolean"},
            next_before=shapes.nullable({"type": "string"}),
        ),
    )
    async def list_conversations(self, principal: Principal, data: Any) -> Reply:
        """The caller's conversations, newest activity first, each with its last message and
        the caller's unread count; `before` (from next_before) pages on."""
        data = require_object(data)
        limit = get_limit(data, default=LIST_PAGE_DEFAULT)
        cursor = _parse_cursor(get_str(data, "before", required=False))
        order = await self._ordered_ids(principal.user_id)
        if cursor is not None:
            order = [h for h in order if h < (cursor.last_activity_at, cursor.conversation_id)]
        found = await self.store.conversations.get_many([cid for _, cid in order[:limit]])
        # Each shown with the time it was ordered by, so that `before` pages on from there.
        at = dict((cid, when) for when, cid in order[:limit])
        page = [
            dataclasses.replace(c, last_activity_at=at[c.id])
            for c in await asyncio.gather(*(self.current(c) for c in found))
        ]
        blocked = await self.blocked_either_way(principal.user_id)  # once for the whole page
        rendered = await asyncio.gather(*(self.render(c, principal.user_id, blocked) for c in page))
        more = len(order) > limit
        last = order[limit - 1] if more else None
        return {
            "conversations": list(rendered),
            "has_more": more,
            "next_before": f"{iso(last[0])}_{last[1]}" if last else None,
        }

    @command(
        "conversations.open_dm",
        takes=Fields({"user_id": ID, "encrypted": {"type": "boolean"}}, ("user_id",)),
        gives=shapes.CONVERSATION,
        errors=(403, 404),
    )
    async def open_dm(self, principal: Principal, data: Any) -> Reply:
        """The one DM between the caller and user_id, created on first use (always 200);
        encrypted: their one end-to-end encrypted DM instead (chat/e2e.py)."""
        data = require_object(data)
        other_id = require_id(data, "user_id")
        encrypted = get_flag(data, "encrypted")
        if other_id == principal.user_id:
            raise ValidationFailed("You cannot open a conversation with yourself.", field="user_id")
        users = await self.store.users.get_many([principal.user_id, other_id])
        if other_id not in users:
            raise NotFound("No such user.", field="user_id")
        if principal.user_id not in users:
            raise NotFound("Your account no longer exists.")
        if await self.is_blocked_between(principal.user_id, other_id):
            raise Blocked("You cannot message this user.", field="user_id")
        await self.check_dm_open(principal.user_id, other_id)  # chat/privacy.py
        now = utcnow()
        conv = await self.store.conversations.open_dm(
            now_member(users[principal.user_id], "member", now),
            now_member(users[other_id], "member", now),
            encrypted=encrypted,
        )
        self.presence.audience_changed((principal.user_id, other_id))  # DM partners see presence
        return {"conversation": await self.render(conv, principal.user_id)}

    # -- export ---------------------------------------------------------------

    async def export_plan(
        self, principal: Principal, conversation_id: str | None
    ) -> tuple[dict[str, Any], list[ExportPart]]:
        """What an export holds: the caller, and each conversation it may read (one, or all)
        with the last seq it may read there. NotFound for a conversation it never belonged to."""
        user = await self.store.users.get(principal.user_id)
        if user is None:
            raise NotFound("Your account no longer exists.")
        if conversation_id is not None:
            convs = [await self.access_conversation(principal, conversation_id, write=False)]
        else:
            convs = []
            for stored in await self.store.conversations.readable_by(principal.user_id):
                conv = await self.current(stored)
                former = conv.former_member(principal.user_id)
                if conv.member(principal.user_id) is not None:
                    convs.append((conv, conv.last_seq))
                elif former is not None:
                    convs.append((conv, former.until_seq))
        parts = []
        for conv, max_seq in convs:
            if conv.member(principal.user_id) is not None:
                about = {**conv.shared_dict(), "member": True}
            else:
                # What it saw while a member, named as it was when it left; who joined, left
                # or renamed the group since is none of its business.
                former = conv.former_member(principal.user_id)
                name = former.name if former is not None else conv.name
                about = {"id": conv.id, "kind": conv.kind, "name": name, "member": False}
            parts.append(ExportPart(about, conv.id, self._visible_seq(conv.id, max_seq)))
        return {"id": user.id, "username": user.username}, parts

    async def export_batches(self, part: ExportPart) -> AsyncIterator[list[dict[str, Any]]]:
        """The part's messages in seq order, in bounded batches of message dicts."""
        async for batch in self.store.conversations.iter_messages(
            part.conversation_id, part.max_seq
        ):
            yield [self.present_for_export(m) for m in await self.with_quotes(batch)]
