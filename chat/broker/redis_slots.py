"""The per-user caps on sockets and held long-polls, counted by every process (--redis-url).

Keys: ``chat:slots:<kind>:<user>``, a hash whose fields are the ids of the processes holding
slots of the user (the bus's origin, the presence book's process id) and whose values are how
many each holds. A take is one Lua script: it drops the fields of processes whose presence
heartbeat key (``chat:alive:<process>``, chat/broker/redis_presence.py) has expired, so the
slots of a killed process come back within the heartbeat's expiry (20 s), then counts the
rest against the cap. Gives go out from one task, in order after the takes they follow.

While Redis does not answer, each process counts alone (chat/limits.py's UserSlots), as
without Redis; a slot taken so is given back to Redis later all the same (a count never goes
below zero there, so an outage can only leave a user a little more room, not less).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chat.batching import GroupCommit
from chat.broker.redis import RECONNECT_SECS
from chat.broker.redis_presence import MAX_BATCH, PREFIX
from chat.tasks import cancel_and_wait

log = logging.getLogger(__name__)

KEY_TTL_MS = 24 * 3600 * 1000  # a user's hash, renewed by each take: what a crash could leave

# Takes made while one is in flight go together (chat/batching.py's GroupCommit): a connect
# storm is a few scripts, not one per connect. KEYS the users' hashes; ARGV: this process,
# the alive keys' prefix, the hashes' TTL, then each take's cap. One 0/1 per take, in order
# (two takes of one user in a batch count one after the other).
_TAKE = """
local out = {}
for k = 1, #KEYS do
  local held, total = redis.call('HGETALL', KEYS[k]), 0
  for i = 1, #held, 2 do
    if held[i] ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. held[i]) == 0 then
      redis.call('HDEL', KEYS[k], held[i])
    else
      total = total + tonumber(held[i + 1])
    end
  end
  if total >= tonumber(ARGV[3 + k]) then
    out[k] = 0
  else
    redis.call('HINCRBY', KEYS[k], ARGV[1], 1)
    redis.call('PEXPIRE', KEYS[k], ARGV[3])
    out[k] = 1
  end
end
return out
"""

_GIVE = """
for i = 1, #KEYS do
  if redis.call('HINCRBY', KEYS[i], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[i], ARGV[1]) end
end
return 0
"""


class RedisSlotBook:
    """The SlotBook of one kind of slot ("sockets", "polls") for one process."""

    def __init__(self, redis: aioredis.Redis, kind: str, process_id: str) -> None:
        self._redis = redis
        self._prefix = f"{PREFIX}slots:{kind}:"
        self._process_id = process_id
        self._take = redis.register_script(_TAKE)
        self._takes: GroupCommit[tuple[str, int], bool] = GroupCommit(self._take_many, MAX_BATCH)
        self._give = redis.register_script(_GIVE)
        self._gives: list[str] = []  # users whose slots wait to be given back, in order
        self._pending = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    async def take(self, user_id: str, cap: int) -> bool | None:
        try:
            return await self._takes.submit((user_id, cap))
        except (RedisError, OSError) as exc:
            log.warning("per-user caps: Redis did not answer (%s); counting here alone", exc)
            return None

    async def _take_many(self, takes: list[tuple[str, int]]) -> list[bool | Exception]:
        args: list[str | int] = [self._process_id, f"{PREFIX}alive:", KEY_TTL_MS]
        args += [cap for _, cap in takes]
        keys = [self._prefix + user_id for user_id, _ in takes]
        return [bool(taken) for taken in await self._take(keys=keys, args=args)]

    def give(self, user_id: str) -> None:
        if self._closed:
            return  # stopping: what is still held expires with this process's heartbeat
        self._gives.append(self._prefix + user_id)
        self._pending.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_forever())

    async def _send_forever(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            if not await self._flush():
                await asyncio.sleep(RECONNECT_SECS)  # kept, in order: tried again
                self._pending.set()

    async def _flush(self) -> bool:
        keys, self._gives = self._gives, []
        if not keys:
            return True
        try:
            await self._give(keys=keys, args=[self._process_id])
            return True
        except (RedisError, OSError) as exc:
            log.warning("per-user caps: %d slots not given back yet (%s)", len(keys), exc)
            self._gives[:0] = keys
            return False

    async def close(self) -> None:
        """Give back what waits (bounded), then stop."""
        self._closed = True
        await self._takes.close()
        if self._sender is not None:
            await cancel_and_wait(self._sender)
            self._sender = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flush(), RECONNECT_SECS * 5)
