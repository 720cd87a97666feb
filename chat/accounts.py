"""Accounts: sign-up, sign-in, sign-out that revokes, and the current user."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chat.commands import Principal, Reply, ServiceBase, command
from chat.errors import DatabaseUnavailable, InvalidCredentials, Unauthorized
from chat.models import User, iso
from chat.validation import parse_login, parse_register


class AccountCommands(ServiceBase):
    """Sign-up, sign-in, sign-out and the current user."""

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of a valid, unrevoked, unexpired token; Unauthorized otherwise."""
        if not token:
            raise Unauthorized("Sign in first.")
        claims = self.tokens.decode(token)
        session = await self.store.sessions.get(claims.session_id)
        if (
            session is None
            or session.revoked
            or session.user_id != claims.user_id
            or session.expires_at <= datetime.now(UTC)
        ):
            raise Unauthorized("The session has ended; sign in again.")
        return Principal(user_id=claims.user_id, session_id=claims.session_id)

    async def _start_session(self, user: User) -> Reply:
        expires_at = self.tokens.expiry()
        session = await self.store.sessions.create(user.id, expires_at)
        token = self.tokens.issue(user.id, session.id, expires_at)
        return {"user": user.private(), "token": token, "expires_at": iso(expires_at)}

    @command("auth.register", public=True, status=201)
    async def register(self, principal: Principal | None, data: Any) -> Reply:
        """Create an account and sign it in; 409 naming the field when taken."""
        fields = parse_register(data)
        password_hash = await self.hasher.hash(fields.password)
        user = await self.store.users.create(fields.username, fields.email, password_hash)
        return await self._start_session(user)

    @command("auth.login", public=True)
    async def login(self, principal: Principal | None, data: Any) -> Reply:
        """Sign in by username or email; one error for an unknown user and a wrong password."""
        fields = parse_login(data)
        found = await self.store.users.get_login(fields.login)
        user, password_hash = found if found else (None, None)
        if not await self.hasher.verify(fields.password, password_hash) or user is None:
            raise InvalidCredentials("Wrong username/email or password.")
        return await self._start_session(user)

    @command("auth.logout")
    async def logout(self, principal: Principal, data: Any) -> Reply:
        """Revoke this session: its token stops working everywhere at once."""
        await self.store.sessions.revoke(principal.session_id)
        await self.session_ended(principal)
        return {}

    async def session_ended(self, principal: Principal) -> None:
        """Hook: tell the session's live clients it ended (the real-time layer overrides it)."""

    @command("me")
    async def me(self, principal: Principal, data: Any) -> Reply:
        """The signed-in user, with email and friend code."""
        user = await self.store.users.get(principal.user_id)
        if user is None:
            raise Unauthorized("The account no longer exists.")
        return {"user": user.private()}

    async def database_healthy(self) -> bool:
        """True when the database answers a ping within the configured timeout."""
        try:
            await self.store.ping()
        except DatabaseUnavailable:
            return False
        return True
