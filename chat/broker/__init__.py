"""What several server processes share: a bus of notices between them.

One process (the default) needs nothing but the database, and its bus is LocalBus: every
notice it would send is already acted on here. With --redis-url the processes share a Redis
(chat/broker/redis.py): a notice published by one process reaches the handlers of every other
at once (session revocation, changed blocks), where a process would otherwise wait for its
caches to expire (settings.session_check_secs for a session).

The contract's several-process delivery (event queues, fan-out and presence through Redis,
../shared/PROTOCOL.md section 12) builds on this and is not here yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

Handler = Callable[[Any], None]


class Bus(Protocol):
    """Notices between the processes of one deployment, by topic; best effort, at once."""

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        """Begin receiving: handlers[topic](payload) for each notice another process sent."""

    def publish(self, topic: str, payload: Any) -> None:
        """Send a notice (JSON-serializable payload) to the other processes; never blocks."""

    async def close(self) -> None:
        """Stop receiving and sending."""


class LocalBus:
    """One process: nobody else to tell."""

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        return None

    def publish(self, topic: str, payload: Any) -> None:
        return None

    async def close(self) -> None:
        return None
