"""What several server processes share: a bus of notices between them.

One process (the default) needs nothing but the database, and its bus is LocalBus: every
notice it would send is already acted on here. With --redis-url the processes share a Redis
(chat/broker/redis.py): a notice published by one process reaches the handlers of every other
at once, in the order it was published. Topics:

- "events": [user ids, event]: an event published here, for the queues of those users held by
  the other processes (every message, receipt, typing, group and friend event). Not used when
  the queues themselves are in Redis (chat/broker/redis_queues.py, with --redis-url): events
  are appended to them there, and a process learns of them through the queues' own channel;
- "presence": a user's presence changed (chat/shared_presence.py);
- "presence.subscribe": [queue id, user ids]: a presence.subscribe taken by another process
  for a queue whose transport is here (chat/realtime.py);
- "session.ended", "blocks.changed": what a process would otherwise learn only when its caches
  expire (settings.session_check_secs for a session);
- "bus.gap" (GAP): this process may have missed notices (see chat/broker/redis.py).

With --redis-url the event queues are in Redis too (SharedQueues, chat/broker/redis_queues.py):
a client resumes or polls on any process (../shared/PROTOCOL.md section 12).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from chat.events import EventQueue

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


class SharedQueues(Protocol):
    """Event queues every process shares (Redis): opened anywhere, fed by every publisher."""

    async def open(
        self,
        user_id: str,
        session_id: str,
        queue_id: str | None,
        epoch: str | None,
        cursor: int,
        max_live: int,
    ) -> tuple[EventQueue, bool, int]:
        """(queue, resumed, cursor): the client's queue resumed, else a new one; RateLimited
        past max_live queues of the user; a ChatError (503) when the queues are unreachable."""

    async def owner(self, queue_id: str) -> str | None:
        """The user of this open queue, whichever process holds its transport (None: no such
        queue, or unreachable)."""

    async def settled(self) -> None:
        """Return once the events published so far are stored (bounded)."""

    def skip(self, conversation_id: str, seq: int) -> None:
        """The seq holds no message: the conversation's later ones do not wait for it."""

    async def close(self) -> None:
        """Store what is waiting, then stop."""
