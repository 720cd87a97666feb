"""The presence book in Redis: which process holds which users, with a heartbeat per process.

Keys (PREFIX = "chat:"):
- pres:{user}: a hash whose fields are the ids of the processes holding the user;
- presv: a hash user -> the version of its last transition;
- held:{process}: the set of users that process holds (what to release when it dies);
- alive:{process}: a key that expires alive_secs after the process's last beat;
- processes: the set of process ids, for the reaper.

Each transition is one Lua script, atomic in Redis, so that of two processes attaching (or
releasing) one user at once exactly one sees the transition. The scripts touch several keys:
one Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from chat.batching import GroupCommit

PREFIX = "chat:"

MAX_BATCH = 256  # calls of one script sent together at most (a connect storm's attaches)

# Attaches made while one is in flight go together (chat/batching.py's GroupCommit; one
# process never has two attaches or releases of one user under way). KEYS: held, presv, then
# each user's pres; ARGV: the process, then the users. One version (0: no transition) each.
_ATTACH = """
local out = {}
for k = 3, #KEYS do
  local user = ARGV[k - 1]
  local added = redis.call('HSET', KEYS[k], ARGV[1], '1')
  redis.call('SADD', KEYS[1], user)
  if added == 1 and redis.call('HLEN', KEYS[k]) == 1 then
    out[k - 2] = redis.call('HINCRBY', KEYS[2], user, 1)
  else
    out[k - 2] = 0
  end
end
return out
"""

_DETACH = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if removed == 1 and redis.call('HLEN', KEYS[1]) == 0 then
  return redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
end
return 0
"""


class RedisPresenceBook:
    """The PresenceBook of one process (its id: the bus's origin)."""

    def __init__(self, redis: aioredis.Redis, process_id: str, alive_secs: float) -> None:
        self._redis = redis
        self.process_id = process_id
        self._alive_ms = int(alive_secs * 1000)
        self._attach = redis.register_script(_ATTACH)
        self._attaches: GroupCommit[str, int] = GroupCommit(self._attach_many, MAX_BATCH)
        self._detach = redis.register_script(_DETACH)

    def _keys(self, user_id: str, process_id: str) -> list[str]:
        return [f"{PREFIX}pres:{user_id}", f"{PREFIX}held:{process_id}", f"{PREFIX}presv"]

    async def attach(self, user_id: str) -> int:
        return await self._attaches.submit(user_id)

    async def _attach_many(self, user_ids: list[str]) -> list[int | Exception]:
        keys = [f"{PREFIX}held:{self.process_id}", f"{PREFIX}presv"]
        keys += [f"{PREFIX}pres:{user_id}" for user_id in user_ids]
        versions = await self._attach(keys=keys, args=[self.process_id, *user_ids])
        return [int(version) for version in versions]

    async def detach(self, user_id: str) -> int:
        return await self._release(user_id, self.process_id)

    async def _release(self, user_id: str, process_id: str) -> int:
        keys = self._keys(user_id, process_id)
        return int(await self._detach(keys=keys, args=[process_id, user_id]))

    async def online_users(self) -> list[str]:
        start = len(f"{PREFIX}pres:")
        return [
            _text(key)[start:] async for key in self._redis.scan_iter(f"{PREFIX}pres:*", count=1000)
        ]

    async def heartbeat(self) -> bool:
        alive = f"{PREFIX}alive:{self.process_id}"
        # XX: only if still there. Missing means the others took this process for dead.
        if await self._redis.set(alive, "1", px=self._alive_ms, xx=True):
            return True
        await self._redis.set(alive, "1", px=self._alive_ms)
        await self._redis.sadd(f"{PREFIX}processes", self.process_id)
        return False

    async def reap(self) -> list[tuple[str, int]]:
        released: list[tuple[str, int]] = []
        for raw in await self._redis.smembers(f"{PREFIX}processes"):
            process_id = _text(raw)
            if process_id == self.process_id or await self._redis.exists(
                f"{PREFIX}alive:{process_id}"
            ):
                continue
            for user in await self._redis.smembers(f"{PREFIX}held:{process_id}"):
                user_id = _text(user)
                version = await self._release(user_id, process_id)
                if version:
                    released.append((user_id, version))
            await self._redis.srem(f"{PREFIX}processes", process_id)
        return released


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
