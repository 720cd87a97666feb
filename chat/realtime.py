"""Event queues and presence as the service sees them: open/resume a queue, hello, subscribe."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from chat import shapes
from chat.accounts import AccountCommands
from chat.batching import Coalescer
from chat.broker import PresenceBook
from chat.commands import Principal, Reply, command
from chat.errors import NotFound, RateLimited, ValidationFailed
from chat.events import EventQueue, QueueRegistry
from chat.limits import UserSlots
from chat.metrics import LONGPOLL, WEBSOCKET
from chat.presence import InMemoryPresence
from chat.shared_presence import SharedPresence
from chat.tasks import cancel_and_wait
from chat.validation import ID, Fields, get_id_list, id_list, int_from_text, require_object

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECS = 5.0  # expired queues linger at most this long past their grace
MIN_SWEEP_INTERVAL_SECS = 0.05  # a tiny grace (tests) must not turn the sweep into a busy loop
MAX_PRESENCE_SUBSCRIPTIONS = 1000  # users one queue may watch
PRESENCE_SUBSCRIBE = "presence.subscribe"  # the bus topic: a subscription taken elsewhere


class RealtimeCommands(AccountCommands):
    """Owns the queue registry and presence of this process (hello needs the accounts)."""

    _sweeper: asyncio.Task[None] | None

    def init_realtime(self) -> None:
        """Create the registry and presence; start the sweeper (needs a running loop)."""
        settings = self.settings
        self.registry = QueueRegistry(
            max_events=settings.queue_max_events, grace_secs=settings.queue_grace_secs
        )
        # Offline transitions come in bursts (a network blip, a deploy, everyone leaving):
        # their last_seen writes are merged into bulk writes, one in flight at a time.
        self.last_seen_writes: Coalescer[str, datetime] = Coalescer(self._store_last_seen_many)
        self.presence = InMemoryPresence(self.registry, **self._presence_options())
        # What each user holds open, counted by the transports (sockets, held polls).
        self.socket_slots = UserSlots(settings.max_sockets_per_user)
        self.poll_slots = UserSlots(settings.max_polls_per_user)
        self.slot_books: list[Any] = []  # their shared counts (share_slots), closed last
        self.metrics.watch(
            queues=self.registry.__len__,
            connections={WEBSOCKET: self.socket_slots.total, LONGPOLL: self.poll_slots.total},
            database_errors=self.store.in_flight.failures,
        )
        # Told the id of every session that ends here (the WebSocket layer closes its sockets).
        self.session_listeners: list[Callable[[str], None]] = []
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def _presence_options(self) -> dict[str, Any]:
        """What presence needs of the service, alone or shared."""
        return {
            "audience": self.presence_audience,
            "is_blocked_between": self.is_blocked_between,
            "store_last_seen": self.last_seen_writes.write,
            "grace_secs": self.settings.presence_grace_secs,
            "deliver": self.publish,
        }

    async def share_presence(self, book: PresenceBook) -> None:
        """Several processes (the bus is shared): presence decided with the others through the
        book, in place of this process's alone (called before any queue exists)."""
        settings = self.settings
        self.presence.close()
        presence = SharedPresence(
            self.registry,
            **self._presence_options(),
            book=book,
            bus=self.bus,
            beat_secs=settings.presence_beat_secs,
            queues_shared=self.shared_queues is not None,
        )
        await presence.start()
        self.presence = presence

    async def share_queues(self, url: str, origin: str) -> None:
        """Several processes: the event queues in Redis (chat/broker/redis_queues.py) in place
        of this process's registry (called before any queue exists, before share_presence)."""
        from chat.broker.redis_queues import RedisQueueRegistry  # only with Redis

        settings = self.settings
        registry = RedisQueueRegistry(
            url,
            origin,
            max_events=settings.queue_max_events,
            grace_secs=settings.queue_grace_secs,
        )
        registry.on_message = self.heard_message
        await registry.start()
        self.registry = registry
        self.shared_queues = registry
        self.metrics.queue_count = registry.__len__

    def share_slots(self, redis: Any, origin: str) -> None:
        """Several processes: the per-user caps on sockets and held polls counted by all of
        them in Redis (chat/broker/redis_slots.py), the process id being the bus's origin."""
        from chat.broker.redis_slots import RedisSlotBook  # only with Redis

        for slots, kind in ((self.socket_slots, "sockets"), (self.poll_slots, "polls")):
            book = RedisSlotBook(redis, kind, origin)
            slots.share(book)
            self.slot_books.append(book)

    def heard_message(self, message: dict[str, Any]) -> None:
        """A message.new reached this process's queues from Redis (ChatService tells its
        sequencer that the seq is taken)."""

    def presence_elsewhere(self, payload: Any) -> None:
        """Another process announced a presence transition (the bus)."""
        if isinstance(self.presence, SharedPresence):
            self.presence.on_notice(payload)

    def bus_gap(self, payload: Any) -> None:
        """The bus may have lost events meant for this process's queues: close them all, so
        that their clients start new ones and read the state again (nothing is lost that way;
        an event missing from a queue that goes on would be)."""
        closed = self.registry.close_all()
        log.warning("the bus may have missed events: %d event queues closed", closed)

    async def _sweep_forever(self) -> None:
        # Never sleep longer than the grace itself: a short grace means short lingering.
        interval = max(
            MIN_SWEEP_INTERVAL_SECS, min(SWEEP_INTERVAL_SECS, self.settings.queue_grace_secs)
        )
        while True:
            await asyncio.sleep(interval)
            try:
                for queue in self.registry.sweep():
                    self.presence.unsubscribe_queue(queue.queue_id)
            except Exception:
                # One bad sweep must not end sweeping for the life of the process.
                log.exception("sweeping event queues failed")

    async def close_realtime(self) -> None:
        """Stop the sweeper and presence timers."""
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
            self._sweeper = None
        self.presence.close()
        await self.last_seen_writes.close()
        for book in self.slot_books:
            await book.close()
        if self.shared_queues is not None:
            await self.shared_queues.close()

    async def _store_last_seen_many(self, times: dict[str, datetime]) -> None:
        await self.store.users.set_last_seen_many(times)
        for user_id, when in times.items():  # the one field of a user that changes
            self.known_users.update(user_id, functools.partial(dataclasses.replace, last_seen=when))

    async def open_queue(
        self, principal: Principal, queue_id: Any, epoch: Any, last_event_id: Any
    ) -> tuple[EventQueue, bool, int]:
        """Resume the client's queue if it can serve every event after the cursor, else a new
        one; returns (queue, resumed, cursor). A resumed cursor acknowledges up to itself.
        With the queues in Redis, a ChatError (503) when Redis cannot be reached."""
        cursor = last_event_id
        if isinstance(cursor, str):  # from a WebSocket URL
            cursor = int_from_text(cursor)
        if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
            cursor = 0
        queue_id = queue_id if isinstance(queue_id, str) and queue_id else None
        epoch = epoch if isinstance(epoch, str) and epoch else None  # "" (an empty arg) = none
        if self.shared_queues is not None:
            return await self.shared_queues.open(
                principal.user_id,
                principal.session_id,
                queue_id,
                epoch,
                cursor,
                self.settings.max_queues_per_user,
            )
        queue = self.registry.find_resumable(
            principal.user_id, principal.session_id, queue_id, epoch, cursor
        )
        if queue is None:
            live, frees_in = self.registry.live_count(principal.user_id)
            if live >= self.settings.max_queues_per_user:
                raise RateLimited(
                    f"Too many event queues open ({live}); close some tabs or resume one.",
                    retry_after_secs=frees_in or SWEEP_INTERVAL_SECS,
                )
            return self.registry.create(principal.user_id, principal.session_id), False, 0
        queue.ack(cursor)  # the contract: last_event_id acknowledges, on either transport
        return queue, True, cursor

    async def hello(
        self, principal: Principal, queue: EventQueue, resumed: bool, cursor: int
    ) -> Reply:
        """The frame that opens a stream: where it resumes, or that state must be re-read."""
        user = await self.signed_in_user(principal)
        return {
            "type": "hello",
            "queue_id": queue.queue_id,
            "epoch": self.registry.epoch,
            "resumed": resumed,
            "last_event_id": cursor,
            "user": user.private(),
            "heartbeat_secs": self.settings.heartbeat_secs,
        }

    async def session_ended(self, session_id: str, reason: str | None = None) -> None:
        """Deliver session.ended to every queue of the session and close them; tell the
        session listeners (a socket whose writes are stuck must not wait for the event)."""
        self.registry.end_session(session_id, reason)
        for listener in self.session_listeners:
            listener(session_id)

    async def presence_audience(self, user_id: str) -> set[str]:
        """Who sees this user's presence changes: every domain's candidates, minus blocks."""
        candidates = await self.presence_candidates(user_id)
        candidates.discard(user_id)
        if not candidates:  # most users of a connect storm: no read of the blocks
            return candidates
        return candidates - await self.blocked_either_way(user_id)

    @command(
        "presence.subscribe",
        takes=Fields(
            {
                "queue_id": {"type": "string", "description": "the queue_id of a hello"},
                "user_ids": id_list(MAX_PRESENCE_SUBSCRIPTIONS),
            },
            ("queue_id",),
        ),
        gives=shapes.reply(
            user_ids=shapes.list_of(ID),
            presence={"type": "object", "additionalProperties": shapes.PRESENCE},
        ),
        errors=(404,),
    )
    async def presence_subscribe(self, principal: Principal, data: Any) -> Reply:
        """Also deliver presence of these users to one of the caller's queues."""
        data = require_object(data)
        queue_id = data.get("queue_id")
        if not isinstance(queue_id, str):
            raise ValidationFailed("queue_id is required.", field="queue_id")
        queue = self.registry.get(queue_id)
        here = queue is not None and not queue.closed and queue.user_id == principal.user_id
        if not here and not await self._queue_elsewhere(principal.user_id, queue_id):
            raise NotFound("No such queue.")
        user_ids = get_id_list(data, "user_ids", max_items=MAX_PRESENCE_SUBSCRIPTIONS)
        visible = [
            uid for uid in user_ids if not await self.is_blocked_between(principal.user_id, uid)
        ]
        if here:
            subscribed = self.presence.subscribe(queue_id, visible)
        else:
            # The subscription lives with the queue's local copy, on the process holding its
            # transport: forwarded there over the bus (presence_subscribe_elsewhere).
            subscribed = list(dict.fromkeys(visible))[:MAX_PRESENCE_SUBSCRIPTIONS]
            self.bus.publish(PRESENCE_SUBSCRIBE, [queue_id, subscribed])
        return {"user_ids": subscribed, "presence": self.presence_of(subscribed)}

    async def _queue_elsewhere(self, user_id: str, queue_id: str) -> bool:
        """With the queues in Redis: the user's queue is open there, its transport held by
        another process (or by none, between two connections)."""
        shared = self.shared_queues
        return shared is not None and await shared.owner(queue_id) == user_id

    def presence_subscribe_elsewhere(self, payload: Any) -> None:
        """Another process took a presence.subscribe for a queue: recorded here if its
        transport is here (its ids were checked there, blocks included)."""
        if not isinstance(payload, list) or len(payload) != 2:
            return
        queue_id, user_ids = payload
        if not isinstance(queue_id, str) or not isinstance(user_ids, list):
            return
        queue = self.registry.get(queue_id)
        if queue is not None and not queue.closed:
            self.presence.subscribe(queue_id, [uid for uid in user_ids if isinstance(uid, str)])
