"""The command table: every command is a marked service method, reachable over both transports."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from chat.auth import PasswordHasher, TokenCodec
from chat.broker import Bus, LocalBus, SharedQueues
from chat.config import Settings
from chat.errors import NotFound, Unauthorized
from chat.events import Event, QueueRegistry
from chat.metrics import Metrics
from chat.presence import Presence
from chat.store import Store
from chat.store.conversations import Conversation
from chat.store.notifications import NewNotification
from chat.validation import NO_FIELDS, Fields, Schema


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the signed-in user and the session its token belongs to."""

    user_id: str
    session_id: str
    expires_at: datetime | None = None  # the token's expiry (None: not known to the caller)


@dataclasses.dataclass(frozen=True)
class Client:
    """Where the command being run comes from: what a session it starts records of it."""

    address: str | None = None
    user_agent: str | None = None


# Set by run() for the command under way (its awaits included), so that a sign-in deep in a
# command can note its client without every command taking one more argument.
CLIENT: contextvars.ContextVar[Client | None] = contextvars.ContextVar("chat_client", default=None)

Reply = dict[str, Any]


class StatusReply(dict[str, Any]):
    """A reply whose REST status is not the command's usual one (e.g. 200 instead of 201)."""

    def __init__(self, status: int, data: Reply) -> None:
        super().__init__(data)
        self.status = status


CommandFn = Callable[[Principal | None, Any], Awaitable[Reply]]
F = TypeVar("F", bound=Callable[..., Awaitable[Reply]])


@dataclasses.dataclass(frozen=True)
class CommandSpec:
    """What a command is, apart from its code: the OpenAPI document is generated from this."""

    name: str
    public: bool = False  # callable before authentication (register, login)
    status: int = 200  # the HTTP status of success over REST
    takes: Fields = NO_FIELDS  # its input fields (path parameters included)
    gives: Schema = dataclasses.field(default_factory=dict)  # its reply ({}: not described)
    errors: tuple[int, ...] = ()  # statuses beyond 400, 401 and 503 that it may answer
    also: tuple[int, ...] = ()  # other success statuses (a StatusReply's)
    summary: str = ""  # one line; else the method's docstring's first line


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    fn: CommandFn
    public: bool  # callable before authentication (register, login)
    status: int  # the HTTP status of success over REST
    spec: CommandSpec


def command(
    name: str,
    *,
    public: bool = False,
    status: int = 200,
    takes: Fields = NO_FIELDS,
    gives: Schema | None = None,
    errors: tuple[int, ...] = (),
    also: tuple[int, ...] = (),
) -> Callable[[F], F]:
    """Mark a service method as the command `name`, reachable over REST and WebSocket; takes,
    gives and errors describe it in the OpenAPI document (chat/openapi.py)."""

    def mark(fn: F) -> F:
        summary = (fn.__doc__ or "").strip().split("\n\n")[0]
        spec = CommandSpec(name, public, status, takes, gives or {}, errors, also, summary)
        fn.__chat_command__ = spec  # type: ignore[attr-defined]
        return fn

    return mark


class ServiceBase:
    """Shared state of the command mixins; builds the command table from marked methods."""

    registry: QueueRegistry  # every client's event queue: publish here after storing
    presence: Presence
    # The queues when they are in Redis (then also the registry); None in one process.
    shared_queues: SharedQueues | None = None

    def __init__(
        self, settings: Settings, store: Store, hasher: PasswordHasher, tokens: TokenCodec
    ) -> None:
        self.settings = settings
        self.store = store
        self.hasher = hasher
        self.tokens = tokens
        self.metrics = Metrics()  # what /metrics shows of this service
        # The other processes (chat/broker/): none until start_bus joins them.
        self.bus: Bus = LocalBus()
        self.commands: dict[str, Command] = {}
        for klass in reversed(type(self).__mro__):
            for attr, value in vars(klass).items():
                spec = getattr(value, "__chat_command__", None)
                if isinstance(spec, CommandSpec):
                    fn = getattr(self, attr)
                    self.commands[spec.name] = Command(
                        spec.name, fn, spec.public, spec.status, spec
                    )

    def publish(self, user_ids: Iterable[str], event: Event) -> None:
        """Push the event to every open queue of these users (after it is stored), here and,
        through the bus, in the other processes."""
        if not self.bus.shared or self.shared_queues is not None:
            self.registry.publish(user_ids, event)  # with shared queues, to Redis
            return
        if not isinstance(user_ids, (list, tuple, set, frozenset)):
            user_ids = list(user_ids)  # read twice
        self.registry.publish(user_ids, event)
        self.bus.publish("events", [list(user_ids), event])

    def events_elsewhere(self, payload: Any) -> None:
        """Another process published an event: push it to the queues of its users held here."""
        if not isinstance(payload, list) or len(payload) != 2:
            return
        user_ids, event = payload
        if isinstance(user_ids, list) and isinstance(event, dict):
            self.registry.publish(frozenset(user_ids), event)

    def presence_of(self, user_ids: Iterable[str]) -> dict[str, str]:
        """online/offline of each user, from this process's memory."""
        return self.presence.statuses(user_ids)

    async def presence_candidates(self, user_id: str) -> set[str]:
        """Users who should see this user's presence; each mixin adds its part via super()."""
        return set()

    async def blocked_either_way(self, user_id: str) -> set[str]:
        """Users this user blocked or who blocked it (the social graph overrides this)."""
        return set()

    async def is_blocked_between(self, a: str, b: str) -> bool:
        """True when either user blocked the other (the social graph overrides this)."""
        return False

    async def notify(self, user_ids: Sequence[str], note: NewNotification) -> None:
        """Give these users a notification (chat/notifications.py stores and publishes it)."""

    async def check_dm_open(self, user_id: str, other_id: str) -> None:
        """Raise when user_id may not start a DM with other_id (chat/privacy.py overrides)."""

    async def check_dm_send(self, conv: Conversation, sender_id: str) -> None:
        """Raise when sender_id may not write in this conversation now (chat/privacy.py)."""

    async def dm_request_for(self, conv: Conversation, user_id: str) -> bool:
        """True when the conversation waits for this user's answer (chat/privacy.py)."""
        return False

    async def run(
        self,
        name: str,
        principal: Principal | None,
        data: Any,
        *,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> Reply:
        """Run a command by name for a client at `address` (both transports come here);
        Unauthorized when it needs a principal and has none."""
        cmd = self.commands.get(name)
        if cmd is None:
            raise NotFound(f"Unknown command {name!r}.")
        token = CLIENT.set(Client(address, user_agent))
        try:
            if cmd.public:
                return await self.run_public(cmd, principal, data, address)
            if principal is None:
                raise Unauthorized("Sign in first.")
            self.session_used(principal, address)
            reply = await cmd.fn(principal, data)
            if self.shared_queues is not None:
                # The reply then means the command's events are in their queues: a process
                # killed right after answering loses none of them.
                await self.shared_queues.settled()
            return reply
        finally:
            CLIENT.reset(token)

    def session_used(self, principal: Principal, address: str | None) -> None:
        """Hook: the session made a request from `address` (chat/accounts.py records it)."""

    async def run_public(
        self, cmd: Command, principal: Principal | None, data: Any, address: str | None
    ) -> Reply:
        """Run a command callable without signing in (accounts limit these per address)."""
        return await cmd.fn(principal, data)


def retrieve_exception(future: asyncio.Future[Any]) -> None:
    """A done callback that marks a future's exception as seen, for futures nobody may await
    (a fire-and-forget write, an outcome no retry asked for): asyncio would log it otherwise."""
    if not future.cancelled():
        future.exception()
