"""Replies: a message may quote an earlier message of its conversation (PROTOCOL.md section 7).

A reply stores a reference to the quoted message, `reply_to: {id, seq, sender_id}`, and no
text of it. The excerpt is read from the quoted message whenever the reply is shown: the
send reads the quoted message anyway (to check it is of the same conversation), so message.new
carries the excerpt at no further cost; history, exports and the conversation list read the
quoted messages of a page in one query on _id (chat/store/replies.py), and only for pages
that hold replies.

Why not store the excerpt in the reply: deleting a message must erase its text everywhere
in the database, and an edit must show everywhere. A stored excerpt would need an update of
every reply on each delete and edit, and a reply stored while its original was being deleted
(the send reads the original, the delete erases it and scrubs the replies, then the reply's
insert lands) would keep the text for ever. Reading at show time has no such race: a deleted
original shows `deleted: true`, with no excerpt, the moment its body is gone.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from typing import Any

from chat.attachments import FileCommands
from chat.errors import ValidationFailed
from chat.store.conversations import Conversation
from chat.store.messages import REPLY_REF_FIELDS, Message
from chat.store.replies import Quoted
from chat.validation import get_str

EXCERPT_MAX_CHARS = 100  # of the quoted body a reply shows (cut at a grapheme boundary)
ELLIPSIS = "…"  # ends an excerpt that was cut

_ZWJ = "\u200d"


def _extends(char: str) -> bool:
    """True for a code point that belongs to the grapheme before it (UAX #29's Extend,
    SpacingMark and ZWJ, emoji modifiers, variation selectors and tags; Hangul medial and final
    jamo): an excerpt is never cut before one."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tags (subdivision flags)
        or 0x1160 <= code <= 0x11FF  # Hangul jungseong and jongseong
    )


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def grapheme_cut(text: str, limit: int) -> int:
    """The largest index <= limit at which text can be cut without splitting a grapheme
    cluster (an emoji sequence joined by ZWJ, a flag, a letter and its combining marks)."""
    if len(text) <= limit:
        return len(text)
    cut = limit
    while cut > 0 and (_extends(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    if cut > 0 and _regional(text[cut]) and _regional(text[cut - 1]):
        run = 0  # flags are pairs of regional indicators: never cut one in half
        while cut - run > 0 and _regional(text[cut - run - 1]):
            run += 1
        if run % 2:
            cut -= 1
    if cut > 0 and text[cut - 1] == "\r" and text[cut] == "\n":
        cut -= 1
    return cut


def excerpt(body: str, limit: int = EXCERPT_MAX_CHARS) -> str:
    """The start of a body as a reply quotes it: at most `limit` characters, cut at a
    grapheme boundary, ending with an ellipsis when cut."""
    if len(body) <= limit:
        return body
    return body[: grapheme_cut(body, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS


def shown_quote(reference: dict[str, Any], quoted: Quoted | None) -> dict[str, Any]:
    """What a reply shows of the message it quotes: its excerpt, or deleted: true (also when
    it is gone altogether)."""
    shown = {k: reference[k] for k in REPLY_REF_FIELDS if k in reference}
    if quoted is None or quoted.deleted:
        shown["deleted"] = True
    else:
        shown["excerpt"] = excerpt(quoted.body)
    return shown


def _is_shown(reference: dict[str, Any]) -> bool:
    return "excerpt" in reference or "deleted" in reference


class ReplyCommands(FileCommands):
    """The reply_to of messages.send, and the quotes of replies wherever messages are shown."""

    async def reply_reference(self, conv: Conversation, data: dict[str, Any]) -> dict[str, Any]:
        """The quote of the message data's reply_to names, as the new reply shows it (one read).
        ValidationFailed (field reply_to) unless it is a message of this conversation that
        its members can see."""
        message_id = get_str(data, "reply_to", required=True) or ""
        found = await self.store.replies.quoted(conv.id, [message_id])
        quoted = found.get(message_id)
        visible = self._visible_seq(conv.id, conv.last_seq)
        if quoted is None or quoted.seq > visible:
            raise ValidationFailed(
                "reply_to is not a message of this conversation.", field="reply_to"
            )
        reference = {"id": quoted.id, "seq": quoted.seq, "sender_id": quoted.sender_id}
        return shown_quote(reference, quoted)

    async def with_quotes(self, messages: Sequence[Message]) -> list[Message]:
        """The messages with each reply's quote filled in: one read per conversation among
        them that has replies (none for a page without replies); a tombstone quotes nothing."""
        wanted: dict[str, set[str]] = {}
        for message in messages:
            ref = message.reply_to
            if ref is not None and not message.deleted and not _is_shown(ref):
                wanted.setdefault(message.conversation_id, set()).add(ref["id"])
        if not wanted:
            return list(messages)
        found: dict[tuple[str, str], Quoted] = {}
        for conversation_id, ids in wanted.items():
            quoted = await self.store.replies.quoted(conversation_id, ids)
            found.update(((conversation_id, k), v) for k, v in quoted.items())
        shown = []
        for message in messages:
            ref = message.reply_to
            if ref is not None and not message.deleted and not _is_shown(ref):
                quote = shown_quote(ref, found.get((message.conversation_id, ref["id"])))
                message = dataclasses.replace(message, reply_to=quote)
            shown.append(message)
        return shown
