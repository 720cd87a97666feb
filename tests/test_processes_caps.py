"""The per-user caps on WebSockets and held long-polls with several processes (--redis-url):
counted across the processes in Redis, and a killed process's slots come back once its
heartbeat expires."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.client import ApiClient, WsClient
from tests.test_processes import redis_server, redis_url, start_processes, stop_all

__all__ = ["redis_server", "redis_url"]  # the fixtures of test_processes, shared

CAP = "2"


@pytest.fixture
async def capped(database_uri: str, tmp_path: Path, redis_url: str) -> AsyncIterator[list[Any]]:
    """Two processes on one Redis, each letting a user hold 2 sockets and 2 held polls."""
    started = await start_processes(
        database_uri, tmp_path, 2, "--redis-url", redis_url,
        "--max-sockets-per-user", CAP, "--max-polls-per-user", CAP,
    )  # fmt: skip
    try:
        yield started
    finally:
        stop_all(started)


async def socket(host: str, token: str) -> WsClient | int | None:
    """An authenticated socket, or the code it was closed with."""
    ws = await WsClient.connect(f"ws://{host}/ws")
    await ws.send({"type": "auth", "token": token})
    try:
        await ws.next_frame("hello")
    except ConnectionError:
        return ws.conn.close_code
    return ws


async def test_sockets_and_polls_per_user_are_capped_across_processes(
    capped: list[Any],
) -> None:
    (_, a), (_, b) = capped
    alice = await ApiClient(f"http://{a}").register("alice")
    token = alice["token"]
    first, second = await socket(a, token), await socket(b, token)
    assert isinstance(first, WsClient) and isinstance(second, WsClient)
    # Alone, each process would take a second socket of its own.
    assert await socket(a, token) == 4429
    assert await socket(b, token) == 4429
    first.close()
    await first.wait_closed()
    third = None
    for _ in range(50):  # the slot goes back to Redis a moment after the close
        third = await socket(b, token)
        if isinstance(third, WsClient):
            break
        await asyncio.sleep(0.1)
    assert isinstance(third, WsClient), third

    apis = [ApiClient(f"http://{host}", token) for host in (a, b)]
    queues = [(await apis[n % 2].get("/api/events")).body["queue_id"] for n in range(3)]
    held = [
        asyncio.ensure_future(apis[n].get(f"/api/events?queue_id={queues[n]}&timeout=4"))
        for n in range(2)
    ]
    await asyncio.sleep(1)  # both polls held, one on each process
    refused = [await api.get(f"/api/events?queue_id={queues[2]}&timeout=1") for api in apis]
    assert [r.status for r in refused] == [429, 429], [r.body for r in refused]
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    again = await apis[0].get(f"/api/events?queue_id={queues[2]}&timeout=0")
    assert again.status == 200, again.body


async def test_a_storm_of_one_users_sockets_gets_the_cap_and_no_more(capped: list[Any]) -> None:
    """Takes made at once go to Redis together, several of one user in one script: they still
    count one after the other, on each process and across both."""
    (_, a), (_, b) = capped
    alice = await ApiClient(f"http://{a}").register("alice")
    token = alice["token"]
    tries = await asyncio.gather(*(socket(host, token) for host in (a, b) * 4))
    opened = [ws for ws in tries if isinstance(ws, WsClient)]
    assert len(opened) == int(CAP), tries
    assert [t for t in tries if not isinstance(t, WsClient)] == [4429] * 6, tries
    for ws in opened:
        ws.close()
        await ws.wait_closed()
    again: list[WsClient | int | None] = []
    for _ in range(50):  # the slots go back to Redis a moment after the closes
        again = list(await asyncio.gather(*(socket(host, token) for host in (b, a) * 3)))
        if sum(isinstance(ws, WsClient) for ws in again) == int(CAP):
            break
        for ws in again:
            if isinstance(ws, WsClient):
                ws.close()
                await ws.wait_closed()
        await asyncio.sleep(0.1)
    assert sum(isinstance(ws, WsClient) for ws in again) == int(CAP), again


async def test_a_storm_of_one_users_queue_opens_gets_the_cap_and_no_more(
    database_uri: str, tmp_path: Path, redis_url: str
) -> None:
    """Queue opens made at once go to Redis in one script call too: eight of one user, four on
    each process, against a cap of three event queues: three open, five are refused."""
    started = await start_processes(
        database_uri, tmp_path, 2, "--redis-url", redis_url, "--max-queues-per-user", "3"
    )
    try:
        (_, a), (_, b) = started
        alice = await ApiClient(f"http://{a}").register("alice")
        apis = [ApiClient(f"http://{host}", alice["token"]) for host in (a, b)]
        opens = await asyncio.gather(*(apis[n % 2].get("/api/events") for n in range(8)))
        assert sorted(r.status for r in opens) == [200] * 3 + [429] * 5, [r.body for r in opens]
        assert len({r.body["queue_id"] for r in opens if r.status == 200}) == 3
    finally:
        stop_all(started)


async def test_the_slots_of_a_killed_process_come_back(capped: list[Any]) -> None:
    (doomed, a), (_, b) = capped
    alice = await ApiClient(f"http://{a}").register("alice")
    token = alice["token"]
    held = [await socket(a, token) for _ in range(2)]
    assert all(isinstance(ws, WsClient) for ws in held), held
    assert await socket(b, token) == 4429
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=10)
    started = time.monotonic()
    back = await socket(b, token)
    while not isinstance(back, WsClient) and time.monotonic() - started < 30:
        await asyncio.sleep(1)
        back = await socket(b, token)
    assert isinstance(back, WsClient), f"still refused after {time.monotonic() - started:.0f} s"
    assert time.monotonic() - started < 30  # the heartbeat's expiry: 20 s
