"""The one place pymongo errors become ChatErrors, shared by every collection wrapper."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    ConnectionFailure,
    DuplicateKeyError,
    InvalidOperation,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from chat.errors import DatabaseUnavailable, NotFound

# Work that is not a request (start-up index builds, bulk imports, tests' clean-up) may take
# longer than the per-operation database timeout.
BULK_TIMEOUT_SECS = 600.0
DUPLICATE_KEY = 11000  # MongoDB's error code for a unique index refusing a write

# Values per {$in: [...]} in one query. MongoDB takes a long list in its stride, but the
# embedded SecantusDB matches one in a time that grows with the list's square (by _id: 100 ids
# 31 ms, 300 ids 224 ms, 999 ids past the 2 s timeout), so a long list goes as several short
# queries: a few more round trips on MongoDB, 16 x 64 ids in about 0.2 s on the embedded one.
IN_CHUNK = 64

P = ParamSpec("P")
T = TypeVar("T")


async def bulk_upsert(collection: AsyncCollection[Any], ops: list[UpdateOne]) -> None:
    """One unordered bulk_write of upserts by _id. Two writers creating one document at once
    (two processes, two notifications): one upsert loses on _id; the document exists now, so
    the same update again applies (each op must be one that may be applied that way: $max,
    $inc of a count the loser had not applied)."""
    try:
        await collection.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        errors = (exc.details or {}).get("writeErrors", [])
        if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        await collection.bulk_write([ops[e["index"]] for e in errors], ordered=False)


def in_chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """values in lists of at most size, in order: each one {$in} query (see IN_CHUNK)."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


def _unreachable(exc: PyMongoError) -> bool:
    """Whether this error means the database cannot be reached (now), not a bad request."""
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, server-selection timeouts
        return True
    if exc.timeout:  # the operation's timeoutMS ran out, wherever it was waiting
        return True
    if isinstance(exc, InvalidOperation):  # "... after close": shutting down, gone for us
        return "after close" in str(exc)
    return exc.has_error_label("RetryableWriteError") or exc.has_error_label(
        "TransientTransactionError"
    )


class Unsent(DatabaseUnavailable):
    """The database could not be reached, and the operation was never sent to it: a write
    did not happen. (A retried write that fails to find a server raises its first error,
    as the drivers' retryable-writes specification requires, so this is only ever a first
    attempt.)"""


@contextlib.contextmanager
def db_errors() -> Iterator[None]:
    """Turn an unreachable database into DatabaseUnavailable (503), Unsent when the operation
    never left; let the rest through."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except ServerSelectionTimeoutError as exc:
        raise Unsent("The database is unavailable; try again shortly.") from exc
    except PyMongoError as exc:
        if _unreachable(exc):
            raise DatabaseUnavailable("The database is unavailable; try again shortly.") from exc
        raise


class InFlight:
    """The store operations under way, so that closing the client can wait for them; and how
    many failed so far (the metrics' database errors)."""

    def __init__(self) -> None:
        self.count = 0
        self.failed = 0
        self._idle: asyncio.Event | None = None  # created in the loop, on first wait
        self.pacer = BulkPacer()  # uploads' chunks give way to messages

    def failures(self) -> int:
        """Operations that failed on the database's side (unreachable, timed out, or refused
        other than by a unique index, which is how a duplicate is found)."""
        return self.failed

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        except DuplicateKeyError:
            raise
        except (DatabaseUnavailable, PyMongoError):
            self.failed += 1
            raise
        finally:
            self.count -= 1
            if not self.count and self._idle is not None:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no operation is under way (True) or `timeout` seconds passed (False). An
        operation that ends and leads straight to the next one does not count as idle."""
        deadline = time.monotonic() + timeout
        while True:
            while self.count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), remaining)
            await asyncio.sleep(0)  # let whoever was woken start its next operation
            if not self.count:
                return True


class BulkPacer:
    """Bulk writes (the chunks of uploads) step aside for interactive ones (messages).

    On a database with a core or two, a chunk insert holds it for milliseconds, and uploads
    at full speed take every core: a message then waits behind chunks, and its latency
    grows several times over (bench.uploads). So while messages are being written (one in
    the last ACTIVE_SECS), a chunk insert does not start while a message insert is in flight,
    and the chunks take at most SHARE of the time: after a chunk that took t, the next waits
    t * (1 - SHARE) / SHARE. Bulk writes are never held longer than MAX_WAIT_SECS each, so an
    upload slows down under chat traffic but always ends. With no messages, nothing waits.
    Callers serialize their bulk writes (the chunk lane), so the share is the whole store's."""

    SHARE = 0.25
    ACTIVE_SECS = 1.0
    MAX_WAIT_SECS = 0.5

    def __init__(self) -> None:
        self._writing = 0  # message inserts in flight
        self._last_write = -math.inf  # when the last one ended
        self._next_bulk = 0.0  # when the next bulk write may start, while messages flow
        self._quiet: asyncio.Event | None = None  # set when no message insert is in flight

    @contextlib.contextmanager
    def interactive(self) -> Iterator[None]:
        """Around an interactive write."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
            self._last_write = time.monotonic()
            if not self._writing and self._quiet is not None:
                self._quiet.set()

    def _active(self, now: float) -> bool:
        return self._writing > 0 or now - self._last_write < self.ACTIVE_SECS

    @contextlib.asynccontextmanager
    async def bulk(self) -> AsyncIterator[None]:
        """Around a bulk write: waits for its turn while messages flow."""
        now = time.monotonic()
        if self._active(now):
            deadline = now + self.MAX_WAIT_SECS
            if self._next_bulk > now:
                await asyncio.sleep(min(self._next_bulk, deadline) - now)
            while self._writing and (remaining := deadline - time.monotonic()) > 0:
                self._quiet = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._quiet.wait(), remaining)
        started = time.monotonic()
        try:
            yield
        finally:
            ended = time.monotonic()
            self._next_bulk = ended + (ended - started) * (1 - self.SHARE) / self.SHARE


class Collections:
    """Base of the per-collection wrappers: they share their store's InFlight."""

    def __init__(self, in_flight: InFlight) -> None:
        self.in_flight = in_flight


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate a store coroutine (a method of a Collections) so database outages surface as
    DatabaseUnavailable, and so that closing waits for it."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        owner = args[0]
        assert isinstance(owner, Collections)
        with owner.in_flight.operation(), db_errors():
            return await fn(*args, **kwargs)

    return wrapper


def object_id(value: str, what: str = "resource") -> ObjectId:
    """Parse an id we issued; an id that cannot be ours is simply not found."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError) as exc:
        raise NotFound(f"No such {what}.") from exc


def duplicate_key_fields(exc: DuplicateKeyError) -> set[str]:
    """The fields of the unique index that refused a write."""
    details: Mapping[str, Any] = exc.details or {}
    pattern = details.get("keyPattern") or details.get("keyValue") or {}
    return set(pattern)


async def ensure_collection(collection: AsyncCollection[Any]) -> None:
    """Create the collection if it does not exist yet (at start-up: a collection made by the
    first write under load makes the writes of that moment wait)."""
    with contextlib.suppress(CollectionInvalid):  # it exists
        await collection.database.create_collection(collection.name)
