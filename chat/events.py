"""Per-client event queues: ordered, acknowledged, resumable delivery.

Each connected client (browser tab) owns one :class:`EventQueue`. Both
transports (WebSocket and long-polling) read the same queue, so a client can
switch between them, or reconnect, without losing or duplicating events while
the queue lives. :class:`QueueRegistry` owns every queue of one server process.

Pure Python: no I/O, no framework imports. Everything runs on one asyncio loop
and nothing here is thread-safe (it does not need to be).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Event = dict[str, Any]
"""An event payload; always has a "type" key. Shared between queues: never mutate."""

Item = dict[str, Any]
"""One delivered item: ``{"id": int, "event": Event}``."""

# A reload or a network drop must not lose events: a detached queue is kept this
# long so the client can resume it.
QUEUE_GRACE_SECS = 120.0

# Bounds the memory one slow or vanished client can pin (events, not bytes).
# Past this the queue is dropped and its client resynchronises (resumed: false).
QUEUE_MAX_EVENTS = 10_000

# 128 bits of randomness: a queue_id is a bearer reference, it must not be guessable.
QUEUE_ID_BYTES = 16

# The epoch only has to differ between server starts, not to be secret.
EPOCH_BYTES = 8


class AttachListener(Protocol):
    """Told when a user's number of attached queues goes 0->1 and 1->0."""

    def on_user_attached(self, user_id: str) -> None:
        """Called synchronously when the user's first queue gets a transport."""

    def on_user_detached(self, user_id: str) -> None:
        """Called synchronously when the user's last attached queue loses it."""


def _wake_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class EventSink(Protocol):
    """A consumer that is handed each event as it is pushed (a WebSocket), instead of
    waiting for it in :meth:`EventQueue.wait_after` (a long-poll)."""

    def on_event(self, event_id: int, event: Event) -> None:
        """Called synchronously by :meth:`EventQueue.push`; must not raise."""

    def on_end(self) -> None:
        """Called synchronously once the sink is no longer fed: the queue was closed, or
        another transport attached. Not called after its own detach."""


class EventQueue:
    """The ordered, acknowledged event stream of one client (browser tab)."""

    # Thousands of queues live at once: slots keep each one small.
    __slots__ = (
        "_acked",
        "_attached_token",
        "_clock",
        "_closed",
        "_detached_since",
        "_events",
        "_last_id",
        "_max_events",
        "_next_token",
        "_on_close",
        "_overflowed",
        "_sink",
        "_waiter",
        "_waiter_token",
        "queue_id",
        "session_id",
        "user_id",
    )

    def __init__(
        self,
        queue_id: str,
        user_id: str,
        session_id: str,
        *,
        max_events: int = QUEUE_MAX_EVENTS,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[EventQueue], None] | None = None,
    ) -> None:
        """Create an empty, open, detached queue whose first event will get id 1."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.queue_id = queue_id
        self.user_id = user_id
        self.session_id = session_id
        # Only unacknowledged events are kept, oldest first; ids are contiguous.
        # A list, not a deque: an empty deque costs 760 bytes, an empty list 56, and most
        # queues hold a few events at a time, dropped by cumulative acks.
        self._events: list[tuple[int, Event]] = []
        self._last_id = 0
        self._acked = 0
        self._max_events = max_events
        self._closed = False
        self._overflowed = False
        # At most one consumer waits at a time; a newer one supersedes it.
        self._waiter: asyncio.Future[None] | None = None
        self._waiter_token: int | None = None
        self._next_token = 0
        self._attached_token: int | None = None
        # The attached transport's sink, if it asked to be fed (see subscribe): it holds
        # the attached token, so a takeover or its own detach removes it.
        self._sink: EventSink | None = None
        # A queue nobody ever attached to must still expire.
        self._detached_since: float | None = clock()
        self._clock = clock
        self._on_close = on_close

    def __repr__(self) -> str:
        return (
            f"<EventQueue {self.queue_id} user={self.user_id} last={self._last_id} "
            f"acked={self._acked} closed={self._closed}>"
        )

    # -- state ----------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the queue accepts no more events (it never reopens)."""
        return self._closed

    @property
    def overflowed(self) -> bool:
        """True if the queue was closed because too many events went unacknowledged."""
        return self._overflowed

    @property
    def last_event_id(self) -> int:
        """The id of the last event ever pushed (0 if none)."""
        return self._last_id

    @property
    def acked_id(self) -> int:
        """The highest acknowledged id; every event up to it has been dropped."""
        return self._acked

    @property
    def pending_count(self) -> int:
        """The number of events pushed but not yet acknowledged."""
        return len(self._events)

    @property
    def has_waiter(self) -> bool:
        """True while a consumer is blocked in :meth:`wait_after`."""
        return self._waiter is not None

    # -- producing ------------------------------------------------------------

    def push(self, event: Event) -> int:
        """Append the event with the next id and wake the waiter; 0 if not stored."""
        if self._closed:
            return 0
        if len(self._events) >= self._max_events:
            # The client cannot keep up (or is gone): drop the whole queue rather
            # than a single event, so it resynchronises instead of missing one.
            self._overflowed = True
            self._events.clear()  # nobody may read them any more: free memory now
            self.close()
            return 0
        self._last_id += 1
        self._events.append((self._last_id, event))
        self._wake()
        sink = self._sink
        if sink is not None:
            # Handed over at once: a fan-out writes every socket's frame in this one call,
            # with no task or future per idle socket. A sink that cannot take it now reads
            # it later with events_after (the event stays until acknowledged).
            try:
                sink.on_event(self._last_id, event)
            except Exception:
                # One broken consumer must not stop a publish to the other queues.
                logger.exception("event sink failed on %r", self)
        return self._last_id

    # -- consuming ------------------------------------------------------------

    def ack(self, last_event_id: int) -> None:
        """Drop every event up to last_event_id; out-of-range values change nothing."""
        # Below the current ack is a stale/duplicated ack; beyond the last id is a
        # bogus one: acting on it would drop events pushed later.
        if last_event_id <= self._acked or last_event_id > self._last_id:
            return
        self._acked = last_event_id
        events = self._events
        if events:
            # Ids are contiguous: the acknowledged ones are a prefix of known length.
            del events[: max(0, last_event_id - events[0][0] + 1)]

    def events_after(self, last_event_id: int, *, prune: bool = True) -> list[Item]:
        """Return every kept event after last_event_id in order; acks first unless prune=False."""
        # prune=False: a WebSocket writer's cursor is what it sent, not what the
        # client acknowledged, so sending must not drop anything.
        if prune:
            self.ack(last_event_id)
        events = self._events
        if not events:
            return []
        # Ids are contiguous, so the start is an offset: no scan of what was sent.
        start = max(0, last_event_id - events[0][0] + 1)
        return [{"id": i, "event": e} for i, e in events[start:]]

    def can_resume_from(self, last_event_id: int) -> bool:
        """True if every event after last_event_id can still be delivered."""
        # Below the ack those events were pruned; above the last id the client
        # claims events this queue never produced (another server run, a bug).
        return not self._closed and self._acked <= last_event_id <= self._last_id

    async def wait_after(
        self,
        last_event_id: int,
        # The protocol's poll has a timeout parameter; callers pass it straight on.
        timeout: float | None,
        *,
        prune: bool = True,
        token: int | None = None,
    ) -> list[Item]:
        """Ack up to last_event_id (unless prune=False); return later events as soon as any exist.

        Returns at once if events after last_event_id are kept (also when the
        queue is closed: events pushed before closing are still delivered).
        Otherwise waits and returns ``[]`` on timeout (a heartbeat), when the
        queue is closed with nothing left, or at once when a newer waiter or a
        newer :meth:`attach` supersedes this one. ``timeout=None`` waits with no
        limit. With ``token`` (from :meth:`attach`) it returns ``[]`` at once if
        that token is no longer current, so a transport that was taken over
        cannot, by waiting again, supersede its successor's wait; pass it when
        you have one. A consumer that gets ``[]`` checks :attr:`closed` and
        :meth:`is_current` to tell a heartbeat from the end. Cancelling the
        awaiting task leaves no waiter behind.
        """
        if token is not None and not self.is_current(token):
            return []
        items = self.events_after(last_event_id, prune=prune)
        if items or self._closed or (timeout is not None and timeout <= 0):
            return items
        # One consumer at a time: the previous one (an older poll, or the
        # transport we are taking over from) returns [] right away.
        self._supersede_waiter()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut
        self._waiter_token = token
        # The timeout only wakes the waiter, as a push would: a plain timer, not a timeout
        # context (which costs each of thousands of held polls an object and a cancellation).
        timer = None if timeout is None else loop.call_later(timeout, _wake_future, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            # Decide before clearing: if someone replaced us, we were superseded,
            # even if a push woke us first (the newer consumer gets those events,
            # so returning them here too would deliver them twice).
            still_current = self._waiter is fut
            if still_current:
                self._waiter = None
                self._waiter_token = None
        if not still_current:
            return []
        # Also covers a timeout racing with a push: events are not left waiting.
        return self.events_after(last_event_id, prune=prune)

    def _wake(self) -> None:
        # Wake the waiter but leave it registered: it is still the consumer.
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _supersede_waiter(self) -> None:
        # Unregister first: the woken waiter sees it is no longer current and
        # returns [] instead of events.
        waiter = self._waiter
        self._waiter = None
        self._waiter_token = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def subscribe(self, token: int, sink: EventSink) -> bool:
        """Feed every event pushed from now on to sink while token stays current; False
        (nothing changes) if it is not. The caller first sends what events_after returns."""
        if not self.is_current(token) or self._closed:
            return False
        self._sink = sink
        return True

    def _end_sink(self) -> None:
        sink = self._sink
        self._sink = None
        if sink is not None:
            try:
                sink.on_end()
            except Exception:
                logger.exception("event sink failed to end on %r", self)

    # -- attachment -----------------------------------------------------------

    def attach(self) -> int:
        """Mark a transport attached and return its token; it supersedes any older one.

        Returns 0 (a token that is never current) if the queue is closed. Use
        :meth:`QueueRegistry.attach` instead so presence is kept up to date.
        """
        if self._closed:
            return 0
        self._next_token += 1
        self._attached_token = self._next_token
        self._detached_since = None
        # Only one transport at a time: the previous one's pending wait ends, and its
        # sink learns it was taken over.
        self._supersede_waiter()
        self._end_sink()
        return self._attached_token

    def detach(self, token: int) -> bool:
        """Detach the transport holding token; False (no change) if it is not current."""
        if token == 0 or token != self._attached_token:
            # A transport that was taken over must not detach its successor.
            return False
        self._attached_token = None
        self._sink = None  # it detached itself: nothing to tell it
        if self._detached_since is None:
            self._detached_since = self._clock()
        if self._waiter is not None and self._waiter_token == token:
            self._supersede_waiter()
        return True

    def is_current(self, token: int) -> bool:
        """True if token is from the latest attach and was not detached since."""
        return token != 0 and token == self._attached_token

    @property
    def attached(self) -> bool:
        """True while a transport is attached and the queue is open."""
        return self._attached_token is not None and not self._closed

    @property
    def detached_since(self) -> float | None:
        """Clock time since which no transport is attached (or since closing); None if attached."""
        return self._detached_since

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting events and wake the waiter; idempotent."""
        if self._closed:
            return
        self._closed = True
        # Closing counts as detaching (for expiry and for presence), but the
        # attached token stays current so its transport can drain what is left.
        if self._detached_since is None:
            self._detached_since = self._clock()
        self._wake()
        self._end_sink()
        on_close = self._on_close
        self._on_close = None  # drop the back-reference: nothing else to report
        if on_close is not None:
            on_close(self)


class QueueRegistry:
    """All event queues of one server process, indexed by id, user and session."""

    __slots__ = (
        "_attached_count",
        "_attached_ids",
        "_by_session",
        "_by_user",
        "_clock",
        "_grace_secs",
        "_listener",
        "_max_events",
        "_queues",
        "epoch",
    )

    def __init__(
        self,
        max_events: int = QUEUE_MAX_EVENTS,
        grace_secs: float = QUEUE_GRACE_SECS,
        clock: Callable[[], float] = time.monotonic,
        listener: AttachListener | None = None,
    ) -> None:
        """Create an empty registry with a fresh random epoch."""
        # New per instance, i.e. per server start: queues never survive a restart,
        # and clients learn so from the epoch instead of trusting a reused id.
        self.epoch: str = secrets.token_urlsafe(EPOCH_BYTES)
        self._max_events = max_events
        self._grace_secs = grace_secs
        self._clock = clock
        self._listener = listener
        self._queues: dict[str, EventQueue] = {}
        self._by_user: dict[str, dict[str, EventQueue]] = {}
        self._by_session: dict[str, dict[str, EventQueue]] = {}
        # Queue ids counted in _attached_count; a set makes detach idempotent.
        self._attached_ids: set[str] = set()
        self._attached_count: dict[str, int] = {}

    def __len__(self) -> int:
        """The number of queues held (including closed ones not yet swept)."""
        return len(self._queues)

    def set_listener(self, listener: AttachListener | None) -> None:
        """Set (or clear) the object told about per-user attach/detach transitions."""
        self._listener = listener

    # -- lifecycle ------------------------------------------------------------

    def create(self, user_id: str, session_id: str) -> EventQueue:
        """Create and register a new empty queue with an unguessable id."""
        queue_id = secrets.token_urlsafe(QUEUE_ID_BYTES)
        while queue_id in self._queues:  # practically never; keeps ids unique
            queue_id = secrets.token_urlsafe(QUEUE_ID_BYTES)
        queue = EventQueue(
            queue_id,
            user_id,
            session_id,
            max_events=self._max_events,
            clock=self._clock,
            on_close=self._queue_closed,
        )
        self._queues[queue_id] = queue
        self._by_user.setdefault(user_id, {})[queue_id] = queue
        self._by_session.setdefault(session_id, {})[queue_id] = queue
        return queue

    def resume(
        self,
        user_id: str,
        session_id: str,
        queue_id: str | None,
        epoch: str | None,
        last_event_id: int,
    ) -> tuple[EventQueue, bool]:
        """Return (queue, True) if it can serve every event after the cursor, else (new, False).

        A queue resumes only for the user and session that created it, while it
        has not expired, with the current epoch (``epoch=None`` skips that check:
        an unknown queue id already tells a restart apart), and when every event
        after ``last_event_id`` is still kept.
        """
        queue = self.find_resumable(user_id, session_id, queue_id, epoch, last_event_id)
        if queue is not None:
            return queue, True
        return self.create(user_id, session_id), False

    def find_resumable(
        self,
        user_id: str,
        session_id: str,
        queue_id: str | None,
        epoch: str | None,
        last_event_id: int,
    ) -> EventQueue | None:
        """The queue :meth:`resume` would continue, or None where it would create one."""
        queue = self._queues.get(queue_id) if queue_id is not None else None
        if queue is not None and queue.user_id == user_id and queue.session_id == session_id:
            if self._expired(queue, self._clock()):
                queue.close()  # dead already; the sweep removes it
            elif (epoch is None or epoch == self.epoch) and queue.can_resume_from(last_event_id):
                return queue
            # Otherwise the queue is left alone: an unservable cursor is most often a
            # stale request (a poll the client gave up on, delivered late) while the
            # client goes on with a newer cursor; closing the queue would lose it.
            # An abandoned queue simply expires after its grace.
        # Another user's (or session's) queue is left untouched: the caller must
        # not affect it, nor learn anything from it. A session must not adopt
        # another's queue either: logging that session out would leave it open.
        return None

    def live_count(self, user_id: str) -> tuple[int, float | None]:
        """How many of the user's queues are open and unexpired, and the seconds until the
        first detached one expires (None when all are attached)."""
        queues = self._by_user.get(user_id)
        if not queues:
            return 0, None
        now = self._clock()
        live, soonest = 0, None
        for queue in queues.values():
            if queue.closed or self._expired(queue, now):
                continue
            live += 1
            since = queue.detached_since
            if not queue.attached and since is not None:
                left = since + self._grace_secs - now
                soonest = left if soonest is None else min(soonest, left)
        return live, soonest

    def get(self, queue_id: str) -> EventQueue | None:
        """Return the registered queue with that id (possibly closed), or None."""
        return self._queues.get(queue_id)

    def queues_of_user(self, user_id: str) -> list[EventQueue]:
        """Return the user's open queues (one per tab)."""
        queues = self._by_user.get(user_id)
        if not queues:
            return []
        return [q for q in queues.values() if not q.closed]

    # -- publishing -----------------------------------------------------------

    def publish(self, user_ids: Iterable[str], event: Event) -> None:
        """Push the same payload once to every open queue of each listed user."""
        targets: Iterable[str]
        if isinstance(user_ids, (set, frozenset)):
            # A set (a conversation's members): only its users who have a queue here, by
            # whichever side is smaller. A message to a full group of mostly offline members
            # looked up all 1,000.
            if len(user_ids) > len(self._by_user):
                targets = [u for u in self._by_user if u in user_ids]
            else:
                targets = user_ids
        else:
            targets = dict.fromkeys(user_ids)  # dedupe, in the caller's order (deterministic)
        for user_id in targets:
            queues = self._by_user.get(user_id)
            if queues:
                # Copy: an overflow closes a queue, which may call the listener.
                for queue in list(queues.values()):
                    queue.push(event)

    def publish_to_queues(self, queue_ids: Iterable[str], event: Event) -> None:
        """Push the payload once to each listed open queue; unknown ids are ignored."""
        for queue_id in dict.fromkeys(queue_ids):
            queue = self._queues.get(queue_id)
            if queue is not None:
                queue.push(event)

    def end_session(self, session_id: str, reason: str | None = None) -> None:
        """Push session.ended (with the reason, unless it is the session's own logout) to every
        queue of the session, then close them."""
        queues = self._by_session.get(session_id)
        if not queues:
            return
        ended: Event = {"type": "session.ended"}  # one payload shared by the queues
        if reason is not None:
            ended["reason"] = reason
        for queue in list(queues.values()):
            # Pushed before closing, so a waiting or later reader still gets it.
            queue.push(ended)
            queue.close()

    def close_all(self) -> int:
        """Close every open queue (they may have missed events): their clients get new ones,
        whose hello says resumed false, and read the state again. Returns how many."""
        closed = 0
        for queue in list(self._queues.values()):
            if not queue.closed:
                queue.close()
                closed += 1
        return closed

    def sweep(self) -> list[EventQueue]:
        """Remove and return overflowed, drained closed, and expired queues."""
        now = self._clock()
        removed: list[EventQueue] = []
        for queue in self._queues.values():
            # A closed queue still holding events (e.g. session.ended) is kept
            # until it expires, so a client between two polls can still read it.
            drained = queue.closed and queue.pending_count == 0
            if queue.overflowed or drained or self._expired(queue, now):
                removed.append(queue)
        for queue in removed:
            self._remove(queue)
        return removed

    def _expired(self, queue: EventQueue, now: float) -> bool:
        # Past its grace a queue is gone even before the sweep removes it, so
        # that resuming does not depend on when the sweep last ran.
        since = queue.detached_since
        return not queue.attached and since is not None and now - since > self._grace_secs

    def _remove(self, queue: EventQueue) -> None:
        queue.close()  # counts as a detach if it was attached
        queue_id = queue.queue_id
        self._queues.pop(queue_id, None)
        for index, key in (
            (self._by_user, queue.user_id),
            (self._by_session, queue.session_id),
        ):
            bucket = index.get(key)
            if bucket is not None:
                bucket.pop(queue_id, None)
                if not bucket:
                    del index[key]

    # -- attachment -----------------------------------------------------------

    def attach(self, queue: EventQueue) -> int:
        """Attach a transport to the queue and return its token (0 if closed)."""
        token = queue.attach()
        if token and queue.queue_id not in self._attached_ids:
            self._attached_ids.add(queue.queue_id)
            count = self._attached_count.get(queue.user_id, 0) + 1
            self._attached_count[queue.user_id] = count
            if count == 1:
                self._notify(queue.user_id, attached=True)
        return token

    def detach(self, queue: EventQueue, token: int) -> None:
        """Detach the transport holding token; a superseded token changes nothing."""
        if queue.detach(token):
            self._uncount(queue)

    def attached_count(self, user_id: str) -> int:
        """The number of the user's queues that have a transport attached."""
        return self._attached_count.get(user_id, 0)

    def _queue_closed(self, queue: EventQueue) -> None:
        # Called by EventQueue.close(): a closed queue no longer keeps its user online.
        self._uncount(queue)

    def _uncount(self, queue: EventQueue) -> None:
        if queue.queue_id not in self._attached_ids:
            return
        self._attached_ids.discard(queue.queue_id)
        user_id = queue.user_id
        count = self._attached_count.get(user_id, 0) - 1
        if count > 0:
            self._attached_count[user_id] = count
            return
        self._attached_count.pop(user_id, None)
        self._notify(user_id, attached=False)

    def _notify(self, user_id: str, *, attached: bool) -> None:
        listener = self._listener
        if listener is None:
            return
        # A faulty listener must not break a transport's attach/detach.
        try:
            if attached:
                listener.on_user_attached(user_id)
            else:
                listener.on_user_detached(user_id)
        except Exception:
            logger.exception("attach listener failed for user %s", user_id)
