"""Social graph: user directory and search, friend requests, friends, blocking."""

from __future__ import annotations

from chat.commands import ServiceBase


class SocialCommands(ServiceBase):
    """Users, friends and blocks."""
