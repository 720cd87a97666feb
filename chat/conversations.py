"""Conversations: DMs and groups, messages stored before delivered, history, read state."""

from __future__ import annotations

from chat.commands import ServiceBase


class ConversationCommands(ServiceBase):
    """Conversations, messages, groups, read pointers, typing."""
