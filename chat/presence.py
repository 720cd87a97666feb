"""Online/offline presence derived from queue attachment, with a reload grace.

A user is online while at least one of its queues has a transport attached
(the :class:`~chat.events.QueueRegistry` reports the 0->1 and 1->0 transitions).
Going offline waits a grace period so a page reload does not flap. Changes are
published as ``presence`` events to the user's audience and to queues that
subscribed to the user, never across a block.

Pure Python: the database and the social graph come in as async callbacks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Literal, Protocol

from chat.batching import CachedReads, shared_frozenset
from chat.events import AttachListener, Event, QueueRegistry
from chat.models import iso, utcnow

logger = logging.getLogger(__name__)

# A page reload detaches and re-attaches within a second or two; a user must not
# appear offline (and back online) for that.
PRESENCE_GRACE_SECS = 10.0

# Bounds the memory and fan-out one client can cause by subscribing.
MAX_SUBSCRIPTIONS_PER_QUEUE = 1000

AUDIENCE_CACHE_MAX = 100_000  # users whose audience is kept at most (least recently used dropped)

Status = Literal["online", "offline"]


def presence_event(user_id: str, status: Status, last_seen: datetime | None) -> Event:
    """Build the protocol's presence payload."""
    return {
        "type": "presence",
        "user_id": user_id,
        "status": status,
        # ISO-8601 UTC with milliseconds and "Z", formatted in one place for the protocol.
        "last_seen": iso(last_seen),
    }


class Presence(AttachListener, Protocol):
    """Presence store; the in-memory one can be replaced by a shared one (several processes).

    It is also the registry's :class:`~chat.events.AttachListener`.
    """

    def is_online(self, user_id: str) -> bool:
        """True while the user has an attached queue or is within the offline grace."""
        ...

    def statuses(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Map each user id to "online" or "offline"."""
        ...

    def last_seen(self, user_id: str) -> datetime | None:
        """When the user went offline, if known here; None while online."""
        ...

    def user_attached(self, user_id: str) -> None:
        """The user's first queue got a transport (sync; schedules async work)."""
        ...

    def user_detached(self, user_id: str) -> None:
        """The user's last attached queue lost its transport (starts the grace)."""
        ...

    def audience_changed(self, user_ids: Iterable[str]) -> None:
        """Who sees these users' presence changed (a friendship, a block, a DM): every change
        to the social graph made in this process calls this, after storing it."""
        ...

    async def sees(self, watcher_id: str, user_id: str) -> bool:
        """True when the watcher receives the user's presence changes now (in its audience, or
        one of its queues subscribed to the user)."""
        ...

    def withdraw(self, user_id: str, watcher_id: str) -> None:
        """A block now stands between them: the watcher's queues are told at once that the user
        is offline for them (``blocked: true``, no last_seen) and their subscriptions to the
        user end."""
        ...

    def restore(self, user_id: str, watcher_id: str) -> None:
        """The block between them was lifted: the watcher's queues get the user's current
        presence (``blocked: false``)."""
        ...

    def subscribe(self, queue_id: str, user_ids: Iterable[str]) -> list[str]:
        """Record that the queue wants presence events of those users; returns the ids accepted."""
        ...

    def unsubscribe_queue(self, queue_id: str) -> None:
        """Forget every subscription of the queue."""
        ...

    def close(self) -> None:
        """Cancel pending timers and tasks; no event is published afterwards."""
        ...


class InMemoryPresence:
    """Single-process presence kept in memory; registers itself as the registry's listener."""

    __slots__ = (
        "_audience",
        "_audiences",
        "_chains",
        "_closed",
        "_deliver",
        "_grace_secs",
        "_is_blocked_between",
        "_last_seen",
        "_offline_timers",
        "_online",
        "_registry",
        "_store_last_seen",
        "_subs_by_queue",
        "_subscribers",
        "_tasks",
    )

    def __init__(
        self,
        registry: QueueRegistry,
        audience: Callable[[str], Awaitable[set[str]]],
        is_blocked_between: Callable[[str, str], Awaitable[bool]],
        store_last_seen: Callable[[str, datetime], Awaitable[None]],
        grace_secs: float = PRESENCE_GRACE_SECS,
        deliver: Callable[[Iterable[str], Event], None] | None = None,
    ) -> None:
        """Create the store and set it as the registry's attach listener. deliver(users, event)
        pushes an event meant for whole users (a withdrawal across a block) to their queues,
        in every process that holds some (the registry's publish by default)."""
        self._registry = registry
        self._deliver = deliver or registry.publish
        self._audience = audience
        # Read once per user and kept: a reconnect or an offline transition costs no read.
        self._audiences: CachedReads[str, frozenset[str]] = CachedReads(
            self._read_audience, AUDIENCE_CACHE_MAX
        )
        self._is_blocked_between = is_blocked_between
        self._store_last_seen = store_last_seen
        self._grace_secs = grace_secs
        # Users announced online (including those inside the offline grace).
        self._online: set[str] = set()
        # When users went offline, so statuses can be answered without the database.
        self._last_seen: dict[str, datetime] = {}
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        # Strong references: the loop keeps only weak ones to running tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        # Last announcement task per user, so a user's online/offline events are
        # published in the order the transitions happened.
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._subs_by_queue: dict[str, set[str]] = {}  # queue_id -> watched user ids
        self._subscribers: dict[str, set[str]] = {}  # watched user id -> queue_ids
        self._closed = False
        registry.set_listener(self)

    # -- queries --------------------------------------------------------------

    def is_online(self, user_id: str) -> bool:
        """True while the user has an attached queue or is within the offline grace."""
        return user_id in self._online

    def statuses(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Map each user id to "online" or "offline"."""
        return {u: "online" if u in self._online else "offline" for u in user_ids}

    def last_seen(self, user_id: str) -> datetime | None:
        """When the user went offline during this process's life; None if online or unknown."""
        if user_id in self._online:
            return None
        return self._last_seen.get(user_id)

    # -- transitions (called by the registry) ---------------------------------

    def user_attached(self, user_id: str) -> None:
        """Announce the user online, unless it is only back within the grace (no event)."""
        if self._closed:
            return
        timer = self._offline_timers.pop(user_id, None)
        if timer is not None:
            # A reload: the user never appeared offline, so nothing to announce.
            timer.cancel()
            return
        if user_id in self._online:
            return
        self._online.add(user_id)
        self._last_seen.pop(user_id, None)
        self._announce(user_id, "online", None)

    def user_detached(self, user_id: str) -> None:
        """Start the grace after which the user is announced offline."""
        if self._closed or not self._holds(user_id) or user_id in self._offline_timers:
            return
        loop = asyncio.get_running_loop()
        self._offline_timers[user_id] = loop.call_later(
            self._grace_secs, self._grace_expired, user_id
        )

    # The registry's AttachListener interface.
    on_user_attached = user_attached
    on_user_detached = user_detached

    def _holds(self, user_id: str) -> bool:
        """Whether this process counts the user online (its grace would end that)."""
        return user_id in self._online

    def _grace_expired(self, user_id: str) -> None:
        self._offline_timers.pop(user_id, None)
        if not self._closed:
            self._went_offline(user_id)

    def _went_offline(self, user_id: str) -> None:
        """The grace ended with no transport back: announce the user offline."""
        self._online.discard(user_id)
        now = utcnow()  # milliseconds, as stored: the event, the store and memory agree
        self._last_seen[user_id] = now
        self._announce(user_id, "offline", now)

    def audience_changed(self, user_ids: Iterable[str]) -> None:
        """Forget the kept audiences of these users: the next announcement reads them again."""
        for user_id in user_ids:
            self._audiences.forget(user_id)

    async def sees(self, watcher_id: str, user_id: str) -> bool:
        """True when the watcher receives the user's presence changes now."""
        if watcher_id in (await self._audiences.get(user_id) or frozenset()):
            return True
        return any(
            (queue := self._registry.get(queue_id)) is not None and queue.user_id == watcher_id
            for queue_id in self._subscribers.get(user_id, ())
        )

    def withdraw(self, user_id: str, watcher_id: str) -> None:
        """Tell the watcher's queues the user is offline for them, now; end their subscriptions
        to the user (a subscription across a block would be filtered anyway)."""
        if self._closed:
            return
        queue_ids = self._subscribers.get(user_id, set())
        for queue in self._registry.queues_of_user(watcher_id):
            if queue.queue_id in queue_ids:
                self._drop_subscription(queue.queue_id, user_id)
        # Synchronous: it lands in the queues before whatever the caller publishes next.
        event = {**presence_event(user_id, "offline", None), "blocked": True}
        self._deliver([watcher_id], event)

    def restore(self, user_id: str, watcher_id: str) -> None:
        """Give the watcher's queues the user's current presence back."""
        if self._closed:
            return
        status: Status = "online" if user_id in self._online else "offline"
        event = {**presence_event(user_id, status, self.last_seen(user_id)), "blocked": False}
        self._deliver([watcher_id], event)

    def _drop_subscription(self, queue_id: str, user_id: str) -> None:
        watched = self._subs_by_queue.get(queue_id)
        if watched is not None:
            watched.discard(user_id)
            if not watched:
                del self._subs_by_queue[queue_id]
        queue_ids = self._subscribers.get(user_id)
        if queue_ids is not None:
            queue_ids.discard(queue_id)
            if not queue_ids:
                del self._subscribers[user_id]

    async def _read_audience(self, user_id: str) -> frozenset[str]:
        # Most users' audience is small or empty, and the empty frozenset is shared.
        return shared_frozenset(await self._audience(user_id))

    # -- subscriptions --------------------------------------------------------

    def subscribe(self, queue_id: str, user_ids: Iterable[str]) -> list[str]:
        """Add subscriptions for the queue (at most 1000 users); returns the ids accepted."""
        if self._registry.get(queue_id) is None:
            return []  # never let an unknown id pin memory
        watched = self._subs_by_queue.setdefault(queue_id, set())
        accepted: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            if user_id not in watched:
                if len(watched) >= MAX_SUBSCRIPTIONS_PER_QUEUE:
                    continue
                watched.add(user_id)
                self._subscribers.setdefault(user_id, set()).add(queue_id)
            accepted.append(user_id)
        if not watched:
            del self._subs_by_queue[queue_id]
        return accepted

    def unsubscribe_queue(self, queue_id: str) -> None:
        """Forget every subscription of the queue (call it when the queue is swept)."""
        for user_id in self._subs_by_queue.pop(queue_id, ()):
            queue_ids = self._subscribers.get(user_id)
            if queue_ids is not None:
                queue_ids.discard(queue_id)
                if not queue_ids:
                    del self._subscribers[user_id]

    # -- shutdown -------------------------------------------------------------

    def close(self) -> None:
        """Cancel pending offline timers and announcement tasks; idempotent."""
        self._closed = True
        for timer in self._offline_timers.values():
            timer.cancel()
        self._offline_timers.clear()
        for task in list(self._tasks):
            task.cancel()
        self._chains.clear()

    # -- publishing -----------------------------------------------------------

    def _announce(self, user_id: str, status: Status, last_seen: datetime | None) -> None:
        self._chain(user_id, functools.partial(self._run_announcement, user_id, status, last_seen))

    def _chain(self, user_id: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run step after the user's previous one: a user's transitions are announced in the
        order they happened."""
        previous = self._chains.get(user_id)
        task = asyncio.get_running_loop().create_task(self._after(previous, step))
        self._tasks.add(task)
        self._chains[user_id] = task
        task.add_done_callback(functools.partial(self._task_done, user_id))

    def _task_done(self, user_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._chains.get(user_id) is task:
            del self._chains[user_id]

    @staticmethod
    async def _after(
        previous: asyncio.Task[None] | None, step: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None and not previous.done():
            # asyncio.wait does not raise if the previous one failed or was cancelled.
            await asyncio.wait([previous])
        await step()

    async def _run_announcement(
        self, user_id: str, status: Status, last_seen: datetime | None
    ) -> None:
        if status == "offline" and last_seen is not None:
            try:
                await self._store_last_seen(user_id, last_seen)
            except Exception:
                # The database being down must not hide the offline transition.
                logger.exception("storing last_seen failed for user %s", user_id)
        try:
            await self._publish(presence_event(user_id, status, last_seen))
        except Exception:
            logger.exception("publishing presence failed for user %s", user_id)

    async def _publish(self, event: Event, *, to_audience: bool = True) -> None:
        """Deliver to the audience's queues (unless another process did) and to the queues
        here that subscribed to the user."""
        user_id: str = event["user_id"]
        registry = self._registry
        if not to_audience and not self._subscribers.get(user_id):
            # Another process delivered to the audience and nobody here subscribed: the
            # audience is not needed (reading it made every process read every audience).
            return
        try:
            audience = await self._audiences.get(user_id) or frozenset()
        except Exception:
            # Subscribers are still served: they are filtered separately.
            logger.exception("computing the presence audience failed for user %s", user_id)
            audience = frozenset()
        # The audience callback already excludes blocked pairs.
        if to_audience:
            registry.publish(audience, event)

        # Snapshot: subscriptions can change while the block checks are awaited.
        by_subscriber: dict[str, list[str]] = {}
        for queue_id in list(self._subscribers.get(user_id, ())):
            queue = registry.get(queue_id)
            if queue is None or queue.closed:
                self.unsubscribe_queue(queue_id)  # swept or closed: prune lazily
                continue
            if queue.user_id in audience:
                continue  # already delivered above: exactly once per queue
            by_subscriber.setdefault(queue.user_id, []).append(queue_id)

        allowed: list[str] = []
        for subscriber, queue_ids in by_subscriber.items():
            try:
                blocked = await self._is_blocked_between(user_id, subscriber)
            except Exception:
                # Fail closed: leaking presence across a block is worse than a
                # missed update.
                logger.exception("block check failed between %s and %s", user_id, subscriber)
                blocked = True
            if not blocked:
                allowed.extend(queue_ids)
        if allowed:
            registry.publish_to_queues(allowed, event)
