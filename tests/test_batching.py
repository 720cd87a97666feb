"""The write coalescer (chat/batching.py): one call in flight, later writes merged into the
next, each caller told its own call's outcome. Pure asyncio: the database side is tested over
the wire in test_realtime.py (last_seen of many users leaving at once)."""

from __future__ import annotations

import asyncio

import pytest

from chat.batching import Coalescer


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
