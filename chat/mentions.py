"""Mentions: `@username` in a group message names a member (PROTOCOL.md section 7).

The names are resolved when the message is sent, against the group's members as the send
knows them (the conversation's snapshot holds their usernames: no read), and stored as ids,
`mentions: [user_id]`: members only, in the order first named, never the sender, never a user
a block stands between the sender and (the blocks are read only for a message that names a
member). DMs have no mentions. A message that names nobody costs nothing more to send.

`notify_mentions` is the entry for notifications (PROTOCOL.md section 10): it is awaited once
the message is published to every member, with the message and its mentioned ids.
"""

from __future__ import annotations

import re

from chat.attachments import FileCommands
from chat.store.conversations import Conversation
from chat.store.messages import Message

# An @ that does not follow a word character or another @ (not an e-mail address), then a
# username's characters; a trailing dot ends the sentence, not the name.
MENTION_RE = re.compile(r"(?<![\w@])@([A-Za-z0-9_.\-]+)")
MENTIONS_MAX = 50  # distinct members one message can mention


def mentioned_names(body: str) -> list[str]:
    """The usernames a body names with @, casefolded, first occurrence first, no duplicates."""
    names: dict[str, None] = {}
    for match in MENTION_RE.finditer(body):
        names.setdefault(match.group(1).rstrip(".").casefold(), None)
    return list(names)


class MentionCommands(FileCommands):
    """The mentions of group messages."""

    async def mentions_in(self, conv: Conversation, sender_id: str, body: str) -> tuple[str, ...]:
        """The ids of the members of the group that body names (members only, no duplicates,
        not the sender, none a block stands between the sender and); () outside groups."""
        if conv.kind != "group" or "@" not in body:
            return ()
        names = mentioned_names(body)
        if not names:
            return ()
        by_name = {m.username.casefold(): m.user_id for m in conv.members if not m.deleted}
        ids = [by_name[n] for n in names if n in by_name and by_name[n] != sender_id]
        if not ids:
            return ()
        blocked = await self.blocked_either_way(sender_id)
        return tuple(uid for uid in ids if uid not in blocked)[:MENTIONS_MAX]

    async def notify_mentions(self, message: Message) -> None:
        """Called once a message that mentions members is published (message.mentions holds
        their ids): the hook for notifications, which do nothing here. Keep it quick: the
        sender's reply waits for it."""
