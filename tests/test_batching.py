"""chat/batching.py: the write coalescer and the read batcher (one call in flight, later
writes or reads merged into the next, each caller told its own call's outcome), and the cache
in front of reads. Pure asyncio: the database side is tested over the wire in test_realtime.py
(last_seen of many users leaving at once) and test_connect.py (a connect storm, each cache's
invalidation)."""

from __future__ import annotations

import asyncio

import pytest

from chat.batching import CachedReads, Coalescer, ReadBatcher


class Recorder:
    """A write_many that blocks until released and records every batch."""

    def __init__(self) -> None:
        self.batches: list[dict[str, int]] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def write_many(self, batch: dict[str, int]) -> None:
        self.batches.append(dict(batch))
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database down")


async def test_the_first_write_goes_alone_and_later_ones_are_merged() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int] = Coalescer(recorder.write_many)
    first = asyncio.create_task(coalescer.write("a", 1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(coalescer.write(key, n)) for n, key in enumerate("bcb")]
    await asyncio.sleep(0)
    assert recorder.batches == [{"a": 1}]  # nothing waits for a batch to fill
    recorder.release.set()
    await asyncio.gather(first, *later)
    assert recorder.batches == [{"a": 1}, {"b": 2, "c": 1}]  # the later b replaced the earlier


async def test_a_failed_call_fails_its_callers_only() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int] = Coalescer(recorder.write_many)
    recorder.fail_next = True
    failing = asyncio.create_task(coalescer.write("a", 1))
    await asyncio.sleep(0)
    next_one = asyncio.create_task(coalescer.write("b", 2))
    recorder.release.set()
    with pytest.raises(RuntimeError, match="database down"):
        await failing
    await next_one  # the next batch is written all the same
    assert recorder.batches == [{"a": 1}, {"b": 2}]


async def test_a_put_nobody_waits_for_is_merged_and_a_failure_stops_nothing() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int] = Coalescer(recorder.write_many)
    recorder.fail_next = True
    coalescer.put("a", 1)
    await asyncio.sleep(0)
    coalescer.put("b", 2)
    coalescer.put("b", 3)
    waiting = asyncio.create_task(coalescer.write("c", 4))
    await asyncio.sleep(0)
    recorder.release.set()  # the first call fails: nobody to tell, the next goes out
    await waiting
    assert recorder.batches == [{"a": 1}, {"b": 3, "c": 4}]


async def test_close_cancels_the_call_in_flight_and_its_waiters() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int] = Coalescer(recorder.write_many)
    waiting = asyncio.create_task(coalescer.write("a", 1))
    await asyncio.sleep(0)
    queued = asyncio.create_task(coalescer.write("b", 2))
    await asyncio.sleep(0)
    await coalescer.close()
    for task in (waiting, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert recorder.batches == [{"a": 1}]


class Reader:
    """A read_many that blocks until released, records every batch and answers key * 10
    for the keys it knows."""

    def __init__(self, known: set[int]) -> None:
        self.known = known
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_next = False

    async def read_many(self, keys: list[int]) -> dict[int, int]:
        self.batches.append(list(keys))
        await self.release.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("database down")
        return {k: k * 10 for k in keys if k in self.known}


async def test_reads_during_a_call_go_out_together_each_key_once() -> None:
    reader = Reader(known={1, 2, 3})
    batcher: ReadBatcher[int, int] = ReadBatcher(reader.read_many)
    first = asyncio.create_task(batcher.get(1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(batcher.get(k)) for k in (2, 3, 2, 4)]
    await asyncio.sleep(0)
    assert reader.batches == [[1]]  # nothing waits for a batch to fill
    reader.release.set()
    assert await first == 10
    assert [await t for t in later] == [20, 30, 20, None]  # 4 is not found
    assert reader.batches == [[1], [2, 3, 4]]


async def test_a_storm_is_read_in_calls_of_at_most_max_keys() -> None:
    reader = Reader(known=set(range(10)))
    reader.release.set()
    batcher: ReadBatcher[int, int] = ReadBatcher(reader.read_many, max_keys=4)
    assert await asyncio.gather(*(batcher.get(k) for k in range(10))) == [k * 10 for k in range(10)]
    assert reader.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_a_failed_read_fails_its_callers_only() -> None:
    reader = Reader(known={1, 2})
    batcher: ReadBatcher[int, int] = ReadBatcher(reader.read_many)
    reader.fail_next = True
    failing = asyncio.create_task(batcher.get(1))
    await asyncio.sleep(0)
    next_one = asyncio.create_task(batcher.get(2))
    reader.release.set()
    with pytest.raises(RuntimeError, match="database down"):
        await failing
    assert await next_one == 20


async def test_a_caller_that_gives_up_leaves_the_others_their_answer() -> None:
    reader = Reader(known={1})
    batcher: ReadBatcher[int, int] = ReadBatcher(reader.read_many)
    impatient = asyncio.create_task(batcher.get(1))
    patient = asyncio.create_task(batcher.get(1))
    await asyncio.sleep(0)
    impatient.cancel()
    reader.release.set()
    assert await patient == 10
    assert impatient.cancelled()


async def test_cached_reads_load_once_and_forget_on_change() -> None:
    reader = Reader(known={1, 2})
    reader.release.set()
    cache: CachedReads[int, int] = CachedReads(ReadBatcher(reader.read_many).get, max_entries=2)
    assert [await cache.get(1), await cache.get(1)] == [10, 10]
    assert await cache.get(9) is None and await cache.get(9) is None  # not found: not kept
    assert reader.batches == [[1], [9], [9]]
    cache.update(1, lambda v: v + 1)
    assert await cache.get(1) == 11
    cache.forget(1)
    assert await cache.get(1) == 10 and len(reader.batches) == 4
    await cache.get(2)
    await cache.get(1)
    reader.known.add(3)
    await cache.get(3)  # the third entry: the least recently read (2) goes
    assert len(cache) == 2
    before = len(reader.batches)
    await cache.get(1)
    assert len(reader.batches) == before
    await cache.get(2)
    assert len(reader.batches) == before + 1


async def test_a_load_under_way_when_the_value_changed_is_not_kept() -> None:
    reader = Reader(known={1})
    cache: CachedReads[int, int] = CachedReads(ReadBatcher(reader.read_many).get, max_entries=10)
    loading = asyncio.create_task(cache.get(1))
    await asyncio.sleep(0)
    cache.forget(1)  # changed while the read was on its way: it may have read the old value
    reader.release.set()
    assert await loading == 10
    assert len(cache) == 0
    assert await cache.get(1) == 10 and len(cache) == 1
