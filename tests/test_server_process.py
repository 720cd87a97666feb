"""server.py as a user runs it: start-up failures, the embedded default, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import tornado.httpclient
import tornado.websocket

from chat.dbserver import free_port
from tests.client import ApiClient, WsClient
from tests.conftest import unique_db_name

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s" * 40


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_server(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "server.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=server_env(),
        cwd=ROOT,
    )


def http(
    method: str, url: str, body: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_healthy(
    port: int, process: subprocess.Popen[str], timeout: float = 60, *, read_output: bool = True
) -> None:
    """Until /healthz answers 200; read_output=False when someone else reads the output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout and read_output else ""
            raise AssertionError(f"server exited early ({process.returncode}): {out}")
        try:
            if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


def stop(process: subprocess.Popen[str], timeout: float = 30) -> str:
    """Stop the server with SIGTERM; its output. One that is still running after timeout is
    asked for its threads' stacks (SIGQUIT), killed, and fails the test with its output."""
    process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGQUIT)
        time.sleep(1)
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"the server did not stop within {timeout} s:\n{out}") from None
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose only once reaped; report it as alive until then.
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status


def test_unreachable_mongo_uri_exits_nonzero_quickly(tmp_path: Path) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/chat"
    started = time.monotonic()
    process = run_server(
        "--mongo-uri", dead, "--port", str(free_port()), "--data-dir", str(tmp_path),
        "--secret", SECRET,
    )  # fmt: skip
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 1
    assert time.monotonic() - started < 15
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert lines == [f"error: cannot reach the database at {dead} within 3 s"]


def test_short_secret_is_refused(tmp_path: Path) -> None:
    process = run_server("--secret", "too-short", "--data-dir", str(tmp_path))
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 2
    assert "secret must be at least 32 bytes" in out


def test_queue_grace_out_of_range_is_refused(tmp_path: Path) -> None:
    process = run_server("--queue-grace", "0", "--secret", SECRET, "--data-dir", str(tmp_path))
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 2
    assert "--queue-grace must be between 1 s and a day" in out


async def serve_on_test_db(
    database_uri: str, tmp_path: Path, *args: str, command: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """server.py on the shared test database, under a database name of its own, once healthy:
    (the process, its host:port)."""
    uri = urlunsplit(urlsplit(database_uri)._replace(path=f"/{unique_db_name()}"))
    port = free_port()
    process = run_server(
        *([command] if command else []),
        "--mongo-uri", uri, "--port", str(port), "--secret", SECRET, "--data-dir", str(tmp_path),
        *args,
    )  # fmt: skip
    try:
        await asyncio.to_thread(wait_healthy, port, process)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process, f"127.0.0.1:{port}"


async def test_queue_grace_sets_how_long_a_queue_waits(database_uri: str, tmp_path: Path) -> None:
    process, host = await serve_on_test_db(database_uri, tmp_path, "--queue-grace", "1")
    try:
        api = ApiClient(f"http://{host}")
        token = (await api.register("grace"))["token"]
        ws_url = f"ws://{host}/ws"
        ws = await WsClient.connect(ws_url)
        hello = await ws.auth(token)
        ws.close()
        await ws.wait_closed()
        resume = {"queue_id": hello["queue_id"], "epoch": hello["epoch"], "last_event_id": 0}
        # Within the grace the queue is still there...
        ws = await WsClient.connect(ws_url)
        assert (await ws.auth(token, **resume))["resumed"] is True
        ws.close()
        await ws.wait_closed()
        # ...and a second past it (the default would keep it for 120 s) it is gone.
        await asyncio.sleep(2.5)
        ws = await WsClient.connect(ws_url)
        late = await ws.auth(token, **resume)
        assert late["resumed"] is False and late["queue_id"] != hello["queue_id"]
        ws.close()
        api.close()
    finally:
        out = stop(process)
    assert process.returncode == 0, out


async def test_shutdown_under_load_closes_sockets_with_1001_and_logs_no_error(
    database_uri: str, tmp_path: Path
) -> None:
    process, host = await serve_on_test_db(database_uri, tmp_path)
    try:
        api = ApiClient(f"http://{host}")
        token = (await api.register("leaving"))["token"]
        ws_url = f"ws://{host}/ws"
        settled = [await WsClient.connect(ws_url) for _ in range(20)]
        for ws in settled:
            await ws.auth(token)

        async def arriving() -> None:
            # Still signing in (a database read) when the server is told to stop, or still in
            # the upgrade, which the stopping server cuts (HTTPStreamClosedError).
            cut = (ConnectionError, OSError, tornado.websocket.WebSocketError,
                   tornado.httpclient.HTTPClientError)  # fmt: skip
            with contextlib.suppress(*cut):
                ws = await WsClient.connect(ws_url)
                await ws.send({"type": "auth", "token": token})
                await ws.wait_closed(timeout=10)

        late = [asyncio.create_task(arriving()) for _ in range(400)]
        await asyncio.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        codes = [await ws.wait_closed(timeout=10) for ws in settled]
        await asyncio.gather(*late)
        api.close()
    finally:
        out, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, out
    assert codes == [1001] * len(settled)
    assert " ERROR " not in out and "Traceback" not in out, out
    assert re.search(r"stopped \(\d+ WebSockets closed with 1001\)", out), out


def test_help_explains_every_option() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--help"],
        capture_output=True, text=True, check=True, env=server_env(),
    ).stdout  # fmt: skip
    for option in (
        "--port",
        "--mongo-uri",
        "--data-dir",
        "--secret",
        "--queue-grace",
        "--presence-grace",
        "--max-upload-mb",
        "--uploads-per-user",
        "--upload-window",
        "--frames-per-sec",
        "--typing-burst",
        "--trusted-proxy",
        "--access-log",
        "--log-format",
        "--certfile",
        "--keyfile",
        "--metrics-port",
        "--metrics-address",
        "--debug",
        "CHAT_MONGO_URI",
        "CHAT_SECRET",
        "CHAT_LOG_FORMAT",
        "CHAT_CERTFILE",
        "CHAT_KEYFILE",
        "CHAT_METRICS_PORT",
    ):
        assert option in out


def test_subcommands_are_listed_and_serve_is_the_default() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "server.py"), *args],
            capture_output=True, text=True, env=server_env(), timeout=30,
        )  # fmt: skip

    top = run("--help")
    assert top.returncode == 0 and "commands:" in top.stdout
    assert "serve    run the server (the default" in top.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0 and serve.stdout.startswith("usage: chat-server serve")
    assert "--max-upload-mb" in serve.stdout
    unknown = run("serv", "--port", "1")
    assert unknown.returncode == 2 and "unknown command 'serv'; commands: serve" in unknown.stderr


async def test_serve_subcommand_runs_the_server(database_uri: str, tmp_path: Path) -> None:
    process, host = await serve_on_test_db(database_uri, tmp_path, command="serve")
    try:
        api = ApiClient(f"http://{host}")
        assert "token" in await api.register("served")
        api.close()
    finally:
        out = stop(process)
    assert process.returncode == 0, out


def test_embedded_default_keeps_data_across_restart_and_leaves_no_process(tmp_path: Path) -> None:
    port = free_port()
    args = ("--port", str(port), "--data-dir", str(tmp_path))
    first = run_server(*args)
    try:
        wait_healthy(port, first)
        status, body = http(
            "POST", f"http://127.0.0.1:{port}/api/auth/register",
            {"username": "keeper", "email": "keeper@example.com", "password": "correct horse"},
        )  # fmt: skip
        assert status == 201, body
        token = body["token"]
        first.send_signal(signal.SIGUSR1)  # logs a memory line, then serves on
        first.send_signal(signal.SIGUSR2)  # logs the collector's pauses
        first.send_signal(signal.SIGQUIT)  # writes every thread's stack
        assert http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        out = stop(first)
    assert first.returncode == 0, out
    assert re.search(r"memory: rss [\d.]+ MiB, python blocks \d+, gc objects \d+", out), out
    assert re.search(r"gc pauses: gen0 \d+ x, longest [\d.]+ ms, total \d+ ms, gen1", out), out
    assert re.search(r"Current thread 0x[0-9a-f]+ \(most recent call first\):\n  File ", out), out
    match = re.search(r"database: embedded (\S+) \(pid (\d+)\)", out)
    assert match, out
    assert not pid_alive(int(match.group(2)))
    secret_file = tmp_path / "secret"
    assert secret_file.exists() and oct(secret_file.stat().st_mode & 0o777) == "0o600"

    second = run_server(*args)
    try:
        wait_healthy(port, second)
        status, body = http(
            "POST", f"http://127.0.0.1:{port}/api/auth/login",
            {"login": "keeper", "password": "correct horse"},
        )  # fmt: skip
        assert status == 200, body
        # The generated secret was kept: a token issued before the restart still works.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/me", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["user"]["username"] == "keeper"
    finally:
        out = stop(second)
    assert second.returncode == 0
    match = re.search(r"database: embedded (\S+) \(pid (\d+)\)", out)
    assert match and not pid_alive(int(match.group(2)))
