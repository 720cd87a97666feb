"""ChatService: every command of the product, assembled from one mixin per domain."""

from __future__ import annotations

from chat.accounts import AccountCommands
from chat.auth import PasswordHasher, TokenCodec
from chat.commands import Command, Principal, Reply
from chat.config import Settings
from chat.groups import GroupCommands
from chat.messages import MessageCommands
from chat.privacy import PrivacyCommands
from chat.realtime import RealtimeCommands
from chat.social import SocialCommands
from chat.store import Store

__all__ = ["ChatService", "Command", "Principal", "Reply"]


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
        return service

    async def close(self) -> None:
        """Stop background work; the store is closed by its owner."""
        await self.close_sends()
        await self.close_realtime()
