"""Presence across several processes (--redis-url): a user is online while any process holds
one of its transports.

Each process tells the shared PresenceBook (chat/broker/redis_presence.py) when it starts and
stops holding a user: its own first transport attached, or its offline grace ended after the
last one left (so a reload onto another process does not flap). Exactly one process sees each
transition and announces it: it publishes the presence event to its own queues and sends it on
the bus ("presence"), where every other process does the same for its queues, and keeps it as
the user's status (statuses() answers from memory, as with one process). A process that dies
stops beating; the others release its users after ALIVE_SECS, and announce offline those that
did not reconnect elsewhere.

Pure Python apart from what it is given: the book and the bus are Redis behind interfaces.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime
from typing import Any

from chat.broker import Bus, PresenceBook
from chat.models import iso, parse_iso, utcnow
from chat.presence import InMemoryPresence, Status, presence_event

log = logging.getLogger(__name__)

TOPIC = "presence"


class SharedPresence(InMemoryPresence):
    """InMemoryPresence whose transitions are decided by the shared book."""

    __slots__ = ("_beat_secs", "_beater", "_book", "_bus", "_held", "_queues_shared", "_versions")

    def __init__(
        self,
        *args: Any,
        book: PresenceBook,
        bus: Bus,
        beat_secs: float,
        queues_shared: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._book = book
        self._bus = bus
        self._beat_secs = beat_secs
        # Queues in Redis: the announcing process's publish reached every queue of the
        # audience already; the others only serve the presence subscriptions they hold.
        self._queues_shared = queues_shared
        self._held: set[str] = set()  # users this process holds in the book
        self._versions: dict[str, int] = {}  # the last transition known of each user
        self._beater: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Know who is online now, then beat and reap for the life of the process."""
        await self._book.heartbeat()
        self._online.update(await self._book.online_users())
        self._beater = asyncio.get_running_loop().create_task(self._beat_forever())

    # -- this process's transitions ---------------------------------------------------------

    def user_attached(self, user_id: str) -> None:
        if self._closed:
            return
        timer = self._offline_timers.pop(user_id, None)
        if timer is not None:  # back within this process's grace: still held in the book
            timer.cancel()
            return
        if user_id in self._held:
            return
        self._held.add(user_id)
        self._chain(user_id, functools.partial(self._hold, user_id))

    on_user_attached = user_attached

    def _holds(self, user_id: str) -> bool:
        return user_id in self._held  # online here, whatever the others hold

    def _went_offline(self, user_id: str) -> None:
        self._held.discard(user_id)  # offline only if no other process holds the user
        self._chain(user_id, functools.partial(self._release, user_id))

    async def _hold(self, user_id: str) -> None:
        try:
            version = await self._book.attach(user_id)
        except Exception as exc:  # Redis away: decide as one process would
            log.warning("presence: the shared book is unreachable (%s)", exc)
            version = -1 if user_id not in self._online else 0
        if version:
            await self._transition(user_id, "online", None, version)

    async def _release(self, user_id: str) -> None:
        try:
            version = await self._book.detach(user_id)
        except Exception as exc:
            log.warning("presence: the shared book is unreachable (%s)", exc)
            version = -1
        if version:
            await self._transition(user_id, "offline", utcnow(), version)

    async def _transition(
        self, user_id: str, status: Status, last_seen: datetime | None, version: int
    ) -> None:
        """Announce a transition this process saw: here, and to the others."""
        if version > 0:
            self._versions[user_id] = version
        self._set(user_id, status, last_seen)
        self._bus.publish(TOPIC, [user_id, status, iso(last_seen), version])
        await self._run_announcement(user_id, status, last_seen)

    def _set(self, user_id: str, status: Status, last_seen: datetime | None) -> None:
        if status == "online":
            self._online.add(user_id)
            self._last_seen.pop(user_id, None)
        else:
            self._online.discard(user_id)
            if last_seen is not None:
                self._last_seen[user_id] = last_seen

    # -- the others' transitions -------------------------------------------------------------

    def on_notice(self, payload: Any) -> None:
        """Another process announced a transition: keep it, and tell this process's queues."""
        if self._closed or not isinstance(payload, list) or len(payload) != 4:
            return
        user_id, status, seen, version = payload
        if not isinstance(user_id, str) or status not in ("online", "offline"):
            return
        if not isinstance(version, int) or (0 < version <= self._versions.get(user_id, 0)):
            return  # an older transition, heard after a newer one
        if version > 0:
            self._versions[user_id] = version
        last_seen = parse_iso(seen) if isinstance(seen, str) else None
        self._set(user_id, status, last_seen)
        # The announcing process stored last_seen; here it is only published.
        event_step = functools.partial(self._publish_here, user_id, status, last_seen)
        self._chain(user_id, event_step)

    async def _publish_here(self, user_id: str, status: Status, last_seen: datetime | None) -> None:
        try:
            event = presence_event(user_id, status, last_seen)
            await self._publish(event, to_audience=not self._queues_shared)
        except Exception:
            log.exception("publishing presence failed for user %s", user_id)

    # -- liveness -----------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._beat_secs)
            try:
                if not await self._book.heartbeat():
                    # Taken for dead (a pause, Redis lost its data): hold our users again.
                    log.warning("presence: this process was taken for dead; holding its users")
                    for user_id in list(self._held):
                        self._chain(user_id, functools.partial(self._hold_again, user_id))
                for user_id, version in await self._book.reap():
                    step = functools.partial(
                        self._transition, user_id, "offline", utcnow(), version
                    )
                    self._chain(user_id, step)
            except Exception as exc:
                log.warning("presence: heartbeat failed (%s)", exc)

    async def _hold_again(self, user_id: str) -> None:
        if user_id in self._held:
            version = await self._book.attach(user_id)
            if version:
                await self._transition(user_id, "online", None, version)

    def close(self) -> None:
        super().close()
        if self._beater is not None:
            self._beater.cancel()
            self._beater = None
