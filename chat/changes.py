"""messages.changes: what changed in a conversation's history after a change number
(PROTOCOL.md section 7), for a client whose event queue was lost (hello resumed:false) to
bring the history it has loaded up to date without reloading it.

The counter's rule (chat/store/changes.py): every edit, deletion and reaction change takes the
conversation's next number and stamps it on the message in the same write; a page only goes
up to the watermark below which every number taken is written, so a change made concurrently
with a slower one is never stepped over. A message changed twice is listed once, at its last
number, in its current state.
"""

from __future__ import annotations

import contextlib
from typing import Any

from chat import shapes
from chat.attachments import FileCommands
from chat.commands import Principal, Reply, command
from chat.validation import (
    ID,
    LIMIT,
    Fields,
    get_int,
    get_limit,
    integer,
    require_id,
    require_object,
)

# What each stamped change is, as the event that announced it.
CHANGE_EVENTS = {"edited": "message.updated", "deleted": "message.deleted"}
CHANGES_DEFAULT = 100  # changes per page unless limit says otherwise


class ChangeCommands(FileCommands):
    """messages.changes, and the stamp every lifecycle change takes."""

    def change_stamp(self, conversation_id: str) -> contextlib.AbstractAsyncContextManager[int]:
        """The change number to stamp on a message changed inside the block."""
        return self.store.changes.stamp(conversation_id)

    @command(
        "messages.changes",
        takes=Fields(
            {"conversation_id": ID, "since": integer(), "limit": LIMIT}, ("conversation_id",)
        ),
        gives=shapes.reply(
            changes=shapes.list_of(
                shapes.obj(
                    {
                        "message": shapes.ref("Message"),
                        "change": shapes.obj(
                            {
                                "seq": shapes.SEQ,
                                "type": {
                                    "type": "string",
                                    "enum": [
                                        "message.updated",
                                        "message.deleted",
                                        "message.reactions",
                                    ],
                                },
                            }
                        ),
                    }
                )
            ),
            next=shapes.SEQ,
            has_more={"type": "boolean"},
        ),
        errors=(404,),
    )
    async def message_changes(self, principal: Principal, data: Any) -> Reply:
        """The messages edited, deleted or reacted to after change number `since`, oldest
        change first, each once in its current state; `next` is the `since` of the next call.
        Without since: no changes, and `next` is the current number (take it before loading
        history)."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        since = get_int(data, "since")
        limit = get_limit(data, CHANGES_DEFAULT)
        me = principal.user_id
        conv, max_seq = await self.access_conversation(principal, conversation_id, write=False)
        upto = await self.store.changes.watermark(conv.id)
        if since is None or since >= upto:
            return {"changes": [], "next": max(upto, since or 0), "has_more": False}
        visible = self._visible_seq(conv.id, max_seq)
        found = await self.store.changes.changed(conv.id, since, upto, visible, limit + 1)
        has_more = len(found) > limit
        found = found[:limit]
        changes = [
            {
                "message": self.present(m, me),
                "change": {
                    "seq": m.change_seq,
                    "type": CHANGE_EVENTS.get(m.change_type or "", "message.reactions"),
                },
            }
            for m in found
        ]
        return {
            "changes": changes,
            "next": found[-1].change_seq if has_more else upto,
            "has_more": has_more,
        }
