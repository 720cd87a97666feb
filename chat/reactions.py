"""reactions.add and reactions.remove (PROTOCOL.md section 7).

A reaction is a toggle per (message, emoji, user): adding twice is adding once, removing what
is not there changes nothing (and announces nothing). The store applies each as one
conditional update (chat/store/reactions.py), the change takes a number of the conversation's
change counter (chat/changes.py), and message.reactions goes to every member through the
conversation's line, after the messages allocated before it, as message.updated does.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from chat import shapes
from chat.commands import Principal, Reply, command
from chat.e2e import EncryptedConversation
from chat.errors import Blocked, Conflict, ValidationFailed
from chat.lifecycle import LifecycleCommands
from chat.store.messages import Message
from chat.validation import ID, Fields, require_id, require_object, require_str

SHORT_NAME_RE = re.compile(r":[a-z0-9_+\-]{1,48}:")  # :thumbs_up:, :+1:
EMOJI_MAX_CHARS = 32  # the longest ZWJ family sequences are 11 code points; room to spare
ZWJ = "\u200d"
# What extends a grapheme without starting one: marks, variation selectors, skin tones, tags,
# the keycap.
EXTENDERS = re.compile(
    r"[\u0300-\u036f\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\u20e3]"
)
REGIONAL = re.compile(r"[\U0001f1e6-\U0001f1ff]")
EMOJI: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": EMOJI_MAX_CHARS,
    "description": "One grapheme (👍, 🇫🇷, 👩‍💻) or a :short_name: ([a-z0-9_+-], 1-48).",
}


def _is_grapheme(text: str) -> bool:
    """True for one user-perceived character: a base (or a pair of regional indicators, a
    flag) followed only by extenders, possibly joined to more such by zero-width joiners."""
    for part in text.split(ZWJ):
        if not part:
            return False
        base, rest = part[0], part[1:]
        if unicodedata.category(base)[0] in "CZM":  # controls, spaces, lone marks
            return False
        if REGIONAL.fullmatch(base) and rest[:1] and REGIONAL.fullmatch(rest[0]):
            rest = rest[1:]
        if any(not EXTENDERS.fullmatch(c) and unicodedata.category(c) != "Mn" for c in rest):
            return False
    return True


def check_emoji(value: str) -> str:
    """The emoji as stored (NFC), or ValidationFailed naming the field."""
    emoji = unicodedata.normalize("NFC", value)
    if len(emoji) <= EMOJI_MAX_CHARS and (SHORT_NAME_RE.fullmatch(emoji) or _is_grapheme(emoji)):
        return emoji
    raise ValidationFailed(
        "A reaction is one emoji (a single character) or a :short_name:.", field="emoji"
    )


# What both commands take, give and may answer (the OpenAPI document's).
REACTION_SPEC: dict[str, Any] = {
    "takes": Fields(
        {"conversation_id": ID, "message_id": ID, "emoji": EMOJI},
        ("conversation_id", "message_id", "emoji"),
    ),
    "gives": shapes.reply(message=shapes.ref("Message")),
    "errors": (403, 404, 409),
}


class ReactionCommands(LifecycleCommands):
    """reactions.add, reactions.remove; the reactions as each reader sees them."""

    def present(self, message: Message, user_id: str) -> dict[str, Any]:
        """Adds `me` to each reaction: whether this reader is among those who reacted."""
        shown = super().present(message, user_id)
        if message.reactions:
            for view, (_, users) in zip(shown["reactions"], message.reactions, strict=True):
                view["me"] = user_id in users
        return shown

    @command("reactions.add", **REACTION_SPEC)
    async def add_reaction(self, principal: Principal, data: Any) -> Reply:
        """React to a message with one emoji; idempotent; at most 20 distinct emoji per
        message (409 too_many_reactions); message.reactions goes to every member."""
        return await self._react(principal, data, add=True)

    @command("reactions.remove", **REACTION_SPEC)
    async def remove_reaction(self, principal: Principal, data: Any) -> Reply:
        """Take back one's reaction with this emoji; idempotent; message.reactions goes to
        every member when there was one."""
        return await self._react(principal, data, add=False)

    async def _react(self, principal: Principal, data: Any, *, add: bool) -> Reply:
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        message_id = require_id(data, "message_id")
        emoji = check_emoji(require_str(data, "emoji"))
        me = principal.user_id
        conv, message = await self._access_message(principal, conversation_id, message_id)
        if conv.encrypted:  # the emoji would be plaintext beside the ciphertext (docs/e2e.md)
            raise EncryptedConversation(
                "Messages of an encrypted conversation take no reactions: send a message."
            )
        if message.deleted:
            raise Conflict("This message was deleted.")
        if await self._dm_blocked(conv, me) or (
            message.sender_id != me and await self.is_blocked_between(me, message.sender_id)
        ):
            raise Blocked("You cannot react to this user's messages.")
        change = self.store.reactions.add if add else self.store.reactions.remove
        with self.sequencer.line(conv.id) as line:
            async with line.lock, self.change_stamp(conv.id) as number:
                after, changed = await change(conv.id, message.id, emoji, me, number)
                if after is None:  # deleted since it was read
                    raise Conflict("This message was deleted.")
                if changed:
                    self._announce(line, conv, "message.reactions", after)
        return {"message": self.present(after, me)}
