"""Limits one caller cannot pass: attempts per key over time, and what a user holds open."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Protocol

MAX_LIMITED_KEYS = 100_000  # keys remembered at most; the least recently charged go first


class Attempts(Protocol):
    """Attempts per key over time: this process's (AttemptLimiter), or every process's
    (chat/broker/redis_limits.py)."""

    async def take(self, key: str) -> float:
        """Spend one attempt: 0 when allowed, else the seconds until one is (nothing spent)."""

    async def refund(self, key: str) -> None:
        """Give back an attempt taken by take() (it turned out not to count)."""


class AttemptLimiter:
    """A token bucket per key (an account, a client address): `allowance` attempts at once,
    earned back evenly over `window_secs`. A key whose bucket refilled is forgotten."""

    def __init__(
        self,
        allowance: int,
        window_secs: float,
        max_keys: int = MAX_LIMITED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if allowance < 1 or window_secs <= 0:
            raise ValueError("an allowance of at least 1 over a positive window")
        self._allowance = float(allowance)
        self._rate = allowance / window_secs  # attempts earned back per second
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens left, when counted); only keys below a full allowance are kept.
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    @property
    def allowance(self) -> int:
        return int(self._allowance)

    @property
    def window_secs(self) -> float:
        return self._allowance / self._rate

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._allowance
        tokens, stamp = entry
        return min(self._allowance, tokens + (now - stamp) * self._rate)

    async def take(self, key: str) -> float:
        return self.take_now(key)

    async def refund(self, key: str) -> None:
        self.refund_now(key)

    def take_now(self, key: str) -> float:
        """Spend one attempt: 0 when allowed, else the seconds until one is (nothing spent)."""
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            return (1 - tokens) / self._rate
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return 0.0

    def refund_now(self, key: str) -> None:
        """Give back an attempt taken by take() (it turned out not to count)."""
        now = self._clock()
        tokens = self._tokens(key, now) + 1
        if tokens >= self._allowance:
            self._buckets.pop(key, None)
        elif key in self._buckets:
            self._buckets[key] = (tokens, now)

    def __len__(self) -> int:
        return len(self._buckets)


class SlotBook(Protocol):
    """What every process's users hold, counted together (chat/broker/redis_slots.py)."""

    async def take(self, user_id: str, cap: int) -> bool | None:
        """Take a slot for the user unless all processes together hold cap; None when the
        book cannot be reached (the caller counts alone)."""

    def give(self, user_id: str) -> None:
        """Give back a slot this process took (sent later, in order; never blocks)."""


class UserSlots:
    """How many of something (sockets, held polls) each user holds, at most `cap` at once:
    in this process, or in every process once a shared book is given (share())."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("a cap of at least 1")
        self.cap = cap
        self._held: dict[str, int] = {}
        self._total = 0  # the sum of _held's values, for the metrics
        self._book: SlotBook | None = None

    def share(self, book: SlotBook) -> None:
        """Count with every process through the book from now on (before any slot is held)."""
        self._book = book

    async def take(self, user_id: str) -> bool:
        """acquire(), counted with every process when shared; this process's count alone
        while the book cannot be reached."""
        if self._book is None or self.held(user_id) >= self.cap:
            return self.acquire(user_id)
        allowed = await self._book.take(user_id, self.cap)
        if allowed is False:
            return False
        if not self.acquire(user_id):  # the user's other takes here were quicker
            if allowed:
                self._book.give(user_id)
            return False
        return True

    def acquire(self, user_id: str) -> bool:
        """Take a slot for the user; False (nothing taken) when it holds `cap` already."""
        held = self._held.get(user_id, 0)
        if held >= self.cap:
            return False
        self._held[user_id] = held + 1
        self._total += 1
        return True

    def release(self, user_id: str) -> None:
        """Give back a slot taken by acquire()."""
        held = self._held.get(user_id, 0) - 1
        if held > 0:
            self._held[user_id] = held
        elif self._held.pop(user_id, None) is None:
            return  # nothing was held: nothing to give back
        self._total -= 1
        if self._book is not None:
            self._book.give(user_id)

    def held(self, user_id: str) -> int:
        """The slots the user holds now."""
        return self._held.get(user_id, 0)

    def total(self) -> int:
        """The slots all users hold now."""
        return self._total
