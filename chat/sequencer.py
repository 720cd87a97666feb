"""The order of a conversation's events: per-conversation lines in this process.

Ordering. Each conversation has a *line* in this process while commands on it are in flight:
a lock under which seqs are allocated and group changes are made (one database round trip
each, so sends to different conversations never wait for each other), and a queue of slots
in seq order. A send reserves its slot before it allocates the seq and resolves it once the
message is stored (or failed); events leave the line only from its head. So message.new
reaches every member in seq order even when a later insert finishes first, and history never
shows a message while an earlier one of the same conversation is still being stored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from chat.events import Event
from chat.store.conversations import Conversation

# Idle conversations whose last known state is remembered (it saves two reads per send),
# bounded in count and in members held (a DM's snapshot is small, a full group's holds
# ~1,000 members). 1,024 was too few: 2,500 DMs, each with a message every few seconds, found
# their line parked out nearly every time.
IDLE_LINES_MAX = 20_000
IDLE_MEMBERS_MAX = 200_000


# Who gets which event: one payload for all, or (a message whose attachments' URLs are signed
# per reader) one per recipient.
Delivery = tuple[Iterable[str], Event]


@dataclasses.dataclass(eq=False)
class Slot:
    seq: int  # 0 for a group event, which has no seq but keeps its place in the line
    done: bool = False
    delivery: Delivery | list[Delivery] | None = None
    out: bool = False  # it has left the line: its event, if any, is published
    waiter: asyncio.Future[None] | None = None  # made by whoever awaits its publication


@dataclasses.dataclass(eq=False)
class Line:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0
    # The conversation as of the last change made through this line (version, last_seq,
    # members); saves a read when sends follow each other.
    snapshot: Conversation | None = None
    slots: collections.deque[Slot] = dataclasses.field(default_factory=collections.deque)
    # The member ids of the snapshot's members, as a set, made once per membership (not per
    # send: building 1,000 ids for each message to a full group was 15 % of a send).
    recipients_of: tuple[Any, ...] | None = None
    recipients: frozenset[str] = frozenset()


class Sequencer:
    """Per-conversation lines: serialized allocation, and events published in seq order."""

    def __init__(self, publish: Callable[[Iterable[str], Event], None]) -> None:
        self._lines: dict[str, Line] = {}
        # Idle lines kept for their snapshot (least recently used first), with their size.
        self._idle: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._idle_members = 0
        self._publish = publish

    @contextlib.contextmanager
    def line(self, conversation_id: str) -> Iterator[Line]:
        """The conversation's line for the duration of one command."""
        line = self._lines.get(conversation_id)
        if line is None:
            line = self._lines[conversation_id] = Line()
        self._idle_members -= self._idle.pop(conversation_id, 0)
        line.users += 1
        try:
            yield line
        finally:
            line.users -= 1
            # Every slot is resolved by the command that reserved it, so an unused line is
            # empty; it is kept a while only for its snapshot, within a memory budget.
            if line.users == 0 and not line.slots:
                self._park(conversation_id, line)

    def _park(self, conversation_id: str, line: Line) -> None:
        if line.snapshot is None:
            del self._lines[conversation_id]
            return
        size = len(line.snapshot.members) + 1
        self._idle[conversation_id] = size
        self._idle_members += size
        while self._idle and (
            len(self._idle) > IDLE_LINES_MAX or self._idle_members > IDLE_MEMBERS_MAX
        ):
            oldest, oldest_size = self._idle.popitem(last=False)
            self._idle_members -= oldest_size
            del self._lines[oldest]

    @staticmethod
    def recipients(line: Line, conv: Conversation) -> frozenset[str]:
        """The ids of conv's members (who get its messages), kept on the line while the
        membership is the same object (dataclasses.replace keeps it)."""
        if line.recipients_of is not conv.members:
            line.recipients = frozenset(conv.member_ids)
            line.recipients_of = conv.members
        return line.recipients

    def snapshot(self, conversation_id: str) -> Conversation | None:
        """The conversation as this process last changed it (members, version, last seq), if
        remembered; every write made from it checks it is still current."""
        line = self._lines.get(conversation_id)
        return line.snapshot if line is not None else None

    def heard(self, conversation_id: str, seq: int) -> None:
        """Another process stored a message of the conversation at seq (its message.new
        reached this one): the next seq allocated here follows it, instead of colliding with
        it in the database and trying again (a hint only: the unique index still decides)."""
        line = self._lines.get(conversation_id)
        snapshot = line.snapshot if line is not None else None
        if line is not None and snapshot is not None and snapshot.last_seq < seq:
            line.snapshot = dataclasses.replace(snapshot, last_seq=seq)

    def forget(self, conversation_id: str) -> None:
        """The conversation was changed without its line (an account's erasure renamed a
        member): its next command reads it again."""
        line = self._lines.get(conversation_id)
        if line is not None:
            line.snapshot = None

    def reserve(self, line: Line, seq: int) -> Slot:
        """Hold the place of seq in the line (call under the line's lock, seqs increasing)."""
        slot = Slot(seq)
        line.slots.append(slot)
        return slot

    def resolve(self, line: Line, slot: Slot, delivery: Delivery | list[Delivery] | None) -> None:
        """The slot's outcome (None: nothing to publish); publishes what is now at the head."""
        slot.done = True
        slot.delivery = delivery
        while line.slots and line.slots[0].done:
            head = line.slots.popleft()
            head.out = True
            if isinstance(head.delivery, list):
                for user_ids, event in head.delivery:
                    self._publish(user_ids, event)
            elif head.delivery is not None:
                self._publish(*head.delivery)
            if head.waiter is not None and not head.waiter.done():
                head.waiter.set_result(None)

    async def published(self, slot: Slot) -> None:
        """Return once the resolved slot has left its line (after every earlier one)."""
        if not slot.out:
            if slot.waiter is None:
                slot.waiter = asyncio.get_running_loop().create_future()
            await slot.waiter

    def enqueue(self, line: Line, recipients: list[str], event: Event) -> None:
        """Publish an event after every message allocated before it."""
        self.resolve(line, self.reserve(line, 0), (recipients, event))

    def visible_until(self, conversation_id: str) -> int | None:
        """The highest seq below which no message of the conversation is still being stored
        in this process; None when none is in flight."""
        line = self._lines.get(conversation_id)
        if line is None:
            return None
        pending = [slot.seq for slot in line.slots if not slot.done and slot.seq > 0]
        return min(pending) - 1 if pending else None
