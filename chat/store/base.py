"""The one place pymongo errors become ChatErrors, shared by every collection wrapper."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, ParamSpec, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import ConnectionFailure, DuplicateKeyError, PyMongoError

from chat.errors import DatabaseUnavailable, NotFound

P = ParamSpec("P")
T = TypeVar("T")


@contextlib.contextmanager
def db_errors() -> Iterator[None]:
    """Turn an unreachable database into DatabaseUnavailable (503); let the rest through."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except ConnectionFailure as exc:  # includes AutoReconnect and server-selection timeouts
        raise DatabaseUnavailable("The database is unavailable; try again shortly.") from exc
    except PyMongoError as exc:
        if exc.has_error_label("RetryableWriteError") or exc.has_error_label(
            "TransientTransactionError"
        ):
            raise DatabaseUnavailable("The database is unavailable; try again shortly.") from exc
        raise


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorate a store coroutine so database outages surface as DatabaseUnavailable."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with db_errors():
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
