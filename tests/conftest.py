"""Fixtures: one real database server per test session, a fresh database per test, and the real
application listening on a free port."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil

from chat.config import Settings
from chat.dbserver import plan_embedded
from chat.service import ChatService
from chat.store import Store
from handlers.app import make_app
from server import tls_context
from tests.certs import Certificates
from tests.client import OPEN_CLIENTS, SECRETS, ApiClient, WsClient

TEST_SECRET = "test-secret-" + "x" * 40
TEST_BCRYPT_ROUNDS = 4  # the minimum: tests register hundreds of users; production uses 12
# Every test user signs up from 127.0.0.1: the per-address sign-up limit (tested on its own in
# test_signin_limits) would otherwise stop a test that builds a crowd.
TEST_SIGNUPS_PER_ADDRESS = 100_000
TEST_PASSWORDS = ("correct horse",)  # tests/client.py's default, which most users sign up with


class LogLines(logging.Handler):
    """Every log line (INFO and up) of the run: the in-process servers and the tests."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.name}: {record.getMessage()}")
        except Exception:
            self.lines.append(f"{record.name}: {record.msg!r} {record.args!r}")


_SECRET_SHAPES = re.compile(r"[\w-]+\.[\w-]+\.[\w-]+|[\w-]{16,}")  # JWTs; urlsafe tokens


def leaked_lines(lines: list[str], secrets: set[str], passwords: tuple[str, ...]) -> list[str]:
    """The lines that show a token or queue id the clients saw, or a test password."""
    return [
        line
        for line in lines
        if any(p in line for p in passwords)
        or any(m in secrets for m in _SECRET_SHAPES.findall(line))
    ]


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line() -> Iterator[None]:
    """The whole run's server log lines are kept; at the end, none may show a token, a queue
    id or a password (issue 20). The failure is reported as an error of the last test."""
    handler = LogLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)
    leaked = leaked_lines(handler.lines, SECRETS, TEST_PASSWORDS)
    assert not leaked, f"{len(leaked)} log lines show a secret, e.g. {leaked[:3]}"


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Close every HTTP and WebSocket client the test opened, inside the test's loop."""
    yield
    sockets = []
    while OPEN_CLIENTS:
        client = OPEN_CLIENTS.pop()
        client.close()
        if isinstance(client, WsClient):
            sockets.append(client)
    await asyncio.sleep(0)
    # The closing handshakes, briefly; then the sockets still open are closed here.
    for _ in range(25):  # 0.5 s at most
        if not any(ws.closing() for ws in sockets):
            break
        await asyncio.sleep(0.02)
    for ws in sockets:
        ws.drop()


@pytest.fixture(scope="session")
def database_uri() -> Iterator[str]:
    """CHAT_TEST_MONGO_URI when given; else a mongod on PATH, else SecantusDB in memory."""
    uri = os.environ.get("CHAT_TEST_MONGO_URI")
    if uri:
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="chat-test-db-") as tmp:
        db = plan_embedded(Path(tmp), in_memory=True)
        db.start()
        try:
            yield db.uri
        finally:
            db.stop()


def unique_db_name() -> str:
    return f"test_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def db_name() -> str:
    return unique_db_name()


def make_settings(uri: str, db_name: str, **overrides: Any) -> Settings:
    base = Settings(
        secret=TEST_SECRET,
        mongo_uri=uri,
        db_name=db_name,
        bcrypt_rounds=TEST_BCRYPT_ROUNDS,
        signups_per_address=TEST_SIGNUPS_PER_ADDRESS,
        db_timeout_ms=2000,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
async def store(database_uri: str, db_name: str) -> AsyncIterator[Store]:
    """A Store on a database of its own, with indexes, dropped after the test."""
    s = Store(database_uri, db_name, timeout_ms=2000)
    await s.ensure_indexes()
    try:
        yield s
    finally:
        await s.drop_database()
        await s.close()


@dataclasses.dataclass
class RunningServer:
    """The real application on a free loopback port."""

    service: ChatService
    store: Store
    http: tornado.httpserver.HTTPServer
    port: int
    tls: Certificates | None = None  # serving https and wss with these

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"

    def client(self, token: str | None = None) -> ApiClient:
        context = self.tls.client_context() if self.tls else None
        return ApiClient(self.base_url, token=token, ssl_context=context)


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def make_server(database_uri: str, db_name: str) -> AsyncIterator[ServerFactory]:
    """Start servers with setting overrides; all share this test's database; all stopped after."""
    started: list[RunningServer] = []

    async def start(*, tls: Certificates | None = None, **overrides: Any) -> RunningServer:
        settings = make_settings(database_uri, db_name, **overrides)
        store = Store(settings.mongo_uri, settings.db_name, timeout_ms=settings.db_timeout_ms)
        await store.ensure_indexes()
        service = ChatService.build(settings, store)
        ssl_options = tls_context(tls.cert_file, tls.key_file) if tls else None
        http = tornado.httpserver.HTTPServer(
            make_app(service), max_body_size=8 * 1024 * 1024, ssl_options=ssl_options
        )
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        http.add_sockets([sock])
        running = RunningServer(service, store, http, sock.getsockname()[1], tls)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.http.stop()
        await running.http.close_all_connections()
        await running.service.close()
    if started:
        await started[0].store.drop_database()
    for running in started:
        await running.store.close()


@pytest.fixture
async def server(make_server: ServerFactory) -> RunningServer:
    """The application with default test settings."""
    return await make_server()
