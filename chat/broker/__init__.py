"""What several server processes share: a bus of notices between them.

One process (the default) needs nothing but the database, and its bus is LocalBus: every
notice it would send is already acted on here. With --redis-url the processes share a Redis
(chat/broker/redis.py): a notice published by one process reaches the handlers of every other
at once, in the order it was published. Topics:

- "events": [user ids, event]: an event published here, for the queues of those users held by
  the other processes (every message, receipt, typing, group and friend event);
- "presence": a user's presence changed (chat/shared_presence.py);
- "session.ended", "blocks.changed": what a process would otherwise learn only when its caches
  expire (settings.session_check_secs for a session);
- "bus.gap" (GAP): this process may have missed notices (see chat/broker/redis.py).

Event queues themselves stay in the process that made them: a client resumes on the process
that holds its queue, and elsewhere it starts a new one (resumed: false) and reads the state
again (../shared/PROTOCOL.md section 12 asks for queues in Redis; not built yet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

Handler = Callable[[Any], None]


GAP = "bus.gap"


class Bus(Protocol):
    """Notices between the processes of one deployment, by topic; best effort, at once."""

    shared: bool  # False when there is nobody else: publishers may skip building notices

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        """Begin receiving: handlers[topic](payload) for each notice another process sent."""

    def publish(self, topic: str, payload: Any) -> None:
        """Send a notice (JSON-serializable payload) to the other processes; never blocks."""

    async def close(self) -> None:
        """Stop receiving and sending."""


class LocalBus:
    """One process: nobody else to tell."""

    shared = False

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        return None

    def publish(self, topic: str, payload: Any) -> None:
        return None

    async def close(self) -> None:
        return None


class PresenceBook(Protocol):
    """Which processes hold a transport of which users, shared by every process (Redis), so
    that exactly one process announces each online/offline transition of a user.

    Each transition returns its version (a per-user counter, 0 for "no transition"): a process
    that hears two announcements of one user out of order keeps the higher one.
    """

    async def attach(self, user_id: str) -> int:
        """This process holds the user now; the version if no other process did."""

    async def detach(self, user_id: str) -> int:
        """This process no longer holds the user; the version if no other process does."""

    async def online_users(self) -> list[str]:
        """Every user some process holds (processes that died count until reaped)."""

    async def heartbeat(self) -> bool:
        """Tell the others this process lives; False if it had been taken for dead (its users
        were released: attach them again)."""

    async def reap(self) -> list[tuple[str, int]]:
        """Release the users of processes that stopped beating: (user, version) of each that
        no process holds any more, for this process to announce offline."""
