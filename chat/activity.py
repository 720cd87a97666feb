"""The activity of conversations (last seq, last message time), kept in memory and written
to their activity documents (chat/store/activity.py) now and then instead of once per message.

A message's one write is its insert. What is stored about a conversation's activity (a floor
of its last seq, and the time of its last message, by which the conversation list is ordered)
is moved forward by one bulk write every settings.activity_flush_secs, for the conversations
active since the last one, but not more often than every settings.activity_rewrite_secs for
any one conversation: a conversation's first message is stored within seconds, and a busy one
costs one write a minute, not one per message (in a workload of thousands of DMs, each with a
message every few seconds, a write per flush was still about one per message). It is not the
conversation's document: a group's holds its members, and rewriting it rewrote their index
entries too. Meanwhile this process overlays what it knows on what it reads, so its own
answers are exact; another process sees the activity within that minute. After a crash the
floors may be behind: the last seq is also read from the newest stored message, so only a
conversation's place in the list can be stale, until its next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from chat.errors import ChatError
from chat.store.conversations import Conversation
from chat.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# On shutdown, the last flush gets this long (the database may be what is going away).
CLOSE_FLUSH_SECS = 2.0

Activity = tuple[int, datetime]  # (last seq, time of the last message)


def with_activity(conv: Conversation, seq: int, when: datetime) -> Conversation:
    """The conversation with its last seq and last activity at least these (floors only move
    forward); the same object when it already had them."""
    if seq <= conv.last_seq and when <= conv.last_activity_at:
        return conv
    return dataclasses.replace(
        conv,
        last_seq=max(seq, conv.last_seq),
        last_activity_at=max(when, conv.last_activity_at),
    )


class ActivityLog:
    """Conversations' activity not yet on their documents, written in bulk periodically."""

    def __init__(
        self,
        touch_many: Callable[[dict[str, Activity]], Awaitable[None]],
        interval: float,
        rewrite_secs: float,
    ) -> None:
        self._touch_many = touch_many
        self._interval = interval
        self._rewrite_secs = rewrite_secs
        self._pending: dict[str, Activity] = {}
        # When each conversation's document was last written (monotonic), while that was
        # less than rewrite_secs ago: it waits until then.
        self._written: dict[str, float] = {}
        self._writing: dict[str, Activity] = {}  # the batch in flight, still overlaid
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def note(self, conversation_id: str, seq: int, when: datetime) -> None:
        """A message was stored at seq, sent at `when`."""
        self._merge(conversation_id, seq, when)
        if self._flusher is None and not self._closed:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def _merge(self, conversation_id: str, seq: int, when: datetime) -> None:
        old = self._pending.get(conversation_id)
        self._pending[conversation_id] = (
            (max(seq, old[0]), max(when, old[1])) if old else (seq, when)
        )

    def last_activity(self, conversation_id: str, stored: datetime) -> datetime:
        """The conversation's last activity: `stored` (its document's) or a later one known
        here."""
        times = [
            a[1]
            for a in (self._pending.get(conversation_id), self._writing.get(conversation_id))
            if a
        ]
        return max([stored, *times])

    def overlay(self, conv: Conversation) -> Conversation:
        """The conversation with the activity this process knows and its document lacks."""
        known = [a for a in (self._pending.get(conv.id), self._writing.get(conv.id)) if a]
        if not known:
            return conv
        return with_activity(conv, max(a[0] for a in known), max(a[1] for a in known))

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._interval)
            await self.flush()
        finally:
            self._flusher = None
        if self._pending and not self._closed:  # more came while writing, or it failed
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def flush(self, *, everything: bool = False) -> None:
        """Write what is pending and due now (everything: all of it); a failed write is kept
        for the next one."""
        now = time.monotonic()
        horizon = now - self._rewrite_secs
        self._written = {cid: at for cid, at in self._written.items() if at > horizon}
        if everything:
            batch, self._pending = self._pending, {}
        else:
            batch = {c: a for c, a in self._pending.items() if c not in self._written}
            for cid in batch:
                del self._pending[cid]
        if not batch:
            return
        self._writing = batch
        try:
            await self._touch_many(batch)
        except ChatError as exc:  # the database is away: keep it, the next flush retries
            log.warning("conversation activity not written yet: %s", exc)
            for cid, (seq, when) in batch.items():
                self._merge(cid, seq, when)
        except Exception:
            log.exception("writing conversation activity failed")
        else:
            self._written.update(dict.fromkeys(batch, now))
        finally:
            self._writing = {}

    async def close(self) -> None:
        """Stop the periodic flush and write what is left, within CLOSE_FLUSH_SECS."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await cancel_and_wait(flusher)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(everything=True), CLOSE_FLUSH_SECS)
