"""Rate limits counted by every process at once, in Redis: sign-in and sign-up attempts, and
typing notifications.

A token bucket per key is one Lua script on Redis's own clock (processes' clocks may differ),
so that two processes spending the same key at once both count. While Redis does not answer,
each process counts alone (the limiter it would have without Redis), so that a Redis outage
neither locks everyone out nor lifts the limits.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chat.config import TYPING_BURST, TYPING_PER_SEC
from chat.errors import RateLimited
from chat.limits import AttemptLimiter
from chat.messages import TYPING_INTERVAL_SECS, TypingThrottle

log = logging.getLogger(__name__)

PREFIX = "chat:limit:"

# KEYS[1] the bucket; ARGV: allowance, rate per second, cost (1 to take, -1 to give back).
# Returns "0" when spent, else the seconds until one attempt is earned back (nothing spent).
_BUCKET = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local allowance, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local kept = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = allowance
if kept[1] then
  tokens = math.min(allowance, tonumber(kept[1]) + (now - tonumber(kept[2])) * rate)
end
if cost > 0 and tokens < cost then
  return tostring((cost - tokens) / rate)
end
tokens = tokens - cost
if tokens >= allowance then
  redis.call('DEL', KEYS[1])
  return '0'
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((allowance - tokens) / rate * 1000) + 1000)
return '0'
"""


class RedisAttempts:
    """The Attempts of one rule (name), shared by every process; `alone` while Redis is away."""

    def __init__(self, redis: aioredis.Redis, name: str, alone: AttemptLimiter) -> None:
        self._bucket = redis.register_script(_BUCKET)
        self._prefix = f"{PREFIX}{name}:"
        self._alone = alone
        self._args = (alone.allowance, alone.allowance / alone.window_secs)

    async def _spend(self, key: str, cost: int) -> float | None:
        try:
            wait = await self._bucket(keys=[self._prefix + key], args=[*self._args, cost])
        except (RedisError, OSError) as exc:
            log.warning("rate limits: Redis did not answer (%s); counting here alone", exc)
            return None
        return float(wait)

    async def take(self, key: str) -> float:
        wait = await self._spend(key, 1)
        return self._alone.take_now(key) if wait is None else wait

    async def refund(self, key: str) -> None:
        if await self._spend(key, -1) is None:
            self._alone.refund_now(key)


class RedisTypingThrottle(TypingThrottle):
    """TypingThrottle's rules (one event per user and conversation per interval, a per-user
    rate) counted by every process."""

    def __init__(
        self, redis: aioredis.Redis, rate: float = TYPING_PER_SEC, burst: float = TYPING_BURST
    ) -> None:
        super().__init__(rate, burst)
        self._redis = redis
        self._rate = RedisAttempts(redis, "typing", AttemptLimiter(int(burst), burst / rate))

    async def check(self, user_id: str, conversation_id: str) -> bool:
        key = f"{PREFIX}typed:{user_id}:{conversation_id}"
        try:
            first = await self._redis.set(key, "1", px=int(TYPING_INTERVAL_SECS * 1000), nx=True)
        except (RedisError, OSError) as exc:
            log.warning("rate limits: Redis did not answer (%s); counting here alone", exc)
            return self.allow(user_id, conversation_id)
        if not first:
            return False  # forwarded within the interval, by some process
        wait = await self._rate.take(user_id)
        if wait:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(key)
            raise RateLimited("Too many typing notifications; slow down.", retry_after_secs=wait)
        return True
