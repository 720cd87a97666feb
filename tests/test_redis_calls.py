"""The Redis calls of publishing (chat/broker/redis_queues.py), counted by a real
redis-server's own INFO commandstats: a batch of events is one pipeline of EVALSHAs and
nothing more, scripts Redis lost are loaded again without losing or reordering events, and
the seq takes of sends made together are one script call (chat/broker/redis_seqs.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chat.broker.redis_queue_scripts import PUSH
from chat.broker.redis_queues import RedisQueueRegistry
from chat.broker.redis_seqs import RedisSeqs
from tests.test_processes import redis_server, redis_url
from tests.test_redis_order import new, registries, seqs

__all__ = ["redis_server", "redis_url", "registries"]  # the shared fixtures


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def calls(client: aioredis.Redis) -> dict[str, int]:
    """How many times Redis ran each command since it started."""
    stats = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def test_publishing_asks_redis_nothing_but_the_scripts(
    registries: list[RedisQueueRegistry], raw: aioredis.Redis
) -> None:
    """redis-py's scripts in a pipeline ask SCRIPT EXISTS before every execute: one round
    trip more for each batch a process published (0.9 per message in the two-process 1:1
    benchmark)."""
    a, b = registries
    queue, _, _ = await b.open("u1", "s1", None, None, 0, 100)
    before = await calls(raw)
    for seq in range(1, 21):
        a.publish(["u1"], new("c1", seq))
        await a.settled()
    assert await seqs(queue, 20) == list(range(1, 21))
    after = await calls(raw)
    assert after.get("script|exists", 0) - before.get("script|exists", 0) == 0
    # One push each, and a few of the registries' own rounds (releases, refreshes).
    assert 20 <= after["evalsha"] - before["evalsha"] < 30


async def test_scripts_redis_lost_are_loaded_again_and_nothing_is_lost_or_reordered(
    registries: list[RedisQueueRegistry], raw: aioredis.Redis
) -> None:
    a, b = registries
    queue, _, _ = await b.open("u2", "s2", None, None, 0, 100)
    a.publish(["u2"], new("c2", 1))
    await a.settled()
    assert await seqs(queue, 1) == [1]
    await raw.script_flush()
    for seq in (2, 3, 4):
        a.publish(["u2"], new("c2", seq))
    await a.settled()
    assert await seqs(queue, 4) == [1, 2, 3, 4]
    assert await raw.script_exists(hashlib.sha1(PUSH.encode()).hexdigest()) == [True]


async def test_seqs_taken_together_are_one_script_and_each_seq_is_taken_once(
    redis_url: str, raw: aioredis.Redis
) -> None:
    """The seq takes of sends to many conversations at once are one call; two takes of one
    conversation in a call get one seq each, after the floor."""
    seqs_ = RedisSeqs(redis_url)
    try:
        await seqs_.take("warm", 0)  # the script is loaded, the connection made
        before = await calls(raw)
        taken = await asyncio.gather(*(seqs_.take(f"t{n}", 0) for n in range(10)))
        twice = await asyncio.gather(seqs_.take("t-same", 5), seqs_.take("t-same", 0))
        after = await calls(raw)
    finally:
        await seqs_.close()
    assert taken == [1] * 10
    assert sorted(twice) == [6, 7]
    assert after["evalsha"] - before["evalsha"] <= 3
