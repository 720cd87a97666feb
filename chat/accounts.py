"""Accounts: sign-up, sign-in, sign-out that revokes, and the current user."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from chat import shapes
from chat.batching import CachedReads, Coalescer
from chat.commands import (
    CLIENT,
    Client,
    Command,
    Principal,
    Reply,
    ServiceBase,
    command,
    retrieve_exception,
)
from chat.errors import (
    DatabaseUnavailable,
    InvalidCredentials,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from chat.limits import AttemptLimiter, Attempts
from chat.models import Session, User, iso, utcnow
from chat.validation import (
    EMAIL,
    NONEMPTY_TEXT,
    PASSWORD,
    USERNAME,
    Fields,
    parse_login,
    parse_register,
)

SESSION_CACHE_MAX = 100_000  # sessions remembered at most (least recently checked dropped)
USER_CACHE_MAX = 100_000  # users kept for hello at most (least recently read dropped)
# A session's last use is written at most this often: the sessions list needs the minute, and
# a write per request (a long-poll every few seconds) would cost more than the request.
SESSION_TOUCH_SECS = 60.0
USER_AGENT_MAX = 256  # characters of a User-Agent kept with a session


class SessionCache:
    """Sessions found valid in the database within the last `ttl` seconds.

    A revocation made here (forget) takes effect at once; one made by another process
    sharing the database is seen within ttl. The token's own expiry is checked on every
    request regardless (it equals the session's)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = SESSION_CACHE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._valid: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        # Revoked here within ttl: a check that read the session just before the revocation
        # must not put it back.
        self._ended: dict[str, float] = {}

    def valid(self, session_id: str, user_id: str) -> bool:
        """True if the session was found valid for this user within ttl."""
        entry = self._valid.get(session_id)
        if entry is None:
            return False
        if entry[1] <= self._clock():
            del self._valid[session_id]
            return False
        return entry[0] == user_id

    def remember(self, session_id: str, user_id: str) -> None:
        if self._ttl <= 0 or session_id in self._ended:
            return
        self._valid[session_id] = (user_id, self._clock() + self._ttl)
        self._valid.move_to_end(session_id)
        while len(self._valid) > self._max:
            self._valid.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """The session was revoked: never trust it from memory again."""
        now = self._clock()
        self._valid.pop(session_id, None)
        self._ended = {s: until for s, until in self._ended.items() if until > now}
        self._ended[session_id] = now + self._ttl

    def __len__(self) -> int:
        return len(self._valid)


class AccountCommands(ServiceBase):
    """Sign-up, sign-in, sign-out and the current user."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.settings
        self.checked_sessions = SessionCache(settings.session_check_secs)
        # Every connect's hello carries the user's private view. Only last_seen ever changes
        # (RealtimeCommands updates it here as it stores it), so users are read once.
        self.known_users: CachedReads[str, User] = CachedReads(self.store.users.get, USER_CACHE_MAX)
        # One limiter per rule, whichever transport the attempt comes over.
        self.login_failures_by_account: Attempts = AttemptLimiter(
            settings.login_failures_per_account, settings.login_window_secs
        )
        self.login_failures_by_address: Attempts = AttemptLimiter(
            settings.login_failures_per_address, settings.login_window_secs
        )
        self.signups_by_address: Attempts = AttemptLimiter(
            settings.signups_per_address, settings.signup_window_secs
        )
        # session id -> when its last use was written (monotonic), least recent first.
        self._session_touched: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()  # writes nobody waits for
        self.session_uses: Coalescer[str, tuple[datetime, str | None]] = Coalescer(
            self.store.sessions.touch_many
        )

    async def run_public(
        self, cmd: Command, principal: Principal | None, data: Any, address: str | None
    ) -> Reply:
        """Sign-ins and sign-ups cost a bcrypt hash: limited per client address. An attempt
        is taken before it runs (so concurrent ones count too) and given back unless it
        counts: a sign-in only when it failed, a sign-up unless its input was invalid."""
        limiter = {
            "auth.login": self.login_failures_by_address,
            "auth.register": self.signups_by_address,
        }.get(cmd.name)
        if limiter is None or address is None:
            return await super().run_public(cmd, principal, data, address)
        wait = await limiter.take(address)
        if wait:
            what = "sign-ins" if cmd.name == "auth.login" else "sign-ups"
            raise RateLimited(f"Too many {what} from this address; wait.", retry_after_secs=wait)
        counts = cmd.name == "auth.register"
        try:
            reply = await super().run_public(cmd, principal, data, address)
        except InvalidCredentials:
            counts = True
            raise
        except ValidationFailed:
            counts = False
            raise
        finally:
            if not counts:
                await limiter.refund(address)
        return reply

    async def authenticate(self, token: str | None, *, address: str | None = None) -> Principal:
        """The principal of a valid, unrevoked, unexpired token; Unauthorized otherwise. A
        use of the session from `address` (see session_used)."""
        if not token:
            raise Unauthorized("Sign in first.")
        claims = self.tokens.decode(token)  # signature and expiry, every time
        principal = Principal(claims.user_id, claims.session_id, claims.expires_at)
        await self.check_session(principal)
        self.session_used(principal, address)
        return principal

    def session_used(self, principal: Principal, address: str | None) -> None:
        """Record the session's last use (and address, when known) in the background, at most
        once per SESSION_TOUCH_SECS in this process; nothing to wait for."""
        session_id = principal.session_id
        now = time.monotonic()
        touched = self._session_touched.get(session_id)
        if touched is not None and now - touched < SESSION_TOUCH_SECS:
            return
        self._touched(session_id, now)
        # Together with the other uses of the moment: a connect storm (a restart, and every
        # client back at once) is a few bulk writes, not one write per connect.
        self.session_uses.put(session_id, (utcnow(), address))

    def _touched(self, session_id: str, now: float) -> None:
        self._session_touched[session_id] = now
        self._session_touched.move_to_end(session_id)
        while len(self._session_touched) > SESSION_CACHE_MAX:
            self._session_touched.popitem(last=False)

    def in_background(self, work: Awaitable[Any]) -> None:
        """Run work nobody waits for, holding it until done (a task only the loop knows of
        may be collected); its failure is dropped."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(retrieve_exception)

    async def check_session(self, principal: Principal) -> None:
        """Unauthorized unless the session is unexpired and not revoked. Cheap: a revocation
        made in this process is known at once, a session checked in the database within
        settings.session_check_secs is trusted from memory (another process's revocation is
        seen within that)."""
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise Unauthorized("The session has expired; sign in again.")
        if self.checked_sessions.valid(principal.session_id, principal.user_id):
            return
        session: Session | BaseException | None
        if principal.user_id in self.known_users:  # the common case: no tasks to gather
            session = await self.store.sessions.get(principal.session_id)
        else:
            # The account is read beside the session: a connect's hello needs it next, and
            # waits for one round trip instead of two (bench.compare (a): a connect storm's
            # reads of sessions and of users go out in batches, one batch of each in flight
            # at a time). A failed read of the user is read again by whoever needs it.
            session, _ = await asyncio.gather(
                self.store.sessions.get(principal.session_id),
                self.known_users.get(principal.user_id),
                return_exceptions=True,
            )
            if isinstance(session, BaseException):
                raise session
        if (
            session is None
            or session.revoked
            or session.user_id != principal.user_id
            or session.expires_at <= datetime.now(UTC)
        ):
            raise Unauthorized("The session has ended; sign in again.")
        self.checked_sessions.remember(principal.session_id, principal.user_id)
        # A use recorded less than SESSION_TOUCH_SECS ago (by another process, or before a
        # restart) counts as this process's own: at most one write a minute in all, not one
        # per process (a connect storm over several processes wrote most of its sessions).
        if session.last_used_at is not None and principal.session_id not in self._session_touched:
            age = (datetime.now(UTC) - session.last_used_at).total_seconds()
            if 0 <= age < SESSION_TOUCH_SECS:
                self._touched(principal.session_id, time.monotonic() - age)

    async def _start_session(self, user: User) -> Reply:
        expires_at = self.tokens.expiry()
        client = CLIENT.get() or Client()
        user_agent = client.user_agent[:USER_AGENT_MAX] if client.user_agent else None
        session = await self.store.sessions.create(
            user.id, expires_at, address=client.address, user_agent=user_agent
        )
        # Created here: its first connect (usually right after) need not read it back.
        self.checked_sessions.remember(session.id, user.id)
        self._touched(session.id, time.monotonic())  # created_at is its first use
        token = self.tokens.issue(user.id, session.id, expires_at)
        return {"user": user.private(), "token": token, "expires_at": iso(expires_at)}

    @command(
        "auth.register",
        public=True,
        status=201,
        takes=Fields(
            {"username": USERNAME, "email": EMAIL, "password": PASSWORD},
            ("username", "email", "password"),
        ),
        gives=shapes.ref("Session"),
        errors=(409, 429),
    )
    async def register(self, principal: Principal | None, data: Any) -> Reply:
        """Create an account and sign it in; 409 naming the field when taken."""
        fields = parse_register(data)
        password_hash = await self.hasher.hash(fields.password)
        user = await self.store.users.create(fields.username, fields.email, password_hash)
        return await self._start_session(user)

    @command(
        "auth.login",
        public=True,
        takes=Fields({"login": NONEMPTY_TEXT, "password": NONEMPTY_TEXT}, ("login", "password")),
        gives=shapes.ref("Session"),
        errors=(401, 403, 429),
    )
    async def login(self, principal: Principal | None, data: Any) -> Reply:
        """Sign in by username or email; one error for an unknown user and a wrong password."""
        fields = parse_login(data)
        found = await self.store.users.get_login(fields.login)
        user, password_hash = found if found else (None, None)
        # Unknown logins are limited like accounts.
        account = user.id if user is not None else "login:" + fields.login.casefold()
        await self.check_password(
            account, fields.password, password_hash, "Wrong username/email or password."
        )
        assert user is not None  # a hash matched: the user exists
        await self.check_sign_in(user)
        return await self._start_session(user)

    async def check_sign_in(self, user: User) -> None:
        """Hook: raise when this account may not sign in now (chat/moderation.py)."""

    async def check_password(
        self, account: str, password: str, password_hash: str | None, wrong: str
    ) -> None:
        """InvalidCredentials (saying `wrong`) unless the password matches the hash (None:
        never, at the same cost). Failures count against the account's sign-in allowance,
        whatever asks (a sign-in, a password change, an account's deletion); past it,
        RateLimited also for the right password (else the limit would tell a guesser when it
        guessed right)."""
        wait = await self.login_failures_by_account.take(account)
        if wait:
            raise RateLimited(
                "Too many failed sign-ins for this account; wait.", retry_after_secs=wait
            )
        if not await self.hasher.verify(password, password_hash):
            raise InvalidCredentials(wrong)
        await self.login_failures_by_account.refund(account)  # only failures count

    @command("auth.logout", gives=shapes.EMPTY)
    async def logout(self, principal: Principal, data: Any) -> Reply:
        """Revoke this session: its token stops working at once, in every process sharing the
        bus (--redis-url; in another process sharing only the database, within
        settings.session_check_secs)."""
        await self.store.sessions.revoke(principal.session_id)
        await self.end_sessions([principal.session_id])
        return {}

    async def end_sessions(self, session_ids: Iterable[str], reason: str | None = None) -> None:
        """Sessions revoked (or deleted) in the database: their tokens stop working at once
        here and in every process on the bus, their queues get session.ended (with `reason`,
        unless it is a logout) and close, and their sockets close."""
        for session_id in session_ids:
            self.checked_sessions.forget(session_id)  # after the write: see SessionCache.forget
            self._session_touched.pop(session_id, None)
            await self.session_ended(session_id, reason)
            notice = session_id if reason is None else [session_id, reason]
            self.bus.publish("session.ended", notice)

    def session_ended_elsewhere(self, payload: Any) -> None:
        """Another process ended this session (a bus notice: its id, or [id, reason]): the
        same here."""
        reason = None
        if isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], str):
            payload, reason = payload
        if not isinstance(payload, str):
            return
        self.checked_sessions.forget(payload)
        self.in_background(self.session_ended(payload, reason))

    async def session_ended(self, session_id: str, reason: str | None = None) -> None:
        """Hook: tell the session's live clients it ended (the real-time layer overrides it)."""

    @command("me", gives=shapes.USER)
    async def me(self, principal: Principal, data: Any) -> Reply:
        """The signed-in user, with email and friend code."""
        return {"user": (await self.signed_in_user(principal)).private()}

    async def signed_in_user(self, principal: Principal) -> User:
        """The caller's account, from memory once read; Unauthorized if it does not exist."""
        user = await self.known_users.get(principal.user_id)
        if user is None:
            raise Unauthorized("The account no longer exists.")
        return user

    async def database_healthy(self) -> bool:
        """True when the database answers a ping within the configured timeout."""
        try:
            await self.store.ping()
        except DatabaseUnavailable:
            return False
        return True
