"""Messages: send (stored durably before anyone sees it, retried safely), history, read
pointers and typing, over the conversations' access rules (chat/conversations.py) and their
lines of order (chat/sequencer.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from chat import shapes
from chat.attachments import MAX_ATTACHMENTS
from chat.batching import GroupCommit
from chat.commands import Principal, Reply, command, retrieve_exception
from chat.config import TYPING_BURST, TYPING_PER_SEC
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
from chat.mentions import MentionCommands
from chat.models import utcnow
from chat.replies import ReplyCommands
from chat.sequencer import Line, Slot
from chat.store.base import Unsent
from chat.store.conversations import Conversation, ReadPointer
from chat.store.messages import Message, SeqTaken
from chat.tasks import cancel_and_wait
from chat.validation import (
    BODY,
    CLIENT_MSG_ID,
    ID,
    LIMIT,
    Fields,
    check_body,
    check_client_msg_id,
    get_id_list,
    get_int,
    get_limit,
    get_str,
    id_list,
    integer,
    require_id,
    require_object,
)

if TYPE_CHECKING:
    from chat.broker.redis_seqs import RedisSeqs  # only with Redis

# Messages inserted by one database write at most (group commit): sends that arrive while a
# write is in flight go together in the next one.
WRITE_BATCH_MAX = 500
REALLOCATE_RETRIES = 20  # seqs lost in a row to other processes before a send gives up
TYPING_INTERVAL_SECS = 2.0  # one typing event per user and conversation per this (clients
#                             repeat it every few seconds while typing; more adds nothing)
TYPING_STATE_MAX = 10_000  # remembered (user, conversation) pairs before stale ones are purged
GENERATED_KEY_PREFIX = "srv-"  # client_msg_id given to a send that brought none
# A message insert whose outcome is unknown (the database did not answer) is tried again
# until the database says whether it holds it: first after this, doubling up to the maximum.
STORE_RETRY_FIRST_SECS = 0.2
STORE_RETRY_MAX_SECS = 5.0


class TypingThrottle:
    """At most one typing event per user and conversation per interval, and a per-user rate
    (rate per second sustained, bursts of burst: --typing-per-sec, --typing-burst)."""

    def __init__(self, rate: float = TYPING_PER_SEC, burst: float = TYPING_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self._last: dict[tuple[str, str], float] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, stamp)

    async def check(self, user_id: str, conversation_id: str) -> bool:
        """allow(), as every throttle answers it (the shared one asks Redis)."""
        return self.allow(user_id, conversation_id)

    def allow(self, user_id: str, conversation_id: str) -> bool:
        """True to forward now; False to drop (already forwarded within the interval);
        RateLimited when the user types in too many conversations at once."""
        now = time.monotonic()
        key = (user_id, conversation_id)
        last = self._last.get(key)
        if last is not None and now - last < TYPING_INTERVAL_SECS:
            return False
        tokens, stamp = self._buckets.get(user_id, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1:
            self._buckets[user_id] = (tokens, now)
            raise RateLimited(
                "Too many typing notifications; slow down.",
                retry_after_secs=(1 - tokens) / self.rate,
            )
        self._buckets[user_id] = (tokens - 1, now)
        self._last[key] = now
        if len(self._last) > TYPING_STATE_MAX:
            self._purge(now)
        return True

    def _purge(self, now: float) -> None:
        self._last = {k: t for k, t in self._last.items() if now - t < TYPING_INTERVAL_SECS}
        full_after = self.burst / self.rate  # a bucket idle this long is full
        self._buckets = {u: b for u, b in self._buckets.items() if now - b[1] < full_after}


class MessageCommands(ReplyCommands, MentionCommands):
    """messages.send, messages.history, conversations.read, typing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.typing_throttle: TypingThrottle = TypingThrottle(
            self.settings.typing_per_sec, self.settings.typing_burst
        )
        # Sends being stored, by (sender, client_msg_id): a retry meanwhile awaits the same
        # outcome instead of storing again; and the tasks that store them.
        self._sends: dict[tuple[str, str], asyncio.Future[Message]] = {}
        # Several processes: the seq counters in Redis (ChatService.start_bus).
        self.shared_seqs: RedisSeqs | None = None
        self._storing: set[asyncio.Task[Message]] = set()
        self._closing = False
        self._writes: GroupCommit[Message, tuple[Message, bool]] = GroupCommit(
            self.store.conversations.insert_messages, WRITE_BATCH_MAX
        )
        self._read_writes: GroupCommit[ReadPointer, bool] = GroupCommit(
            self.store.conversations.advance_reads, WRITE_BATCH_MAX
        )

    @command(
        "messages.send",
        status=201,
        takes=Fields(
            {
                "conversation_id": ID,
                "body": BODY,
                "client_msg_id": CLIENT_MSG_ID,
                "attachments": id_list(MAX_ATTACHMENTS),
                "reply_to": ID,
                "envelopes": shapes.ENVELOPES,  # an encrypted conversation's (chat/e2e.py)
            },
            ("conversation_id",),
            {
                "anyOf": [
                    {"required": ["body"]},
                    {"required": ["attachments"]},
                    {"required": ["envelopes"]},
                ]
            },
        ),
        gives=shapes.reply(message=shapes.ref("Message")),
        errors=(403, 404, 409),
    )
    async def send_message(
        self, principal: Principal, data: Any, extra: dict[str, Any] | None = None
    ) -> Reply:
        """Store the message at the conversation's next seq, publish message.new to every
        member in seq order, then reply; a retried client_msg_id returns the stored message.
        A reply (reply_to) costs one read more (chat/replies.py); a group message naming
        members stores their ids as mentions (chat/mentions.py). extra: Message fields of
        another kind of message (chat/invitations.py), sent the same way."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        file_ids = get_id_list(data, "attachments", max_items=MAX_ATTACHMENTS)
        sealed = "envelopes" in data  # an encrypted conversation's send (chat/e2e.py)
        raw_body = get_str(data, "body", required=not file_ids and not sealed) or ""
        body = check_body(raw_body, allow_empty=bool(file_ids) or sealed)
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
        await self.check_dm_send(conv, me)  # chat/privacy.py: friends-only, requests
        device: str | None = None
        envelopes: tuple[dict[str, Any], ...] = ()
        if sealed or conv.encrypted:
            device, envelopes = await self.seal(principal, conv, data)  # chat/e2e.py
        if self._closing:
            raise DatabaseUnavailable("The server is shutting down; send again shortly.")
        reply_to = None if data.get("reply_to") is None else await self.reply_reference(conv, data)
        mentions = await self.mentions_in(conv, me, body)
        pending = self._sends.get((me, key))
        if pending is not None:  # the same send is still being stored: its outcome is ours
            return await self._answer(await self._outcome(pending), conv, me)
        # The uploads are reserved for this message (a round trip, for messages with files only).
        attachments = await self.claim_attachments(me, conv.id, key, file_ids, conv.encrypted)
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
                    draft = Message(
                        str(ObjectId()), conv.id, 0, me, body, key, utcnow(), attachments,
                        reply_to=reply_to, mentions=mentions,
                        sender_device=device, envelopes=envelopes,
                    )  # fmt: skip
                    if extra:
                        draft = dataclasses.replace(draft, **extra)
                    conv, slot, message = await self._allocate(line, conv, draft)
                # The storing goes on by itself: neither a timeout nor a closed connection
                # abandons a write whose outcome is not known yet.
                recipients = self.sequencer.recipients(line, conv)
                storing = asyncio.get_running_loop().create_task(
                    self._store_and_publish(line, slot, message, recipients)
                )
                self._storing.add(storing)
        except BaseException as exc:
            self._sends.pop((me, key), None)
            if attachments:  # not stored: the uploads may go with another message
                await self.release_attachments(me, key, file_ids)
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
        return await self._answer(await self._outcome(outcome), conv, me)

    async def seal(
        self, principal: Principal, conv: Conversation, data: dict[str, Any]
    ) -> tuple[str | None, tuple[dict[str, Any], ...]]:
        """Hook: the sending device and the checked envelopes of a send to an encrypted
        conversation (chat/e2e.py); here, envelopes are refused."""
        raise ValidationFailed("envelopes are for encrypted conversations.", field="envelopes")

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
        self, line: Line, slot: Slot, message: Message, member_ids: frozenset[str]
    ) -> Message:
        """Insert the message at its seq until the database says whether it holds it (retrying
        while it is unreachable, and at the next seq when another process took this one);
        publish it in seq order; return it once published. A message stored under the same
        key by another send is returned instead, unpublished here."""
        delay = STORE_RETRY_FIRST_SECS
        current: Slot | None = slot
        maybe_stored = False  # an attempt may have been written: only the database can say
        taken = 0
        started = time.perf_counter()
        with self.sequencer.line(message.conversation_id):  # the line outlives the command
            try:
                while True:
                    try:
                        stored, ours = await self._writes.submit(message)
                        break
                    except SeqTaken:  # by another process: a gap here, and the next seq
                        self.sequencer.resolve(line, slot, None)
                        current = None
                        taken += 1
                        if taken > REALLOCATE_RETRIES:
                            raise Conflict("The conversation is too busy; try again.") from None
                        slot, message, member_ids = await self._reallocate(line, message)
                        current = slot
                    except DatabaseUnavailable as exc:
                        if isinstance(exc, Unsent) and not maybe_stored:
                            raise  # never written: the send fails, nothing to find out
                        maybe_stored = True
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, STORE_RETRY_MAX_SECS)
            except BaseException:
                if current is not None:
                    self.sequencer.resolve(line, current, None)  # not stored: a gap in seq
                    self.seq_unused(message)
                raise
            if not ours:  # the key's message was stored by another send, which publishes it
                self.sequencer.resolve(line, slot, None)
                self.seq_unused(message)
                return stored
            if message.reply_to is not None:  # stored by an earlier attempt: shown as sent
                stored = dataclasses.replace(stored, reply_to=message.reply_to)
            self.metrics.message_stored(time.perf_counter() - started)
            self.activity.note(stored.conversation_id, stored.seq, stored.created_at)
            # Each member's URLs are signed for it, its devices' envelopes are its own
            if stored.attachments or stored.sender_device:  # (chat/e2e.py): one event each
                self.sequencer.resolve(line, slot, [
                    ((uid,), self.message_event(stored, uid)) for uid in member_ids
                ])  # fmt: skip
            else:
                event: Event = {"type": "message.new", "message": stored.to_dict()}
                self.sequencer.resolve(line, slot, (member_ids, event))
            await self.sequencer.published(slot)
            self.message_published(stored, member_ids)
            if stored.attachments:
                await self.attachments_stored(stored)
            if stored.mentions:
                await self.notify_mentions(stored)
            return stored

    def message_event(self, message: Message, user_id: str) -> Event:
        """The message.new of one member (chat/e2e.py adds which session is which device)."""
        return {"type": "message.new", "message": self.present(message, user_id)}

    def message_published(self, message: Message, member_ids: frozenset[str]) -> None:
        """Hook: a new message reached its members' queues (chat/push.py pushes DMs)."""

    def seq_unused(self, message: Message) -> None:
        """The message's seq holds nothing (a gap): other processes' later messages of the
        conversation need not wait for it in Redis (chat/broker/redis_queues.py)."""
        if self.shared_queues is not None:
            self.shared_queues.skip(message.conversation_id, message.seq)

    async def _reallocate(
        self, line: Line, message: Message
    ) -> tuple[Slot, Message, frozenset[str]]:
        """The message at the next free seq, after another process took its seq: the
        conversation is read again (that process may have changed it too)."""
        store = self.store.conversations
        async with line.lock:
            fresh = await store.get(message.conversation_id)
            if fresh is None:
                raise NotFound("No such conversation.")
            latest = await store.latest_seq(fresh.id)
            known = line.snapshot.last_seq if line.snapshot is not None else 0
            # The members as read now; the seq after every one taken here or there.
            conv = dataclasses.replace(fresh, last_seq=max(fresh.last_seq, latest, known))
            line.snapshot = None
            conv, slot, message = await self._allocate(line, conv, message)
            return slot, message, self.sequencer.recipients(line, conv)

    async def close_sends(self) -> None:
        """Stop the sends still being stored, and refuse new ones (shutting down; their
        outcome stays unknown)."""
        self._closing = True
        for task in list(self._storing):
            task.cancel()
        for task in list(self._storing):
            with contextlib.suppress(ChatError):
                await cancel_and_wait(task)
        await self._writes.close()
        await self._read_writes.close()
        if self.shared_seqs is not None:
            await self.shared_seqs.close()
        await self.activity.close()

    async def _answer(self, message: Message, conv: Conversation, user_id: str) -> Reply:
        """The reply to a send: the stored message (a retry's too, with what it quotes)."""
        if message.conversation_id != conv.id:
            raise Conflict(
                "client_msg_id was already used for a message in another conversation.",
                field="client_msg_id",
            )
        if message.reply_to is not None:  # a retry answered from the database has no quote
            message = (await self.with_quotes([message]))[0]
        return {"message": self.present(message, user_id)}

    async def _allocate(
        self, line: Line, conv: Conversation, draft: Message
    ) -> tuple[Conversation, Slot, Message]:
        """Take the next seq after the last this process knows, in memory (holding the line's
        lock), or from the counter the processes share (chat/broker/redis_seqs.py): the
        conversation as of that seq, whose members are exactly those who get the message, its
        slot in the line, and the message at that seq. The insert is the only database
        write: the unique (conversation_id, seq) index refuses a seq another process took."""
        snapshot = line.snapshot
        current = conv
        if snapshot is not None:  # the newer membership, after the higher of the two seqs
            current = snapshot if snapshot.version >= conv.version else conv
            last_seq = max(snapshot.last_seq, conv.last_seq)
            if current.last_seq != last_seq:
                current = dataclasses.replace(current, last_seq=last_seq)
        if current.member(draft.sender_id) is None:
            line.snapshot = current
            raise Forbidden("You are no longer a member of this conversation.")
        seq = current.last_seq + 1
        if self.shared_seqs is not None:
            seq = await self.shared_seqs.take(current.id, current.last_seq) or seq
        current = dataclasses.replace(current, last_seq=seq, last_activity_at=draft.created_at)
        line.snapshot = current
        slot = self.sequencer.reserve(line, seq)
        return current, slot, dataclasses.replace(draft, seq=seq)

    @command(
        "messages.history",
        takes=Fields(
            {
                "conversation_id": ID,
                "before_seq": integer(minimum=1),
                "after_seq": integer(),
                "around_seq": integer(minimum=1),
                "limit": LIMIT,
            },
            ("conversation_id",),
        ),
        gives=shapes.obj(
            {"messages": shapes.list_of(shapes.ref("Message")), "has_more": {"type": "boolean"}},
            {"has_more_before": {"type": "boolean"}, "has_more_after": {"type": "boolean"}},
        ),
        errors=(404,),
    )
    async def history(self, principal: Principal, data: Any) -> Reply:
        """A page of messages, oldest first: the newest `limit` (default 50), or those before
        before_seq, or those after after_seq; has_more says whether the page could go on.
        around_seq (alone) centres the page on that seq (chat/replies.py's jump to a quote)."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        before = get_int(data, "before_seq", minimum=1)
        after = get_int(data, "after_seq", minimum=0)
        around = get_int(data, "around_seq", minimum=1)
        if around is not None and (before is not None or after is not None):
            raise ValidationFailed(
                "around_seq cannot be combined with before_seq or after_seq.", field="around_seq"
            )
        limit = get_limit(data)
        conv, max_seq = await self.access_conversation(principal, conversation_id, write=False)
        end = self._visible_seq(conv.id, max_seq) + 1  # exclusive
        me = principal.user_id
        if around is not None:
            return await self._page_around(conv.id, around, end, limit, me)
        if before is not None:
            end = min(end, before)
        store = self.store.conversations
        if after is not None:
            messages, has_more = await store.page_after(conv.id, after, end, limit)
        else:
            messages, has_more = await store.page_before(conv.id, end, 0, limit)
        messages = await self.with_quotes(messages)
        return {"messages": [self.present(m, me) for m in messages], "has_more": has_more}

    async def _page_around(
        self, conversation_id: str, around: int, end: int, limit: int, user_id: str
    ) -> Reply:
        """Up to `limit` messages centred on seq `around` (the newest visible one when it is
        later): the message at that seq if any, about half the rest before it, the others
        after; a side that runs short gives its share to the other. has_more_before and
        has_more_after say whether each side goes on (has_more: either)."""
        centre = max(1, min(around, end - 1))
        store = self.store.conversations
        older, more_before = await store.page_before(conversation_id, centre, 0, limit)
        newer, more_after = await store.page_after(conversation_id, centre - 1, end, limit)
        n_before = min(len(older), max((limit - 1) // 2, limit - len(newer)))
        n_after = min(len(newer), limit - n_before)
        more_before = more_before or n_before < len(older)
        more_after = more_after or n_after < len(newer)
        page = await self.with_quotes(older[len(older) - n_before :] + newer[:n_after])
        return {
            "messages": [self.present(m, user_id) for m in page],
            "has_more": more_before or more_after,
            "has_more_before": more_before,
            "has_more_after": more_after,
        }

    @command(
        "conversations.read",
        takes=Fields({"conversation_id": ID, "seq": integer()}, ("conversation_id", "seq")),
        gives=shapes.reply(conversation_id=ID, seq=shapes.SEQ, unread_count=shapes.SEQ),
        errors=(403, 404),
    )
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
        # Concurrent pointer moves (every member watching a busy group) share a bulk write.
        moved = seq > conv.reads.get(me, 0) and await self._read_writes.submit(
            ReadPointer(conv.id, me, seq)
        )
        current = seq if moved else max(seq, (await self.read_pointers(conv)).get(me, 0))
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

    @command(
        "typing",
        takes=Fields({"conversation_id": ID}, ("conversation_id",)),
        gives=shapes.reply(forwarded={"type": "boolean"}),
        errors=(403, 404, 429),
    )
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
        if not await self.typing_throttle.check(me, conv.id):
            return {"forwarded": False}
        event: Event = {"type": "typing", "conversation_id": conv.id, "user_id": me}
        hidden = {me} if conv.kind == "dm" else {me} | await self.blocked_either_way(me)
        self.publish([uid for uid in conv.member_ids if uid not in hidden], event)
        return {"forwarded": True}
