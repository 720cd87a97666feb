"""ChatService: every command of the product, assembled from one mixin per domain."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from chat.accounts import AccountCommands
from chat.auth import PasswordHasher, TokenCodec
from chat.broker import Handler
from chat.commands import Command, Principal, Reply
from chat.config import Settings, redact_url
from chat.groups import GroupCommands
from chat.messages import MessageCommands
from chat.privacy import PrivacyCommands
from chat.realtime import RealtimeCommands
from chat.social import SocialCommands
from chat.store import Store

__all__ = ["BusUnavailable", "ChatService", "Command", "Principal", "Reply"]

BUS_CONNECT_SECS = 5.0  # how long start-up waits for Redis before giving up


class BusUnavailable(Exception):
    """The configured Redis could not be reached at start-up."""


class ChatService(
    PrivacyCommands,
    RealtimeCommands,
    MessageCommands,
    GroupCommands,
    SocialCommands,
    AccountCommands,
):
    """The core: validate, check access, store, then publish."""

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
        return service

    async def start_bus(self) -> None:
        """Join the other processes (--redis-url), or stay alone; BusUnavailable when Redis
        does not answer within BUS_CONNECT_SECS."""
        if self.settings.redis_url:
            from chat.broker.redis import RedisBus  # only deployments with Redis import it

            bus = RedisBus(self.settings.redis_url)
            try:
                await asyncio.wait_for(bus.ping(), BUS_CONNECT_SECS)
                await asyncio.wait_for(bus.start(self.bus_handlers()), BUS_CONNECT_SECS)
            except (TimeoutError, ConnectionError) as exc:
                await bus.close()
                raise BusUnavailable(
                    f"cannot reach Redis at {redact_url(self.settings.redis_url)}: {exc}"
                ) from exc
            self.bus = bus

    def bus_handlers(self) -> Mapping[str, Handler]:
        """What a notice from another process does here, by topic."""
        return {
            "session.ended": self.session_ended_elsewhere,
            "blocks.changed": self.blocks_changed_elsewhere,
        }

    async def close(self) -> None:
        """Stop background work; the store is closed by its owner."""
        await self.close_sends()
        await self.close_files()
        await self.close_realtime()
        await self.bus.close()
