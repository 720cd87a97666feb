"""Event queues kept in Redis, so that a client resumes or polls on any process (--redis-url).

Redis holds each queue as chat/broker/redis_queue_scripts.py describes, changed by its Lua
scripts, each atomic: a publish appends the event to every queue of its users
and, in the same step, PUBLISHes a nudge with the event and the id it got in each queue on the
channel ``chat:queues``. Every process listens there and pushes the event into its local copy
(a :class:`MirrorQueue`, an :class:`~chat.events.EventQueue` whose ids are the Redis ones) of
the queues whose transports it holds, so the transports (handlers/socket.py, handlers/events.py)
read a queue exactly as without Redis. A nudge that does not follow the local copy's last id
(a subscription lost and back) is a gap: the copy reads the stream from Redis first.

A message.new is held in Redis until the one before it in its conversation is published
(``chat:cs:<conversation>`` the last published seq, ``chat:ch:<conversation>`` those held):
processes allocate seqs from one counter (chat/broker/redis_seqs.py) but each publishes its
own as soon as they are stored, so without this two processes writing to one conversation
delivered its messages out of order. A seq that holds nothing is announced (skip()), one that
never comes holds the later ones HOLD_MS at most.

Everything a process publishes goes to Redis from one task, in order (like the bus). When Redis
cannot take some events, the queues they were meant for are dropped as soon as Redis answers
again, before any later event: their clients start new queues (resumed: false) and read the
state again, as after an overflow. Nothing is ever skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from chat.batching import GroupCommit
from chat.broker.redis import RECONNECT_SECS, connect, run_scripts, subscribe_forever
from chat.broker.redis_presence import MAX_BATCH
from chat.broker.redis_queue_scripts import (
    ACK,
    LOSE,
    OPEN,
    OPEN_ARGS,
    PUSH,
    READ,
    REFRESH,
    RELEASE,
)
from chat.errors import ChatError, RateLimited
from chat.events import (
    EPOCH_BYTES,
    QUEUE_ID_BYTES,
    Event,
    EventQueue,
    QueueRegistry,
)
from chat.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "chat:queues"
TIMEOUT_SECS = 5.0  # a Redis that does not answer within this is unreachable
MAX_REFRESH_SECS = 5.0  # how often the TTLs of attached queues are renewed (at most)
SETTLE_SECS = 2.0  # how long a command's reply waits for its events to be in Redis
MAX_DEBT = 10_000  # targets of lost events remembered; beyond, every queue is dropped
RATE_RETRY_SECS = 5.0
CLOSE = -1  # in a buffer of nudges: the queue closes here
Buffer = list[tuple[int, Event]]  # nudges (event id, event) kept while a copy is read
RELEASE_SECS = 0.5  # how often a process releases the messages held past HOLD_MS
Order = tuple[str, int]  # a message.new's (conversation id, seq)
Outgoing = tuple[Order | None, str, str, list[str]]  # (order, mode, event as JSON, ids)


class QueuesUnavailable(ChatError):
    """Redis, which holds the event queues, cannot be reached: try again later."""

    code = "queues_unavailable"
    status = 503


def _entries(raw: Any) -> list[tuple[int, Event]]:
    """XRANGE's reply as (event id, event)."""
    out = []
    for entry_id, fields in raw:
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append((int(text.split("-", 1)[0]), json.loads(values[b"e"])))
    return out


class MirrorQueue(EventQueue):
    """This process's copy of a queue held in Redis: the transports read it as any queue; its
    acknowledgements also trim the queue in Redis."""

    __slots__ = ("attachments", "shared")

    def __init__(self, *args: Any, shared: RedisQueueRegistry, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = shared
        self.attachments = 0  # Redis's attach count when this copy was made (takeovers)

    def load(self, acked: int, last: int, items: list[tuple[int, Event]]) -> None:
        """Start from Redis's state: everything after `acked` up to `last` is in items."""
        self._acked = acked
        self._last_id = last
        self._events = [item for item in items if item[0] > acked]

    def ack(self, last_event_id: int) -> None:
        before = self._acked
        super().ack(last_event_id)
        if self._acked > before:
            self.shared.ack_later(self.queue_id, self._acked)


class RedisQueueRegistry(QueueRegistry):
    """The registry of a process whose queues live in Redis: its queues are the local copies
    of those its transports use; publishing goes to Redis."""

    def __init__(self, url: str, origin: str, *, max_events: int, grace_secs: float) -> None:
        super().__init__(max_events=max_events, grace_secs=grace_secs)
        self.origin = origin
        self._redis = connect(url, TIMEOUT_SECS)
        self._subscriber = aioredis.from_url(
            url, socket_connect_timeout=TIMEOUT_SECS, health_check_interval=15
        )
        self._scripts = {
            name: self._redis.register_script(text)
            for name, text in (
                ("open", OPEN),
                ("push", PUSH),
                ("lose", LOSE),
                ("ack", ACK),
                ("refresh", REFRESH),
                ("read", READ),
                ("release", RELEASE),
            )
        }
        # Opens made while one is in flight go to Redis in one call (a connect storm).
        self._opens: GroupCommit[list[str | int], Any] = GroupCommit(self._open_many, MAX_BATCH)
        self._refresh_secs = max(0.05, min(MAX_REFRESH_SECS, grace_secs / 3))
        self._ttl_ms = int((grace_secs + 2 * self._refresh_secs) * 1000)
        # What publish() queued, sent in order by one task.
        self._outbox: list[Outgoing] = []
        self._acks: dict[str, int] = {}
        self._refreshes: set[str] = set()
        self._pending = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # Batches taken from the outbox and sent (or failed), counted: a command's events are
        # in the batch after those taken, or in the one being sent; settled() waits for it.
        self._taken = 0
        self._sent = 0
        self._settling: dict[int, asyncio.Future[None]] = {}
        self._failing = False
        # Targets of events Redis did not take: dropped before anything else is sent.
        self._debt: dict[str, set[str]] = {"u": set(), "q": set(), "s": set()}
        # Nudges heard while a queue's copy is being read from Redis (an open, a catch-up), by
        # queue id: one buffer per reader, each given every nudge, so none misses one.
        self._buffers: dict[str, list[Buffer]] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        # Told of each message.new heard here (the sequencer's hint: chat/sequencer.py).
        self.on_message: Callable[[dict[str, Any]], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for nudges and start sending; returns once subscribed."""
        loop = asyncio.get_running_loop()
        for work in (
            self._listen_forever(),
            self._send_forever(),
            self._refresh_forever(),
            self._release_forever(),
        ):
            self._tasks.append(loop.create_task(work))
        await self._subscribed.wait()

    async def close(self) -> None:
        """Send what is waiting (a logout's session.ended), then stop."""
        with contextlib.suppress(TimeoutError):
            if not self._failing:
                await asyncio.wait_for(self._idle.wait(), TIMEOUT_SECS)
        await self._opens.close()
        for task in list(self._tasks):
            await cancel_and_wait(task)
        await self._redis.aclose()
        await self._subscriber.aclose()

    # -- opening ----------------------------------------------------------------------------

    async def open(
        self,
        user_id: str,
        session_id: str,
        queue_id: str | None,
        epoch: str | None,
        cursor: int,
        max_live: int,
    ) -> tuple[EventQueue, bool, int]:
        """Resume the queue from Redis (on whichever process it was), or create one there;
        (queue, resumed, cursor) as RealtimeCommands.open_queue returns them."""
        new_id = secrets.token_urlsafe(QUEUE_ID_BYTES)
        key = queue_id or new_id
        # One open of a queue at a time here: each fills its own buffer of nudges.
        lock = self._opening.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._open_locked(
                    user_id, session_id, queue_id, epoch, cursor, max_live, new_id
                )
        finally:
            if not lock.locked() and self._opening.get(key) is lock:
                del self._opening[key]

    async def _open_locked(self, *request: Any) -> tuple[EventQueue, bool, int]:
        user_id, session_id, queue_id, epoch, cursor, max_live, new_id = request
        buffers = {qid: self._hold(qid) for qid in {new_id, queue_id} if qid}
        try:
            args: list[str | int] = [user_id, session_id, queue_id or "", epoch or ""]
            args += [
                cursor,
                max_live,
                self._ttl_ms,
                new_id,
                secrets.token_urlsafe(EPOCH_BYTES),
                self.origin,
            ]
            try:
                reply = await self._opens.submit(args)
            except (RedisError, OSError) as exc:
                log.warning("event queues: Redis is unreachable (%s)", exc)
                raise QueuesUnavailable(
                    "The event queues cannot be reached now; try again shortly."
                ) from exc
            status, self.epoch = int(reply[0]), reply[1].decode()
            if status == 2:
                raise RateLimited(
                    "Too many event queues open; close some tabs or resume one.",
                    retry_after_secs=RATE_RETRY_SECS,
                )
            resumed = status == 1
            chosen = queue_id if resumed and queue_id else new_id
            mirror = self._mirror(chosen, user_id, session_id)
            mirror.attachments = int(reply[3])
            mirror.load(cursor if resumed else 0, int(reply[2]), _entries(reply[4]))
            return mirror, resumed, cursor if resumed else 0
        finally:
            # What was heard meanwhile goes to the copy now registered: the new one, or (a
            # resume refused, a stale request) the one the client's current transport reads.
            for qid, buffer in buffers.items():
                self._release(qid, buffer)
                queue = self._queues.get(qid)
                if isinstance(queue, MirrorQueue):
                    self._replay(queue, buffer)

    async def _open_many(self, opens: list[list[str | int]]) -> list[Any]:
        """One call of the open script for several opens: one reply each, in order."""
        assert all(len(args) == OPEN_ARGS for args in opens)
        replies = await self._scripts["open"](args=[arg for args in opens for arg in args])
        return list(replies)

    def _mirror(self, queue_id: str, user_id: str, session_id: str) -> MirrorQueue:
        """A new local copy, in place of an older one (whose transport is taken over)."""
        old = self._queues.get(queue_id)
        if old is not None:
            self._drop(old)
        mirror = MirrorQueue(
            queue_id,
            user_id,
            session_id,
            max_events=self._max_events,
            clock=self._clock,
            on_close=self._queue_closed,
            shared=self,
        )
        self._queues[queue_id] = mirror
        self._by_user.setdefault(user_id, {})[queue_id] = mirror
        self._by_session.setdefault(session_id, {})[queue_id] = mirror
        return mirror

    def _drop(self, queue: EventQueue) -> None:
        """Forget a local copy; a transport still on it is superseded (it ends, replaced)."""
        if queue.attached:
            token = super().attach(queue)
            super().detach(queue, token)
        self._remove(queue)

    async def owner(self, queue_id: str) -> str | None:
        """The user of this open queue of the current epoch, wherever its transport is; None
        when it is unknown, closed or Redis does not answer."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hmget(f"chat:q:{queue_id}", "user", "epoch", "closed")
                pipe.get("chat:q-epoch")
                (user, epoch, closed), current = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("event queues: Redis is unreachable (%s)", exc)
            return None
        if user is None or closed is not None or epoch is None or epoch != current:
            return None
        return str(user.decode())

    # -- publishing -------------------------------------------------------------------------

    def publish(self, user_ids: Iterable[str], event: Event) -> None:
        self._queue("u", list(dict.fromkeys(user_ids)), event)

    def publish_to_queues(self, queue_ids: Iterable[str], event: Event) -> None:
        self._queue("q", list(dict.fromkeys(queue_ids)), event)

    def end_session(self, session_id: str, reason: str | None = None) -> None:
        ended: Event = {"type": "session.ended"}
        if reason is not None:
            ended["reason"] = reason
        # Idempotent in Redis (a closed queue takes no more events): every process that hears
        # of the logout may send it.
        self._queue("s", [session_id], ended)

    def close_all(self) -> int:
        # Events do not travel on the bus in this mode: a bus gap loses none of them.
        return 0

    def _queue(self, mode: str, ids: list[str], event: Event) -> None:
        if not ids:
            return
        order: Order | None = None
        if event.get("type") == "message.new":  # published in seq order across processes
            message = event["message"]
            order = (message["conversation_id"], message["seq"])
        self._outbox.append((order, mode, json.dumps(event, separators=(",", ":")), ids))
        self._wake_sender()

    def skip(self, conversation_id: str, seq: int) -> None:
        """The seq was allocated here but holds no message (its insert failed, or a retry
        found its message stored already): the messages after it need not wait for it."""
        self._outbox.append(((conversation_id, seq), "u", "", []))
        self._wake_sender()

    def ack_later(self, queue_id: str, acked: int) -> None:
        """Trim the queue in Redis up to acked (merged with later acks; best effort: a
        resume's cursor acknowledges too)."""
        if acked > self._acks.get(queue_id, 0):
            self._acks[queue_id] = acked
            self._wake_sender()

    def _wake_sender(self) -> None:
        self._idle.clear()
        self._pending.set()

    async def settled(self) -> None:
        """Return once what was published so far is in Redis (bounded; at once while Redis
        is unreachable): a command's reply then means its events are in every queue. It
        waits for the batch that carries them, not for an empty outbox: under steady traffic
        the outbox is never empty, and every reply waited SETTLE_SECS."""
        batch = self._taken + 1 if self._outbox else self._taken
        if self._sent >= batch or self._failing:
            return
        waiter = self._settling.get(batch)
        if waiter is None:
            waiter = self._settling[batch] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), SETTLE_SECS)

    async def _send_forever(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            batch, self._outbox = self._outbox, []
            if batch:
                self._taken += 1
            taken = self._taken
            acks, self._acks = self._acks, {}
            refreshes, self._refreshes = self._refreshes, set()
            try:
                await self._send(batch, acks, refreshes)
                if self._failing:
                    log.warning("event queues: Redis takes events again")
                self._failing = False
            except (RedisError, OSError) as exc:
                if not self._failing:
                    log.warning(
                        "event queues: Redis unreachable (%s): %d not stored", exc, len(batch)
                    )
                self._failing = True
                for _, mode, _, ids in batch:
                    self._debt[mode].update(ids)
                await asyncio.sleep(RECONNECT_SECS)
                self._pending.set()
            self._sent = taken
            for number in [n for n in self._settling if n <= taken]:
                waiter = self._settling.pop(number)
                if not waiter.done():
                    waiter.set_result(None)
            if not self._outbox and not self._acks and not self._refreshes:
                self._idle.set()

    async def _send(self, batch: list[Outgoing], acks: dict[str, int], refreshes: set[str]) -> None:
        debt = self._debt
        if any(debt.values()):
            if sum(len(ids) for ids in debt.values()) > MAX_DEBT:
                await self._scripts["lose"](args=["*"])
            else:
                for mode, ids in debt.items():
                    if ids:
                        await self._scripts["lose"](args=[mode, *ids])
            log.warning("event queues: the queues that missed events were dropped")
            self._debt = {"u": set(), "q": set(), "s": set()}
        if not batch and not acks and not refreshes:
            return
        calls: list[tuple[AsyncScript, Sequence[Any]]] = [
            (self._scripts["push"], args) for args in self._pushes(batch)
        ]
        if acks:
            calls.append((self._scripts["ack"], [x for pair in acks.items() for x in pair]))
        if refreshes:
            calls.append((self._scripts["refresh"], [self._ttl_ms, *refreshes]))
        results = await run_scripts(self._redis, calls)
        for queue_id in results[-1] if refreshes else ():
            # Its events can no longer reach it: its client starts anew (resumed: false).
            queue = self._queues.get(queue_id.decode())
            if queue is not None:
                queue.close()

    def _pushes(self, batch: list[Outgoing]) -> Iterator[list[Any]]:
        """The PUSH calls of a batch: one per event, the deliveries of one message.new (one
        per member when each has its own copy) together, so that Redis holds or sends them
        as one."""
        calls: list[tuple[Order | None, list[Any]]] = []
        for order, mode, text, ids in batch:
            if order is None or not calls or calls[-1][0] != order:
                conversation_id, seq = order or ("", 0)
                calls.append((order, [self._max_events, conversation_id, seq]))
            if ids:
                calls[-1][1].extend((mode, text, len(ids), *ids))
        return (args for _, args in calls)

    async def _release_forever(self) -> None:
        """Send the messages Redis held for longer than HOLD_MS (the seq before them will not
        come): any process does it, so a process that dies holding a seq delays no one long."""
        while True:
            await asyncio.sleep(RELEASE_SECS)
            with contextlib.suppress(RedisError, OSError):
                await self._scripts["release"](args=[self._max_events])

    # -- expiry -----------------------------------------------------------------------------

    def detach(self, queue: EventQueue, token: int) -> None:
        super().detach(queue, token)
        if not queue.attached:
            self._refreshes.add(queue.queue_id)  # its grace starts now
            self._wake_sender()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_secs)
            held = [q.queue_id for q in self._queues.values() if q.attached]
            if held:
                self._refreshes.update(held)
                self._wake_sender()

    # -- nudges -----------------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        await subscribe_forever(
            self._subscriber,
            CHANNEL,
            name="event queues",
            subscribed=self._subscribed,
            on_back=self._read_all,
            on_message=self._on_nudge,
        )

    def _read_all(self) -> None:
        """Nudges may have been missed: every copy reads what it lacks from Redis."""
        for queue in list(self._queues.values()):
            if isinstance(queue, MirrorQueue) and not queue.closed:
                self._catch_up(queue, [])

    def _on_nudge(self, data: Any) -> None:
        try:
            text = data.decode() if isinstance(data, bytes) else str(data)
            kind, _, rest = text.partition("\n")
            if kind == "e":
                done, closed, body = rest.split("\n", 2)
                self._on_events(done, closed, body)
            elif kind == "a":
                origin, queue_id, attachments = rest.split("\n")
                self._on_attached(origin, queue_id, int(attachments))
            elif kind == "x":
                for queue in list(self._queues.values()):
                    queue.close()
        except Exception:
            log.exception("event queues: a nudge could not be handled")

    def _on_events(self, done: str, closed: str, body: str) -> None:
        event: Event | None = None
        for pair in done.split(",") if done else ():
            queue_id, _, number = pair.partition("=")
            buffers = self._buffers.get(queue_id)
            queue = self._queues.get(queue_id)
            if not buffers and not isinstance(queue, MirrorQueue):
                continue
            if event is None:
                event = json.loads(body)  # shared by every copy, as without Redis
                assert event is not None
                if event.get("type") == "message.new" and self.on_message is not None:
                    self.on_message(event["message"])
            assert event is not None
            if buffers:
                for buffer in buffers:
                    buffer.append((int(number), event))
            elif isinstance(queue, MirrorQueue):
                self._deliver(queue, int(number), event)
        for queue_id in closed.split(",") if closed else ():
            buffers = self._buffers.get(queue_id)
            queue = self._queues.get(queue_id)
            if buffers:
                for buffer in buffers:
                    buffer.append((CLOSE, {}))  # after what is being read
            elif queue is not None:
                queue.close()

    def _hold(self, queue_id: str) -> Buffer:
        """Keep the queue's nudges in a new buffer (not delivered) until released."""
        buffer: Buffer = []
        self._buffers.setdefault(queue_id, []).append(buffer)
        return buffer

    def _release(self, queue_id: str, buffer: Buffer) -> None:
        buffers = self._buffers.get(queue_id, [])
        for i, held in enumerate(buffers):
            if held is buffer:
                del buffers[i]
                break
        if not buffers:
            self._buffers.pop(queue_id, None)

    def _deliver(self, queue: MirrorQueue, number: int, event: Event) -> None:
        if number == CLOSE:
            queue.close()
            return
        if queue.closed or number <= queue.last_event_id:
            return
        if number == queue.last_event_id + 1:
            queue.push(event)
            return
        self._catch_up(queue, [(number, event)])

    def _replay(self, queue: MirrorQueue, buffer: Buffer) -> None:
        """Deliver what was buffered; at a gap, read the stream again from there."""
        for i, (number, event) in enumerate(buffer):
            if number > queue.last_event_id + 1 and not queue.closed:
                self._catch_up(queue, buffer[i:])
                return
            self._deliver(queue, number, event)

    def _catch_up(self, queue: MirrorQueue, pending: Buffer) -> None:
        """Read what the copy misses from Redis, nudges (after pending) meanwhile buffered."""
        buffer = self._hold(queue.queue_id)
        buffer.extend(pending)
        task = asyncio.get_running_loop().create_task(self._read(queue, buffer))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _read(self, queue: MirrorQueue, buffer: Buffer) -> None:
        queue_id = queue.queue_id
        try:
            while True:
                try:
                    exists, closed, raw = await self._scripts["read"](
                        args=[queue_id, self.epoch, queue.last_event_id]
                    )
                    break
                except (RedisError, OSError):
                    await asyncio.sleep(RECONNECT_SECS)
        except BaseException:
            self._release(queue_id, buffer)
            raise
        # From here on synchronous: no nudge falls between the release and the replay.
        self._release(queue_id, buffer)
        try:
            if self._queues.get(queue_id) is not queue:
                return  # replaced meanwhile
            if not exists:
                queue.close()  # expired, dropped or lost in Redis: its client starts anew
                return
            for number, event in _entries(raw):
                if number == queue.last_event_id + 1:
                    queue.push(event)
                elif number > queue.last_event_id:
                    queue.close()  # trimmed by acks made elsewhere: a stale copy
                    return
            self._replay(queue, buffer)
            if closed:
                queue.close()
        except Exception:
            log.exception("event queues: reading %s failed", queue_id)
            queue.close()

    def _on_attached(self, origin: str, queue_id: str, attachments: int) -> None:
        """A transport attached to the queue elsewhere: the one here (if any) is replaced."""
        if origin == self.origin:
            return
        queue = self._queues.get(queue_id)
        if isinstance(queue, MirrorQueue) and queue.attachments < attachments:
            self._drop(queue)
