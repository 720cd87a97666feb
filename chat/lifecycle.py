"""The message lifecycle: messages.edit and messages.delete (PROTOCOL.md section 7).

A change is written to the database first (chat/store/lifecycle.py), then its event goes to
every member through the conversation's line (chat/sequencer.py), behind every message
allocated before it: a member always sees a message's message.new before its
message.updated or message.deleted, in the one ordered queue. The write is made holding the
line's lock, so that two changes of one conversation in this process reach the members in
the order the database applied them.

Nothing a process caches holds a message's body: the line's snapshot and the activity log
hold seqs and times, which neither change alters (a tombstone keeps its seq), and history,
the conversation list's last_message and exports read the messages collection.
"""

from __future__ import annotations

import logging
from typing import Any

from chat import shapes
from chat.changes import ChangeCommands
from chat.commands import Principal, Reply, command
from chat.errors import Blocked, Conflict, DatabaseUnavailable, Forbidden, NotFound
from chat.events import Event
from chat.mentions import MentionCommands
from chat.models import utcnow
from chat.sequencer import Line
from chat.store.conversations import Conversation
from chat.store.messages import Message
from chat.validation import BODY, ID, Fields, check_body, get_str, require_id, require_object

GROUP_MODERATORS = ("owner", "admin")  # group roles that may delete anyone's message

log = logging.getLogger(__name__)


class LifecycleCommands(ChangeCommands, MentionCommands):
    """messages.edit, messages.delete."""

    @command(
        "messages.edit",
        takes=Fields(
            {"conversation_id": ID, "message_id": ID, "body": BODY},
            ("conversation_id", "message_id", "body"),
        ),
        gives=shapes.reply(message=shapes.ref("Message")),
        errors=(403, 404, 409),
    )
    async def edit_message(self, principal: Principal, data: Any) -> Reply:
        """Replace the body of the caller's own message (body rules as for sending), keeping
        its seq; sets edited_at; message.updated goes to every member."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        message_id = require_id(data, "message_id")
        raw_body = get_str(data, "body", required=True) or ""
        me = principal.user_id
        conv, message = await self._access_message(principal, conversation_id, message_id)
        if message.sender_id != me:
            raise Forbidden("Only the author can edit a message.")
        if message.deleted:
            raise Conflict("This message was deleted.")
        body = check_body(raw_body, allow_empty=bool(message.attachments))
        if await self._dm_blocked(conv, me):
            raise Blocked("You cannot message this user.")
        mentions = await self.mentions_in(conv, me, body)  # whom the new text names
        with self.sequencer.line(conv.id) as line:
            async with line.lock, self.change_stamp(conv.id) as change:
                edited = await self.store.lifecycle.edit(
                    conv.id, message.id, me, body, utcnow(), mentions, change
                )
                if edited is None:  # deleted since it was read
                    raise Conflict("This message was deleted.")
                edited = (await self.with_quotes([edited]))[0]  # a reply shows its quote
                self._announce(line, conv, "message.updated", edited)
        return {"message": self.present(edited, me)}

    @command(
        "messages.delete",
        takes=Fields({"conversation_id": ID, "message_id": ID}, ("conversation_id", "message_id")),
        gives=shapes.reply(message=shapes.ref("Message")),
        errors=(403, 404),
    )
    async def delete_message(self, principal: Principal, data: Any) -> Reply:
        """Make the message a tombstone at its seq: its body, attachments and reactions are
        erased from the database and its files deleted; message.deleted goes to every member.
        The author, a group owner or admin, or a site moderator may; deleting a tombstone again
        changes nothing and answers it."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        message_id = require_id(data, "message_id")
        me = principal.user_id
        try:
            conv, message = await self._access_message(principal, conversation_id, message_id)
        except (NotFound, Forbidden):
            found = await self._staff_access(principal, conversation_id, message_id)
            if found is None:
                raise
            conv, message = found
        if not await self._may_delete(principal, conv, message):
            raise Forbidden("Only the author or a group owner or admin can delete this message.")
        if message.deleted:
            return {"message": self.present(message, me)}
        return {"message": self.present(await self.erase_message(principal, conv, message), me)}

    async def erase_message(
        self, principal: Principal, conv: Conversation, message: Message
    ) -> Message:
        """Tombstone the message, tell every member, delete its files; the tombstone. The
        caller checked that principal may (messages.delete, a report's resolution)."""
        me = principal.user_id
        with self.sequencer.line(conv.id) as line:
            async with line.lock, self.change_stamp(conv.id) as change:
                before = await self.store.lifecycle.tombstone(
                    conv.id, message.id, me, utcnow(), change
                )
                if before is None:  # deleted meanwhile, by another request
                    current = await self.store.lifecycle.get(conv.id, message.id)
                    if current is None:
                        raise NotFound("No such message.")
                    return current
                tomb = await self.store.lifecycle.get(conv.id, message.id)
                if tomb is None:
                    raise NotFound("No such message.")
                self._announce(line, conv, "message.deleted", tomb)
        await self.message_erased(principal, conv, before)
        if before.attachments:
            try:
                await self.delete_message_files(before)
            except DatabaseUnavailable:  # the message is erased already: only bytes remain
                log.warning("the files of deleted message %s could not be deleted", before.id)
        return tomb

    async def _access_message(
        self, principal: Principal, conversation_id: str, message_id: str
    ) -> tuple[Conversation, Message]:
        """The conversation and the message, for a change by a current member. NotFound for
        a stranger, a message of another conversation or one not visible yet; Forbidden for a
        removed member (the contract's access rules, as for sending)."""
        conv, max_seq = await self.access_conversation(principal, conversation_id, write=True)
        message = await self.store.lifecycle.get(conv.id, message_id)
        if message is None or message.seq > self._visible_seq(conv.id, max_seq):
            raise NotFound("No such message.")
        return conv, message

    async def _staff_access(
        self, principal: Principal, conversation_id: str, message_id: str
    ) -> tuple[Conversation, Message] | None:
        """A group's message for a site moderator who is not a member of the group (section
        8: site moderators may delete any group message); None for anyone else."""
        if not await self.is_site_moderator(principal):
            return None
        conv = await self.store.conversations.get(conversation_id)
        if conv is None or conv.kind != "group":
            return None
        message = await self.store.lifecycle.get(conv.id, message_id)
        return None if message is None else (conv, message)

    async def _may_delete(self, principal: Principal, conv: Conversation, message: Message) -> bool:
        """The author, a group's owner or admin, or a site moderator."""
        if message.sender_id == principal.user_id:
            return True
        member = conv.member(principal.user_id)
        if conv.kind == "group" and member is not None and member.role in GROUP_MODERATORS:
            return True
        return conv.kind == "group" and await self.is_site_moderator(principal)

    async def is_site_moderator(self, principal: Principal) -> bool:
        """Hook for site roles (PROTOCOL.md section 8: a moderator may delete any group
        message; chat/moderation.py says who is one)."""
        return False

    async def message_erased(
        self, principal: Principal, conv: Conversation, before: Message
    ) -> None:
        """Hook: principal deleted this message (chat/moderation.py logs a moderator's)."""

    def _announce(self, line: Line, conv: Conversation, kind: str, message: Message) -> None:
        """Queue the change's event to every current member behind the messages allocated
        before it (call holding the line's lock). A message with files is shown to each
        member with URLs signed for it: one event each."""
        snapshot = line.snapshot
        current = snapshot if snapshot is not None and snapshot.version >= conv.version else conv
        recipients = self.sequencer.recipients(line, current)
        slot = self.sequencer.reserve(line, 0)
        if message.attachments or message.reactions:  # shown per reader
            self.sequencer.resolve(
                line,
                slot,
                [
                    ((uid,), {"type": kind, "message": self.present(message, uid)})
                    for uid in recipients
                ],
            )
        else:
            event: Event = {"type": kind, "message": message.to_dict()}
            self.sequencer.resolve(line, slot, (recipients, event))
