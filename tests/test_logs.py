"""What the server logs about requests, read from server.py's own output: never a token or a
queue id, and no line per request at INFO unless --access-log asks for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import tornado.netutil
import tornado.web

from chat.dbserver import free_port
from chat.service import ChatService
from chat.store import Store
from handlers.app import make_app
from handlers.proxy import ForwardedHTTPServer
from tests.client import ApiClient, WsClient
from tests.conftest import make_settings, unique_db_name
from tests.test_server_process import SECRET, run_server, wait_healthy

ACCESS_LINE = re.compile(r" (DEBUG|INFO|WARNING|ERROR) tornado\.access: (\d{3}) (\S+) (\S+)")


async def make_requests(host: str) -> list[str]:
    """Sign up, read, long-poll and open a socket with the token on its URL; the secrets the
    requests carried (the token and both queue ids)."""
    api = ApiClient(f"http://{host}")
    token = (await api.register("logged"))["token"]
    assert (await api.get("/api/me")).status == 200
    first = await api.get("/api/events")
    queue_id = first.body["queue_id"]
    again = await api.get(f"/api/events?queue_id={queue_id}&last_event_id=0&timeout=0")
    assert again.status == 200 and again.body["queue_id"] == queue_id
    assert (await api.get("/api/me?token=" + token, token="")).status == 401
    ws = await WsClient.connect(f"ws://{host}/ws?token={token}&queue_id={queue_id}")
    hello = await ws.next_frame("hello")
    ws.close()
    await ws.wait_closed()
    api.close()
    return [token, queue_id, hello["queue_id"]]


class Log:
    """The output of a server process, complete once it stopped."""

    text = ""

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line parsed as one JSON object (fails on the first that is not)."""
        parsed = []
        for line in self.lines:
            value = json.loads(line)
            assert isinstance(value, dict), line
            parsed.append(value)
        return parsed


@contextlib.asynccontextmanager
async def logged_server(
    database_uri: str, tmp_path: Path, *args: str
) -> AsyncIterator[tuple[str, Log]]:
    """server.py on the test database with these options: (host:port, its log). The log is
    read from the start (--debug writes more than a pipe holds before listening), and is
    complete after the block, once the server stopped (asserted: with status 0)."""
    uri = urlunsplit(urlsplit(database_uri)._replace(path=f"/{unique_db_name()}"))
    port = free_port()
    process = run_server(
        "--mongo-uri", uri, "--port", str(port), "--secret", SECRET, "--data-dir", str(tmp_path),
        *args,
    )  # fmt: skip
    assert process.stdout is not None
    reader = asyncio.create_task(asyncio.to_thread(process.stdout.read))
    log = Log()
    try:
        await asyncio.to_thread(wait_healthy, port, process, read_output=False)
        yield f"127.0.0.1:{port}", log
    finally:
        process.send_signal(signal.SIGTERM)
        log.text = await reader
        await asyncio.to_thread(process.wait, 30)
        process.stdout.close()
    assert process.returncode == 0, log.text


@pytest.mark.parametrize("options", [(), ("--access-log",), ("--debug",)])
async def test_no_secret_in_the_log_and_access_lines_only_when_asked(
    database_uri: str, tmp_path: Path, options: tuple[str, ...]
) -> None:
    async with logged_server(database_uri, tmp_path, *options) as (host, log):
        secrets = await make_requests(host)
    out = log.text
    for secret in secrets:
        assert secret not in out, (secret, out)
    assert "listening on http://localhost:" in out
    lines = ACCESS_LINE.findall(out)
    if not options:  # nothing per request, at any level
        assert not lines, out
        return
    info = options == ("--access-log",)  # else --debug: the same lines, at DEBUG
    assert {level for level, *_ in lines} == ({"INFO", "WARNING"} if info else {"DEBUG"})
    level = "INFO" if info else "DEBUG"
    assert f"{level} tornado.access: 200 GET /api/me (127.0.0.1)" in out
    # Secret values are replaced; the rest of the query stays readable.
    assert f"{level} tornado.access: 200 GET /api/events?queue_id=***&last_event_id=0" in out
    assert "GET /ws?token=***&queue_id=*** (127.0.0.1)" in out
    level = "WARNING" if info else "DEBUG"
    assert f"{level} tornado.access: 401 GET /api/me?token=*** (127.0.0.1)" in out


class Broken(tornado.web.RequestHandler):
    def get(self) -> None:
        raise RuntimeError("a bug")


@pytest.fixture
async def broken_app(database_uri: str, db_name: str) -> AsyncIterator[ApiClient]:
    """The real application with a route that fails with an uncaught exception."""
    settings = make_settings(database_uri, db_name)
    store = Store(settings.mongo_uri, settings.db_name, timeout_ms=settings.db_timeout_ms)
    service = ChatService.build(settings, store)
    http = ForwardedHTTPServer(make_app(service, extra_routes=[(r"/broken", Broken)]))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    http.add_sockets([sock])
    yield ApiClient(f"http://127.0.0.1:{sock.getsockname()[1]}")
    http.stop()
    await http.close_all_connections()
    await service.close()
    await store.close()


async def test_an_uncaught_exception_is_logged_without_the_urls_secrets(
    broken_app: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = await broken_app.get("/broken?token=sekrit.jwt.value&queue_id=q123&x=1")
        assert response.status == 500
        # An encoded name is the same argument to Tornado, so it is a secret in the log too.
        encoded = await broken_app.get("/broken?%74oken=sekrit2&Queue_Id=q456")
        assert encoded.status == 500
    assert "Uncaught exception GET /broken?token=***&queue_id=***&x=1" in caplog.text
    assert "GET /broken?%74oken=***&Queue_Id=*** (127.0.0.1)" in caplog.text
    assert "RuntimeError: a bug" in caplog.text  # the traceback is kept
    for secret in ("sekrit", "q123", "q456"):
        assert secret not in caplog.text
