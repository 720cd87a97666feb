"""Conversations: DMs and groups, messages stored before delivered, history, read state.

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
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from bson import ObjectId

from chat.commands import Principal, Reply, ServiceBase, command, retrieve_exception
from chat.errors import (
    Blocked,
    ChatError,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from chat.events import Event
from chat.models import User, iso, utcnow
from chat.store.conversations import Conversation, ListCursor, Member, Message, Role
from chat.validation import (
    check_body,
    check_client_msg_id,
    check_group_name,
    get_id_list,
    get_int,
    get_limit,
    get_str,
    require_id,
    require_object,
    require_str,
)

ALLOCATE_RETRIES = 20  # compare-and-set attempts; only another server process makes one fail
GROUP_CHANGE_RETRIES = 20
LIST_PAGE_DEFAULT = 100  # conversations per page of conversations.list
TYPING_INTERVAL_SECS = 2.0  # one typing event per user and conversation per this (clients
#                             repeat it every few seconds while typing; more adds nothing)
TYPING_RATE_PER_SEC = 2.0  # forwarded typing events per user across conversations, sustained
TYPING_BURST = 10.0
TYPING_STATE_MAX = 10_000  # remembered (user, conversation) pairs before stale ones are purged
# Idle conversations whose last known state is remembered (it saves a read per send), bounded
# in count and in members held (a full group's snapshot is ~1,000 members).
IDLE_LINES_MAX = 1024
IDLE_MEMBERS_MAX = 100_000
GENERATED_KEY_PREFIX = "srv-"  # client_msg_id given to a send that brought none
# A message insert whose outcome is unknown (the database did not answer) is tried again
# until the database says whether it holds it: first after this, doubling up to the maximum.
STORE_RETRY_FIRST_SECS = 0.2
STORE_RETRY_MAX_SECS = 5.0


class GroupFull(ChatError):
    """The group would exceed the configured maximum size."""

    code = "group_full"
    status = 413


@dataclasses.dataclass(eq=False)
class _Slot:
    seq: int  # 0 for a group event, which has no seq but keeps its place in the line
    done: bool = False
    delivery: tuple[list[str], Event] | None = None
    out: bool = False  # it has left the line: its event, if any, is published
    waiter: asyncio.Future[None] | None = None  # made by whoever awaits its publication


@dataclasses.dataclass(eq=False)
class _Line:
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0
    # The conversation as of the last change made through this line (version, last_seq,
    # members); saves a read when sends follow each other.
    snapshot: Conversation | None = None
    slots: collections.deque[_Slot] = dataclasses.field(default_factory=collections.deque)


class Sequencer:
    """Per-conversation lines: serialized allocation, and events published in seq order."""

    def __init__(self, publish: Callable[[Iterable[str], Event], None]) -> None:
        self._lines: dict[str, _Line] = {}
        # Idle lines kept for their snapshot (least recently used first), with their size.
        self._idle: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._idle_members = 0
        self._publish = publish

    @contextlib.contextmanager
    def line(self, conversation_id: str) -> Iterator[_Line]:
        """The conversation's line for the duration of one command."""
        line = self._lines.get(conversation_id)
        if line is None:
            line = self._lines[conversation_id] = _Line()
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

    def _park(self, conversation_id: str, line: _Line) -> None:
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

    def snapshot(self, conversation_id: str) -> Conversation | None:
        """The conversation as this process last changed it (members, version, last seq), if
        remembered; every write made from it checks it is still current."""
        line = self._lines.get(conversation_id)
        return line.snapshot if line is not None else None

    def reserve(self, line: _Line, seq: int) -> _Slot:
        """Hold the place of seq in the line (call under the line's lock, seqs increasing)."""
        slot = _Slot(seq)
        line.slots.append(slot)
        return slot

    def resolve(self, line: _Line, slot: _Slot, delivery: tuple[list[str], Event] | None) -> None:
        """The slot's outcome (None: nothing to publish); publishes what is now at the head."""
        slot.done = True
        slot.delivery = delivery
        while line.slots and line.slots[0].done:
            head = line.slots.popleft()
            head.out = True
            if head.delivery is not None:
                self._publish(*head.delivery)
            if head.waiter is not None and not head.waiter.done():
                head.waiter.set_result(None)

    async def published(self, slot: _Slot) -> None:
        """Return once the resolved slot has left its line (after every earlier one)."""
        if not slot.out:
            if slot.waiter is None:
                slot.waiter = asyncio.get_running_loop().create_future()
            await slot.waiter

    def enqueue(self, line: _Line, recipients: list[str], event: Event) -> None:
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


class TypingThrottle:
    """At most one typing event per user and conversation per interval, and a per-user rate."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, stamp)

    def allow(self, user_id: str, conversation_id: str) -> bool:
        """True to forward now; False to drop (already forwarded within the interval);
        RateLimited when the user types in too many conversations at once."""
        now = time.monotonic()
        key = (user_id, conversation_id)
        last = self._last.get(key)
        if last is not None and now - last < TYPING_INTERVAL_SECS:
            return False
        tokens, stamp = self._buckets.get(user_id, (TYPING_BURST, now))
        tokens = min(TYPING_BURST, tokens + (now - stamp) * TYPING_RATE_PER_SEC)
        if tokens < 1:
            self._buckets[user_id] = (tokens, now)
            raise RateLimited(
                "Too many typing notifications; slow down.",
                retry_after_secs=(1 - tokens) / TYPING_RATE_PER_SEC,
            )
        self._buckets[user_id] = (tokens - 1, now)
        self._last[key] = now
        if len(self._last) > TYPING_STATE_MAX:
            self._purge(now)
        return True

    def _purge(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t < TYPING_INTERVAL_SECS}
        full_after = TYPING_BURST / TYPING_RATE_PER_SEC  # a bucket idle this long is full
        self._buckets = {u: b for u, b in self._buckets.items() if now - b[1] < full_after}


@dataclasses.dataclass(frozen=True)
class ExportPart:
    """One conversation of an export: what to say about it, and the last seq to include."""

    conversation: dict[str, Any]
    conversation_id: str
    max_seq: int


@dataclasses.dataclass(frozen=True)
class _GroupChange:
    members: list[Member]
    name: str | None = None
    removed: list[Member] = dataclasses.field(default_factory=list)
    readded: list[str] = dataclasses.field(default_factory=list)


def _now_member(user: User, role: Role, joined_at: datetime) -> Member:
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
    """Conversations, messages, groups, read pointers, typing, export."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequencer = Sequencer(self.publish)
        self.typing_throttle = TypingThrottle()
        # Sends being stored, by (sender, client_msg_id): a retry meanwhile awaits the same
        # outcome instead of storing again; and the tasks that store them.
        self._sends: dict[tuple[str, str], asyncio.Future[Message]] = {}
        self._storing: set[asyncio.Task[Message]] = set()
        self._closing = False

    # -- access ---------------------------------------------------------------

    async def access_conversation(
        self, principal: Principal, conversation_id: str, *, write: bool
    ) -> tuple[Conversation, int]:
        """The conversation and the last seq the caller may read. NotFound unless the caller
        is or was a member; Forbidden for a write by a removed member."""
        conv = await self.store.conversations.get(conversation_id)
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
        read_seq = conv.reads.get(user_id, 0)
        top = self._visible_seq(conv.id, conv.last_seq)
        last, unread, hidden = await asyncio.gather(
            store.latest_message(conv.id, top),
            store.count_unread(conv.id, user_id, read_seq, top),
            self._blocked_or(blocked, user_id),
        )
        members = set(conv.member_ids) - hidden
        return {
            **conv.shared_dict(),
            "last_message": last.to_dict() if last else None,
            "unread_count": unread,
            "read_seq": read_seq,
            # Every current member's read pointer, so that receipts survive a reload;
            # conversation.read events keep them current from there.
            "reads": {uid: seq for uid, seq in conv.reads.items() if uid in members and seq > 0},
        }

    async def _blocked_or(self, known: set[str] | None, user_id: str) -> set[str]:
        return known if known is not None else await self.blocked_either_way(user_id)

    async def presence_candidates(self, user_id: str) -> set[str]:
        """Adds the user's DM partners to those who see its presence."""
        partners = await self.store.conversations.dm_partners(user_id)
        return await super().presence_candidates(user_id) | partners

    # -- conversations --------------------------------------------------------

    @command("conversations.list")
    async def list_conversations(self, principal: Principal, data: Any) -> Reply:
        """The caller's conversations, newest activity first, each with its last message and
        the caller's unread count; `before` (from next_before) pages on."""
        data = require_object(data)
        limit = get_limit(data, default=LIST_PAGE_DEFAULT)
        cursor = _parse_cursor(get_str(data, "before", required=False))
        found = await self.store.conversations.list_for_member(principal.user_id, limit + 1, cursor)
        page = found[:limit]
        blocked = await self.blocked_either_way(principal.user_id)  # once for the whole page
        rendered = await asyncio.gather(*(self.render(c, principal.user_id, blocked) for c in page))
        last = page[-1] if page else None
        return {
            "conversations": list(rendered),
            "has_more": len(found) > limit,
            "next_before": f"{iso(last.last_activity_at)}_{last.id}"
            if last and len(found) > limit
            else None,
        }

    @command("conversations.open_dm")
    async def open_dm(self, principal: Principal, data: Any) -> Reply:
        """The one DM between the caller and user_id, created on first use (always 200)."""
        data = require_object(data)
        other_id = require_id(data, "user_id")
        if other_id == principal.user_id:
            raise ValidationFailed("You cannot open a conversation with yourself.", field="user_id")
        users = await self.store.users.get_many([principal.user_id, other_id])
        if other_id not in users:
            raise NotFound("No such user.", field="user_id")
        if principal.user_id not in users:
            raise NotFound("Your account no longer exists.")
        if await self.is_blocked_between(principal.user_id, other_id):
            raise Blocked("You cannot message this user.", field="user_id")
        now = utcnow()
        conv = await self.store.conversations.open_dm(
            _now_member(users[principal.user_id], "member", now),
            _now_member(users[other_id], "member", now),
        )
        return {"conversation": await self.render(conv, principal.user_id)}

    # -- messages -------------------------------------------------------------

    @command("messages.send", status=201)
    async def send_message(self, principal: Principal, data: Any) -> Reply:
        """Store the message at the conversation's next seq, publish message.new to every
        member in seq order, then reply; a retried client_msg_id returns the stored message."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        body = check_body(require_str(data, "body"))
        key = get_str(data, "client_msg_id", required=False)
        if key is None:
            key = GENERATED_KEY_PREFIX + secrets.token_hex(12)
        else:
            check_client_msg_id(key)
        me = principal.user_id
        conv = self.sequencer.snapshot(conversation_id)  # allocation re-checks it
        if conv is None or conv.member(me) is None:
            conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        if await self._dm_blocked(conv, me):
            raise Blocked("You cannot message this user.")
        if self._closing:
            raise DatabaseUnavailable("The server is shutting down; send again shortly.")
        pending = self._sends.get((me, key))
        if pending is not None:  # the same send is still being stored: its outcome is ours
            return self._retried(await self._outcome(pending), conv)
        # No lookup of client_msg_id first: the unique (sender, client_msg_id) index makes the
        # insert of a later retry fail, and the stored message is returned then. That retry
        # costs a seq (a gap, which the contract allows) but a first send, by far the common
        # case, saves a database round trip.
        outcome: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(retrieve_exception)
        self._sends[(me, key)] = outcome
        try:
            with self.sequencer.line(conv.id) as line:
                async with line.lock:
                    conv, slot, created_at = await self._allocate(line, conv, me)
                message = Message(str(ObjectId()), conv.id, slot.seq, me, body, key, created_at)
                # The storing goes on by itself: neither a timeout nor a closed connection
                # abandons a write whose outcome is not known yet.
                storing = asyncio.get_running_loop().create_task(
                    self._store_and_publish(line, slot, message, conv.member_ids)
                )
                self._storing.add(storing)
        except BaseException as exc:
            self._sends.pop((me, key), None)
            if isinstance(exc, asyncio.CancelledError):
                outcome.cancel()
            elif not outcome.done():
                outcome.set_exception(exc)
            raise

        def settle(task: asyncio.Task[Message]) -> None:
            self._storing.discard(task)
            if self._sends.get((me, key)) is outcome:
                del self._sends[(me, key)]
            if outcome.done():
                return
            if task.cancelled():
                outcome.cancel()
            elif (error := task.exception()) is not None:
                outcome.set_exception(error)
            else:
                outcome.set_result(task.result())

        storing.add_done_callback(settle)
        return self._retried(await self._outcome(outcome), conv)

    async def _outcome(self, outcome: asyncio.Future[Message]) -> Message:
        """The stored and published message, or DatabaseUnavailable once the database timeout
        passed with the outcome still unknown (the storing goes on; a retry is safe)."""
        unknown = DatabaseUnavailable(
            "The database did not confirm the message in time. Retry with the same "
            "client_msg_id: the message is stored at most once."
        )
        try:
            return await asyncio.wait_for(
                asyncio.shield(outcome), self.settings.db_timeout_ms / 1000
            )
        except TimeoutError:  # still unknown: the storing goes on, a retry finds out
            raise unknown from None
        except asyncio.CancelledError:
            if outcome.cancelled():  # the attempt was stopped (shutting down)
                raise unknown from None
            raise  # this command itself was cancelled

    async def _store_and_publish(
        self, line: _Line, slot: _Slot, message: Message, member_ids: list[str]
    ) -> Message:
        """Insert the message at its seq until the database says whether it holds it (retrying
        while it is unreachable); publish it in seq order; return it once published. A message
        stored under the same key by another send is returned instead, unpublished here."""
        delay = STORE_RETRY_FIRST_SECS
        with self.sequencer.line(message.conversation_id):  # the line outlives the command
            try:
                while True:
                    try:
                        stored, ours = await self.store.conversations.insert_message(message)
                        break
                    except DatabaseUnavailable:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, STORE_RETRY_MAX_SECS)
            except BaseException:
                self.sequencer.resolve(line, slot, None)  # not stored: a gap in seq
                raise
            if not ours:  # the key's message was stored by another send, which publishes it
                self.sequencer.resolve(line, slot, None)
                return stored
            event: Event = {"type": "message.new", "message": stored.to_dict()}
            self.sequencer.resolve(line, slot, (member_ids, event))
            await self.sequencer.published(slot)
            return stored

    async def close_sends(self) -> None:
        """Stop the sends still being stored, and refuse new ones (shutting down; their
        outcome stays unknown)."""
        self._closing = True
        for task in list(self._storing):
            task.cancel()
        for task in list(self._storing):
            with contextlib.suppress(asyncio.CancelledError, ChatError):
                await task

    @staticmethod
    def _retried(message: Message, conv: Conversation) -> Reply:
        if message.conversation_id != conv.id:
            raise Conflict(
                "client_msg_id was already used for a message in another conversation.",
                field="client_msg_id",
            )
        return {"message": message.to_dict()}

    async def _allocate(
        self, line: _Line, conv: Conversation, sender_id: str
    ) -> tuple[Conversation, _Slot, datetime]:
        """Take the next seq (holding the line's lock); the conversation as of that seq, whose
        members are exactly those who get the message."""
        store = self.store.conversations
        snapshot = line.snapshot
        current = snapshot if snapshot is not None and snapshot.version >= conv.version else conv
        fresh = current is conv
        for _ in range(ALLOCATE_RETRIES):
            if current.member(sender_id) is None:
                if not fresh:  # an old guess of this process: the database decides
                    current, fresh = await self._reread(conv.id), True
                    continue
                line.snapshot = current
                raise Forbidden("You are no longer a member of this conversation.")
            # Reserved before the write: once the database holds the new last_seq, history
            # must already know this seq is in flight.
            slot = self.sequencer.reserve(line, current.last_seq + 1)
            try:
                when = await store.allocate_seq(current)
            except BaseException:
                line.snapshot = None  # the write may have happened: re-read next time
                self.sequencer.resolve(line, slot, None)
                raise
            if when is not None:
                current = dataclasses.replace(
                    current, last_seq=current.last_seq + 1, last_activity_at=when
                )
                line.snapshot = current
                return current, slot, when
            self.sequencer.resolve(line, slot, None)
            current, fresh = await self._reread(conv.id), True
        line.snapshot = None
        raise Conflict("The conversation is too busy right now; try again.")

    async def _reread(self, conversation_id: str) -> Conversation:
        conv = await self.store.conversations.get(conversation_id)
        if conv is None:
            raise NotFound("No such conversation.")
        return conv

    @command("messages.history")
    async def history(self, principal: Principal, data: Any) -> Reply:
        """A page of messages, oldest first: the newest `limit` (default 50), or those before
        before_seq, or those after after_seq; has_more says whether the page could go on."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        before = get_int(data, "before_seq", minimum=1)
        after = get_int(data, "after_seq", minimum=0)
        limit = get_limit(data)
        conv, max_seq = await self.access_conversation(principal, conversation_id, write=False)
        end = self._visible_seq(conv.id, max_seq) + 1  # exclusive
        if before is not None:
            end = min(end, before)
        store = self.store.conversations
        if after is not None:
            messages, has_more = await store.page_after(conv.id, after, end, limit)
        else:
            messages, has_more = await store.page_before(conv.id, end, 0, limit)
        return {"messages": [m.to_dict() for m in messages], "has_more": has_more}

    @command("conversations.read")
    async def mark_read(self, principal: Principal, data: Any) -> Reply:
        """Move the caller's read pointer forward to seq (never back, never past the last
        message); conversation.read goes to every member when it moved, except those a block
        stands between the caller and."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        seq = get_int(data, "seq", minimum=0)
        if seq is None:
            raise ValidationFailed("seq is required.", field="seq")
        me = principal.user_id
        conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        seq = min(seq, conv.last_seq)
        store = self.store.conversations
        moved = seq > 0 and await store.advance_read(conv.id, me, seq)
        current = max(seq, conv.reads.get(me, 0))
        if moved:
            event: Event = {
                "type": "conversation.read",
                "conversation_id": conv.id,
                "user_id": me,
                "seq": seq,
            }
            blocked = await self.blocked_either_way(me)
            self.publish([uid for uid in conv.member_ids if uid not in blocked], event)
        top = self._visible_seq(conv.id, conv.last_seq)
        unread = await store.count_unread(conv.id, me, current, top)
        return {"conversation_id": conv.id, "seq": current, "unread_count": unread}

    @command("typing")
    async def typing(self, principal: Principal, data: Any) -> Reply:
        """Tell the other members the caller is typing (not those a block stands between it
        and); never stored, at most one event per conversation every TYPING_INTERVAL_SECS
        (extra calls are accepted and dropped)."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        me = principal.user_id
        conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        if await self._dm_blocked(conv, me):
            raise Blocked("You cannot message this user.")
        if not self.typing_throttle.allow(me, conv.id):
            return {"forwarded": False}
        event: Event = {"type": "typing", "conversation_id": conv.id, "user_id": me}
        hidden = {me} if conv.kind == "dm" else {me} | await self.blocked_either_way(me)
        self.publish([uid for uid in conv.member_ids if uid not in hidden], event)
        return {"forwarded": True}

    # -- groups ---------------------------------------------------------------

    async def _users_for(self, principal: Principal, user_ids: list[str], field: str) -> list[User]:
        """These users, checked: they exist and no block stands between them and the caller."""
        users = await self.store.users.get_many(user_ids)
        missing = [uid for uid in user_ids if uid not in users]
        if missing:
            raise NotFound(f"No such user: {missing[0]}.", field=field)
        blocked = await self.blocked_either_way(principal.user_id) & set(user_ids)
        if blocked:
            raise Blocked(f"You cannot add user {sorted(blocked)[0]}.", field=field)
        return [users[uid] for uid in user_ids]

    def _check_size(self, size: int, field: str) -> None:
        limit = self.settings.max_group_size
        if size > limit:
            raise GroupFull(f"A group has at most {limit} members.", field=field)

    @command("groups.create", status=201)
    async def create_group(self, principal: Principal, data: Any) -> Reply:
        """A new group named `name` with the caller as owner and member_ids as members;
        group.created goes to every member."""
        data = require_object(data)
        name = check_group_name(require_str(data, "name"))
        member_ids = [
            uid
            for uid in get_id_list(data, "member_ids", max_items=self.settings.max_group_size)
            if uid != principal.user_id
        ]
        self._check_size(1 + len(member_ids), "member_ids")
        others = await self._users_for(principal, member_ids, "member_ids")
        me = await self.store.users.get(principal.user_id)
        if me is None:
            raise NotFound("Your account no longer exists.")
        now = utcnow()
        members = [_now_member(me, "owner", now)] + [_now_member(u, "member", now) for u in others]
        conv = await self.store.conversations.create_group(name, members)
        self.publish(conv.member_ids, {"type": "group.created", "conversation": conv.shared_dict()})
        return {"conversation": await self.render(conv, principal.user_id)}

    @command("groups.get")
    async def get_group(self, principal: Principal, data: Any) -> Reply:
        """The group, for its current members."""
        data = require_object(data)
        conv = await self.access_group(principal, require_id(data, "conversation_id"))
        return {"conversation": await self.render(conv, principal.user_id)}

    async def _change_group(
        self,
        principal: Principal,
        conversation_id: str,
        decide: Callable[[Conversation], _GroupChange | None],
        events: Callable[[Conversation, Conversation, _GroupChange], list[tuple[list[str], Event]]],
    ) -> Conversation:
        """Apply decide's change to the group atomically (re-deciding on a concurrent change);
        its events are published in order with the messages around it."""
        conv = await self.access_group(principal, conversation_id)
        store = self.store.conversations
        with self.sequencer.line(conv.id) as line:
            async with line.lock:
                # This process's last change is the freshest guess; the write checks it.
                current = line.snapshot if line.snapshot is not None else conv
                for attempt in range(GROUP_CHANGE_RETRIES):
                    if attempt:
                        fresh = await store.get(conv.id)
                        if fresh is None:
                            raise NotFound("No such group.")
                        current = fresh
                    if current.member(principal.user_id) is None:
                        raise Forbidden("You are no longer a member of this group.")
                    change = decide(current)
                    if change is None:
                        return current
                    try:
                        new = await store.change_group(
                            current,
                            members=change.members,
                            name=change.name,
                            removed=change.removed,
                            readded=change.readded,
                        )
                    except BaseException:
                        line.snapshot = None
                        raise
                    if new is None:
                        continue
                    line.snapshot = new
                    for recipients, event in events(current, new, change):
                        self.sequencer.enqueue(line, recipients, event)
                    return new
        raise Conflict("The group is changing too fast right now; try again.")

    @staticmethod
    def _require_admin(conv: Conversation, user_id: str, action: str) -> Member:
        member = conv.member(user_id)
        if member is None or member.role not in ("owner", "admin"):
            raise Forbidden(f"Only the owner or an admin can {action}.")
        return member

    @command("groups.update")
    async def update_group(self, principal: Principal, data: Any) -> Reply:
        """Rename the group (owner or admin); group.updated goes to every member."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        name = check_group_name(require_str(data, "name"))

        def decide(conv: Conversation) -> _GroupChange | None:
            self._require_admin(conv, principal.user_id, "rename the group")
            return None if conv.name == name else _GroupChange(list(conv.members), name=name)

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            event = {
                "type": "group.updated",
                "conversation": new.shared_dict(),
                "by": principal.user_id,
            }
            return [(new.member_ids, event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        return {"conversation": await self.render(conv, principal.user_id)}

    @command("groups.add_members")
    async def add_members(self, principal: Principal, data: Any) -> Reply:
        """Add user_ids as members (owner or admin), up to the maximum size;
        group.member_added goes to every member, the new ones included."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        user_ids = get_id_list(data, "user_ids", max_items=self.settings.max_group_size)
        if not user_ids:
            raise ValidationFailed("user_ids must name at least one user.", field="user_ids")
        await self.access_group(principal, conversation_id)  # before revealing anything else
        users = await self._users_for(principal, user_ids, "user_ids")
        now = utcnow()

        def decide(conv: Conversation) -> _GroupChange | None:
            self._require_admin(conv, principal.user_id, "add members")
            new = [u for u in users if conv.member(u.id) is None]
            if not new:
                return None
            self._check_size(len(conv.members) + len(new), "user_ids")
            return _GroupChange(
                list(conv.members) + [_now_member(u, "member", now) for u in new],
                readded=[u.id for u in new if conv.former_member(u.id) is not None],
            )

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            added = [m.user_id for m in new.members if old.member(m.user_id) is None]
            event = {
                "type": "group.member_added",
                "conversation": new.shared_dict(),
                "user_ids": added,
                "by": principal.user_id,
            }
            return [(new.member_ids, event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        return {"conversation": await self.render(conv, principal.user_id)}

    @command("groups.remove_member")
    async def remove_member(self, principal: Principal, data: Any) -> Reply:
        """Remove user_id (owner: anyone; admin: members), or leave when it is the caller.
        A removed member keeps read-only access to what was sent before; if the owner leaves,
        the oldest admin (else the oldest member) becomes owner. group.member_removed goes to
        every remaining member and to the removed one."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        target = require_id(data, "user_id")
        me = principal.user_id

        def decide(conv: Conversation) -> _GroupChange | None:
            victim = conv.member(target)
            if victim is None:
                raise NotFound("That user is not a member of this group.", field="user_id")
            if target != me:
                actor = self._require_admin(conv, me, "remove members")
                if victim.role == "owner" or (victim.role == "admin" and actor.role != "owner"):
                    raise Forbidden("Only the owner can remove an admin; nobody removes the owner.")
            rest = [m for m in conv.members if m.user_id != target]
            if victim.role == "owner" and rest:
                heir = next((m for m in rest if m.role == "admin"), rest[0])
                rest = [dataclasses.replace(m, role="owner") if m is heir else m for m in rest]
            return _GroupChange(rest, removed=[victim])

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            event = {
                "type": "group.member_removed",
                "conversation": new.shared_dict(),
                "user_id": target,
                "by": me,
            }
            return [([*new.member_ids, target], event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        if target == me:  # it can no longer see per-member state: the shape of the event
            return {"conversation": conv.shared_dict()}
        return {"conversation": await self.render(conv, me)}

    @command("groups.set_role")
    async def set_role(self, principal: Principal, data: Any) -> Reply:
        """Promote a member to admin or demote an admin to member (owner only);
        group.updated goes to every member."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        target = require_id(data, "user_id")
        role = require_str(data, "role")
        if role not in ("admin", "member"):
            raise ValidationFailed("role must be 'admin' or 'member'.", field="role")
        me = principal.user_id

        def decide(conv: Conversation) -> _GroupChange | None:
            actor = conv.member(me)
            if actor is None or actor.role != "owner":
                raise Forbidden("Only the owner can change roles.")
            member = conv.member(target)
            if member is None:
                raise NotFound("That user is not a member of this group.", field="user_id")
            if member.role == "owner":
                raise ValidationFailed("The owner's role cannot be changed.", field="user_id")
            if member.role == role:
                return None
            new_role: Role = "admin" if role == "admin" else "member"
            return _GroupChange(
                [dataclasses.replace(m, role=new_role) if m is member else m for m in conv.members]
            )

        def events(
            old: Conversation, new: Conversation, change: _GroupChange
        ) -> list[tuple[list[str], Event]]:
            event = {"type": "group.updated", "conversation": new.shared_dict(), "by": me}
            return [(new.member_ids, event)]

        conv = await self._change_group(principal, conversation_id, decide, events)
        return {"conversation": await self.render(conv, me)}

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
            for conv in await self.store.conversations.readable_by(principal.user_id):
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
            yield [m.to_dict() for m in batch]
