"""Seqs of conversations taken from one counter in Redis, so that processes writing to the same
conversation take turns instead of colliding (--redis-url).

Alone, a process takes a conversation's next seq from what it last stored there, in memory:
the insert is the only database write, and the unique (conversation_id, seq) index refuses a
seq another process took, the send then trying the next one. With two processes sending to one
conversation at once, that race starves: the winner's next send is under way while the loser
reads the conversation again, so the loser lost 20 in a row and answered 409
(tests/test_processes_delivery.py). Here each seq is one INCR in Redis: two processes never
pick the same one, and the unique index still arbitrates whatever a counter lost.

The counter never goes below what the process knows (``floor``: the last seq it stored or
heard of, or read after a collision), so a counter that expired or a Redis that restarted
empty starts again from the database's state. While Redis does not answer, each process takes
seqs from memory as alone, for RETRY_SECS before it asks Redis again: sends go on.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from chat.batching import GroupCommit
from chat.broker.redis import connect
from chat.broker.redis_presence import MAX_BATCH

log = logging.getLogger(__name__)

PREFIX = "chat:seq:"
# The last seq of each conversation whose message.new is in the queues (the order kept by
# chat/broker/redis_queues.py): a new counter starts it at the floor.
PUBLISHED_PREFIX = "chat:cs:"
KEEP_MS = 86_400_000  # an idle conversation's keys expire: the floor restores them
TIMEOUT_SECS = 0.5  # a Redis that does not answer within this: seqs from memory meanwhile
RETRY_SECS = 1.0

# Takes made while one is in flight go together (chat/batching.py's GroupCommit): one script
# for the sends of many conversations. KEYS: each take's counter and last published; ARGV:
# keep_ms, then each take's floor. Each take's seq, in order: the seq after both the counter
# and the floor. A new counter (a new conversation, or one idle for KEEP_MS) also says that
# the messages up to the floor are published, so that the first ones sent through two
# processes at once keep their order too.
_TAKE = """
local out = {}
for k = 1, #KEYS / 2 do
  local last = redis.call('GET', KEYS[2 * k - 1])
  if not last then redis.call('SET', KEYS[2 * k], ARGV[k + 1], 'NX', 'PX', ARGV[1]) end
  local seq = math.max(tonumber(last or '0'), tonumber(ARGV[k + 1])) + 1
  redis.call('SET', KEYS[2 * k - 1], seq, 'PX', ARGV[1])
  out[k] = seq
end
return out
"""


class RedisSeqs:
    """The seq counter of every conversation, shared by the processes."""

    def __init__(self, url: str) -> None:
        # Its own client: a send waits TIMEOUT_SECS at most, as the socket's timeout (not a
        # cancellation, which would leave a shared connection mid-reply).
        self._redis = connect(url, TIMEOUT_SECS)
        self._take = self._redis.register_script(_TAKE)
        self._takes: GroupCommit[tuple[str, int], int] = GroupCommit(self._take_many, MAX_BATCH)
        self._away_until = 0.0

    async def close(self) -> None:
        await self._takes.close()
        await self._redis.aclose()

    async def take(self, conversation_id: str, floor: int) -> int | None:
        """The conversation's next seq (above floor), or None while Redis is away (the caller
        takes floor + 1 itself)."""
        if time.monotonic() < self._away_until:
            return None
        try:
            seq = await self._takes.submit((conversation_id, floor))
        except (RedisError, OSError) as exc:
            if not self._away_until:
                log.warning("seqs: Redis is unreachable (%s); seqs from memory meanwhile", exc)
            self._away_until = time.monotonic() + RETRY_SECS
            return None
        if self._away_until:
            log.warning("seqs: Redis answers again")
            self._away_until = 0.0
        return seq

    async def _take_many(self, takes: list[tuple[str, int]]) -> list[int | Exception]:
        keys = [key for cid, _ in takes for key in (PREFIX + cid, PUBLISHED_PREFIX + cid)]
        args = [KEEP_MS, *(floor for _, floor in takes)]
        return [int(seq) for seq in await self._take(keys=keys, args=args)]
