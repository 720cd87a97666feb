"""ChatService: every command of the product, assembled from one mixin per domain."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chat.auth import PasswordHasher, TokenCodec
from chat.broker import GAP, Handler
from chat.commands import Command, Principal, Reply
from chat.config import Settings, redact_url
from chat.limits import AttemptLimiter
from chat.moderation import ModerationCommands
from chat.push import PushCommands
from chat.realtime import PRESENCE_SUBSCRIBE
from chat.store import Store

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BusUnavailable", "ChatService", "Command", "Principal", "Reply"]

BUS_CONNECT_SECS = 5.0  # how long start-up waits for Redis before giving up


class BusUnavailable(Exception):
    """The configured Redis could not be reached at start-up."""


class ChatService(ModerationCommands, PushCommands):
    """The core: validate, check access, store, then publish. Its commands come from one mixin
    per domain; ModerationCommands (chat/moderation.py) and PushCommands (chat/push.py)
    stand on all of them."""

    @classmethod
    def build(cls, settings: Settings, store: Store) -> ChatService:
        """A service for these settings, with its queues and presence (needs a running loop)."""
        service = cls(
            settings,
            store,
            PasswordHasher(settings.bcrypt_rounds),
            TokenCodec(settings.secret, settings.token_ttl_secs),
        )
        service.init_realtime()
        service.init_files()
        service.init_notifications()
        service.init_push()
        return service

    async def start_bus(self) -> None:
        """Join the other processes (--redis-url), or stay alone; BusUnavailable when Redis
        does not answer within BUS_CONNECT_SECS."""
        if self.settings.redis_url:
            # Only deployments with Redis import it.
            from redis.exceptions import RedisError

            from chat.broker.redis import RedisBus
            from chat.broker.redis_seqs import RedisSeqs

            bus = RedisBus(self.settings.redis_url)
            try:
                await asyncio.wait_for(bus.ping(), BUS_CONNECT_SECS)
                await asyncio.wait_for(bus.start(self.bus_handlers()), BUS_CONNECT_SECS)
                self.bus = bus
                self.share_limits(bus.redis)
                self.shared_seqs = RedisSeqs(self.settings.redis_url)  # conversations' seqs
                await asyncio.wait_for(
                    self.share_queues(self.settings.redis_url, bus.origin), BUS_CONNECT_SECS
                )
                book = bus.presence_book(self.settings.presence_alive_secs)
                await asyncio.wait_for(self.share_presence(book), BUS_CONNECT_SECS)
                self.share_slots(bus.redis, bus.origin)  # counted against the book's heartbeats
            except (TimeoutError, ConnectionError, RedisError, OSError) as exc:
                await bus.close()
                raise BusUnavailable(
                    f"cannot reach Redis at {redact_url(self.settings.redis_url)}: {exc}"
                ) from exc

    def share_limits(self, redis: Redis) -> None:
        """Count the sign-in, sign-up and typing limits with every process, in Redis."""
        from chat.broker.redis_limits import RedisAttempts, RedisTypingThrottle

        for attr, name in (
            ("login_failures_by_account", "login.account"),
            ("login_failures_by_address", "login.address"),
            ("signups_by_address", "signup.address"),
            ("service_limiter", "service.key"),
        ):
            alone = getattr(self, attr)
            assert isinstance(alone, AttemptLimiter)
            setattr(self, attr, RedisAttempts(redis, name, alone))
        self.typing_throttle = RedisTypingThrottle(
            redis, self.settings.typing_per_sec, self.settings.typing_burst
        )

    def heard_message(self, message: dict[str, Any]) -> None:
        """Another process's message.new: its seq is taken, so that this process's next send
        to the conversation follows it rather than colliding with it in the database."""
        conversation_id, seq = message.get("conversation_id"), message.get("seq")
        if isinstance(conversation_id, str) and isinstance(seq, int):
            self.sequencer.heard(conversation_id, seq)

    def bus_handlers(self) -> Mapping[str, Handler]:
        """What a notice from another process does here, by topic."""
        return {
            "events": self.events_elsewhere,
            "presence": self.presence_elsewhere,
            PRESENCE_SUBSCRIBE: self.presence_subscribe_elsewhere,
            "session.ended": self.session_ended_elsewhere,
            "blocks.changed": self.blocks_changed_elsewhere,
            GAP: self.bus_gap,
        }

    async def close(self) -> None:
        """Stop background work; the store is closed by its owner."""
        await self.close_sends()
        await self.close_files()
        await self.close_push()
        await self.close_realtime()
        await self.session_uses.close()  # a use of the last instant may be lost: no matter
        await self.bus.close()
