"""The order Redis keeps among message.new events of one conversation published by several
processes (chat/broker/redis_queues.py), read straight from a queue in a real redis-server:
a seq that does not follow the last published waits for the one before it, for a skipped seq
no longer, and for a seq that never comes at most HOLD_MS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chat.broker.redis import RedisBus
from chat.broker.redis_queue_scripts import HOLD_MS
from chat.broker.redis_queues import RELEASE_SECS, SETTLE_SECS, RedisQueueRegistry
from chat.events import Event, EventQueue
from tests.test_processes import redis_server, redis_url

__all__ = ["redis_server", "redis_url"]  # the fixtures of test_processes, shared


@pytest.fixture
async def registries(redis_url: str) -> AsyncIterator[list[RedisQueueRegistry]]:
    """Two processes' registries on one Redis."""
    started = []
    for origin in ("a", "b"):
        registry = RedisQueueRegistry(redis_url, origin, max_events=1000, grace_secs=30)
        await registry.start()
        started.append(registry)
    yield started
    for registry in started:
        await registry.close()


def new(conversation_id: str, seq: int, body: str = "") -> Event:
    message = {"conversation_id": conversation_id, "seq": seq, "body": body}
    return {"type": "message.new", "message": message}


async def seqs(queue: EventQueue, count: int) -> list[int]:
    """The seqs in the queue once it holds count events (waiting for Redis's nudges)."""
    for _ in range(100):
        items = queue.events_after(0, prune=False)
        if len(items) >= count:
            break
        await asyncio.sleep(0.05)
    return [item["event"]["message"]["seq"] for item in items]


async def test_a_later_seq_waits_for_the_one_before_it_and_a_skipped_one_waits_for_none(
    registries: list[RedisQueueRegistry],
) -> None:
    a, b = registries
    queue, _, _ = await a.open("u1", "s1", None, None, 0, 10)
    a.publish(["u1"], new("c1", 1))
    await a.settled()
    assert await seqs(queue, 1) == [1]

    b.publish(["u1"], new("c1", 3))  # b stored 3 while a is still publishing 2
    await b.settled()
    await asyncio.sleep(0.2)
    assert await seqs(queue, 1) == [1]  # held
    a.publish(["u1"], new("c1", 2))
    await a.settled()
    assert await seqs(queue, 3) == [1, 2, 3]

    b.publish(["u1"], new("c1", 5))
    a.skip("c1", 4)  # a's seq 4 holds nothing (a retry found its message stored)
    await a.settled()
    assert await seqs(queue, 4) == [1, 2, 3, 5]

    # Another conversation is not held by this one's order.
    b.publish(["u1"], new("c2", 7))
    await b.settled()
    assert await seqs(queue, 5) == [1, 2, 3, 5, 7]


async def test_a_seq_that_never_comes_holds_the_later_ones_for_hold_ms_only(
    registries: list[RedisQueueRegistry],
) -> None:
    a, b = registries
    queue, _, _ = await a.open("u2", "s2", None, None, 0, 10)
    a.publish(["u2"], new("c3", 1))
    await a.settled()
    # Seq 2's process died before publishing it: 3 and 4 wait, then go out in order.
    b.publish(["u2"], new("c3", 4))
    b.publish(["u2"], new("c3", 3))
    await b.settled()
    await asyncio.sleep(0.2)
    assert await seqs(queue, 1) == [1]
    await asyncio.sleep(HOLD_MS / 1000 + 2 * RELEASE_SECS)
    assert await seqs(queue, 3) == [1, 3, 4]


async def test_the_deliveries_of_one_message_are_held_and_sent_together(
    registries: list[RedisQueueRegistry],
) -> None:
    """A message with attachments goes out as one copy per member (their own URLs): both are
    held, and both follow the seq before them."""
    a, b = registries
    one, _, _ = await a.open("v1", "t1", None, None, 0, 10)
    two, _, _ = await b.open("v2", "t2", None, None, 0, 10)
    a.publish(["v1", "v2"], new("c4", 1))
    await a.settled()
    b.publish(["v1"], new("c4", 3, "for v1"))
    b.publish(["v2"], new("c4", 3, "for v2"))
    b.publish(["v1", "v2"], new("c4", 4))
    await b.settled()
    a.publish(["v1", "v2"], new("c4", 2))
    await a.settled()
    assert await seqs(one, 4) == [1, 2, 3, 4]
    assert await seqs(two, 4) == [1, 2, 3, 4]
    for queue, body in ((one, "for v1"), (two, "for v2")):
        assert queue.events_after(0, prune=False)[2]["event"]["message"]["body"] == body


async def test_a_burst_of_commands_waits_for_a_connection_instead_of_failing(
    redis_url: str,
) -> None:
    """500 clients connecting at once are as many presence attaches at once: redis-py's pool
    of 100 connections refused the rest ("Too many connections", presence then decided per
    process, in the two-process soak); the bus's client waits for a free connection."""
    bus = RedisBus(redis_url)
    try:
        book = bus.presence_book(20)
        versions = await asyncio.gather(*(book.attach(f"burst{n}") for n in range(300)))
        assert all(version > 0 for version in versions)
    finally:
        await bus.close()


async def test_a_reply_waits_for_its_own_events_not_for_an_empty_outbox(
    registries: list[RedisQueueRegistry],
) -> None:
    """settled() (a command's reply waits on it) returns once the batch carrying the events
    published so far is in Redis. It used to wait for an empty outbox, which steady traffic
    never leaves, so under load every reply waited the whole SETTLE_SECS (the two-process
    soak: sends answered after seconds, retried, never acknowledged)."""
    a, _ = registries
    queue, _, _ = await a.open("w1", "u1", None, None, 0, 1000)
    flooding = True

    async def flood() -> None:  # another user's events, all the time
        n = 0
        while flooding:
            n += 1
            a.publish(["w2"], {"type": "typing", "n": n})
            await asyncio.sleep(0)

    flooder = asyncio.create_task(flood())
    try:
        started = asyncio.get_running_loop().time()
        for n in range(1, 6):
            a.publish(["w1"], new("c5", n))
            await a.settled()
            assert await seqs(queue, n) == list(range(1, n + 1))  # in Redis, and here
        # Five replies in less than one SETTLE_SECS (each waited it whole before).
        assert asyncio.get_running_loop().time() - started < SETTLE_SECS
    finally:
        flooding = False
        await flooder
