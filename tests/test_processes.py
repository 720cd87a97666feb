"""Several server processes on one database and one Redis (Debian's redis-server, started here on
a free port): what one process does takes effect in the others at once, through the bus."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from chat.dbserver import free_port
from tests.client import ApiClient, WsClient
from tests.conftest import unique_db_name
from tests.test_server_process import SECRET, run_server, stop, wait_healthy


@dataclasses.dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this module's own, in memory, on a free loopback port."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    """Debian's redis-server, in memory, on a free loopback port, until the block ends (the
    benchmarks start theirs with it too)."""
    executable = shutil.which("redis-server")
    assert executable, "redis-server is missing: ./test.sh installs it (Debian's redis-server)"
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"

    def ready() -> None:  # synchronous: the benchmarks start it inside their event loop
        client = redis.Redis.from_url(url)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    return
                except (OSError, redis.ConnectionError):
                    time.sleep(0.1)
            raise AssertionError("redis-server did not answer")
        finally:
            client.close()

    try:
        ready()
        yield RedisServer(url, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


async def start_processes(
    database_uri: str, tmp_path: Path, count: int, *args: str
) -> list[tuple[subprocess.Popen[str], str]]:
    """count server.py processes on one database (a name of their own), each healthy."""
    uri = urlunsplit(urlsplit(database_uri)._replace(path=f"/{unique_db_name()}"))
    started = []
    try:
        for n in range(count):
            port = free_port()
            process = run_server(
                "--mongo-uri", uri, "--port", str(port), "--secret", SECRET,
                "--data-dir", str(tmp_path / f"p{n}"), *args,
            )  # fmt: skip
            started.append((process, f"127.0.0.1:{port}"))
            await asyncio.to_thread(wait_healthy, port, process)
    except BaseException:
        for process, _ in started:
            process.kill()
            process.communicate()
        raise
    return started


@pytest.fixture
async def two_processes(
    database_uri: str, tmp_path: Path, redis_url: str
) -> AsyncIterator[list[str]]:
    started = await start_processes(database_uri, tmp_path, 2, "--redis-url", redis_url)
    try:
        yield [host for _, host in started]
    finally:
        stop_all(started)


def stop_all(started: list[tuple[subprocess.Popen[str], str]]) -> None:
    """Stop every process still running, each one even when an earlier one fails (none
    outlives its test), then check that each stopped cleanly: exit 0, nothing logged as an
    error."""
    failures = []
    for process, _ in started:
        if process.poll() is not None:
            continue  # stopped by the test itself
        try:
            out = stop(process)
        except AssertionError as exc:  # it did not stop and was killed: its output is in exc
            failures.append(str(exc))
            continue
        if process.returncode != 0 or " ERROR " in out or "Traceback" in out:
            failures.append(f"exit {process.returncode}:\n{out}")
    assert not failures, "\n\n".join(failures)


async def test_a_logout_on_one_process_ends_the_sessions_sockets_on_another(
    two_processes: list[str],
) -> None:
    a, b = two_processes
    token = (await ApiClient(f"http://{a}").register("roaming"))["token"]
    ws = await WsClient.connect(f"ws://{b}/ws")
    await ws.auth(token)
    assert (await ws.command("me"))["ok"] is True  # the session is known on b now

    assert (await ApiClient(f"http://{a}", token).post("/api/auth/logout", {})).status == 200
    # b learns it from the bus, not from its session cache expiring: at once.
    ended = await ws.event("session.ended", timeout=3)
    assert ended["event"]["type"] == "session.ended"
    assert (await ApiClient(f"http://{b}", token).get("/api/me")).status == 401


async def test_a_block_on_one_process_is_enforced_by_another_at_once(
    two_processes: list[str],
) -> None:
    a, b = two_processes
    alice = await ApiClient(f"http://{a}").register("alice")
    bob = await ApiClient(f"http://{b}").register("bob")
    alice_on_a = ApiClient(f"http://{a}", alice["token"])
    bob_on_b = ApiClient(f"http://{b}", bob["token"])
    dm = await bob_on_b.post("/api/conversations/dm", {"user_id": alice["user"]["id"]})
    cid = dm.body["conversation"]["id"]
    sent = await bob_on_b.post(f"/api/conversations/{cid}/messages", {"body": "hi"})
    assert sent.status == 201  # b now keeps bob's blocks (none) in memory

    block = await alice_on_a.put(f"/api/blocks/{bob['user']['id']}")
    assert block.status in (200, 201), block.body
    # b refuses bob's next message: its cache of blocks was told (the notice takes a moment).
    # Alone, b would keep the cache it read before the block, and store every one of these.
    for _ in range(30):
        refused = await bob_on_b.post(f"/api/conversations/{cid}/messages", {"body": "again"})
        if refused.status == 403:
            break
        await asyncio.sleep(0.1)
    assert refused.status == 403 and refused.body["error"]["code"] == "blocked", refused.body


async def test_a_redis_that_does_not_answer_stops_the_start_with_a_clear_error(
    database_uri: str, tmp_path: Path
) -> None:
    uri = urlunsplit(urlsplit(database_uri)._replace(path=f"/{unique_db_name()}"))
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    process = run_server(
        "--mongo-uri", uri, "--port", str(free_port()), "--secret", SECRET,
        "--data-dir", str(tmp_path), "--redis-url", nobody,
    )  # fmt: skip
    out, _ = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 1, out
    assert f"cannot reach Redis at {nobody}" in out, out


async def test_sign_in_failures_and_typing_are_counted_across_processes(
    database_uri: str, tmp_path: Path, redis_url: str
) -> None:
    started = await start_processes(
        database_uri, tmp_path, 2, "--redis-url", redis_url, "--login-failures-per-account", "3"
    )
    try:
        a, b = (ApiClient(f"http://{host}") for _, host in started)
        alice = await a.register("alice")
        # Three failures, spread over both processes, spend the account's allowance: alone,
        # each process would allow three of its own.
        statuses = [
            (await api.post("/api/auth/login", {"login": "alice", "password": "wrong"})).status
            for api in (a, b, a, b)
        ]
        assert statuses == [401, 401, 401, 429], statuses

        dm = await ApiClient(a.base_url, alice["token"]).post(
            "/api/conversations/dm", {"user_id": (await b.register("bob"))["user"]["id"]}
        )
        path = f"/api/conversations/{dm.body['conversation']['id']}/typing"
        first = await ApiClient(a.base_url, alice["token"]).post(path, {})
        again = await ApiClient(b.base_url, alice["token"]).post(path, {})
        assert first.body == {"forwarded": True}, first.body
        assert again.body == {"forwarded": False}, again.body  # within the interval, elsewhere
    finally:
        for process, _ in started:
            out = stop(process)
            assert process.returncode == 0, out
