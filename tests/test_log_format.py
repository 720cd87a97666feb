"""--log-format json, request ids, and the guard on every log format: a server process is taken
through sign-up, sign-in (a password in a body), WebSocket auth and long-polls with queue ids on
their URLs, and no line of its log may show a token, the password or a queue id."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.client import SECRETS, ApiClient, WsClient
from tests.conftest import TEST_PASSWORDS, RunningServer, leaked_lines
from tests.exchange import chat_exchange
from tests.test_logs import logged_server

GUARDED = [
    ("--access-log",),
    ("--debug",),
    ("--log-format", "json", "--access-log"),
    ("--log-format", "json", "--debug"),
]


@pytest.mark.parametrize("options", GUARDED, ids=" ".join)
async def test_no_token_password_or_queue_id_in_any_log_line(
    database_uri: str, tmp_path: Path, options: tuple[str, ...]
) -> None:
    async with logged_server(database_uri, tmp_path, *options) as (host, log):
        exchanged = await chat_exchange(f"http://{host}", f"ws://{host}/ws")
        # The token on a WebSocket URL, and a queue id on a poll's, are redacted too.
        api = ApiClient(f"http://{host}", token=exchanged.tokens[0])
        await api.get(f"/api/events?queue_id={exchanged.queue_ids[0]}&timeout=0")
        await api.get(f"/api/me?token={exchanged.tokens[1]}", token="")
        api.close()
    assert len(log.lines) > 10
    for number, line in enumerate(log.lines, 1):
        for secret in exchanged.secrets:
            assert secret not in line, f"line {number} shows {secret!r}: {line}"
    if "json" in options:
        log.json_lines()  # every line, pymongo's and Tornado's included


async def test_json_lines_carry_request_and_user_ids_and_the_access_fields(
    database_uri: str, tmp_path: Path
) -> None:
    async with logged_server(database_uri, tmp_path, "--log-format", "json", "--access-log") as (
        host,
        log,
    ):
        # From a peer that is not a trusted proxy, the client's X-Request-Id is not used.
        exchanged = await chat_exchange(
            f"http://{host}", f"ws://{host}/ws", headers={"X-Request-Id": "chosen-by-client"}
        )
    lines = log.json_lines()
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message"}, line
        assert line["time"].endswith("Z") and "T" in line["time"]
    assert any(line["message"].startswith("listening on http://") for line in lines)
    access = [line for line in lines if line["logger"] == "tornado.access"]
    assert access and all(
        {"method", "path", "status", "duration_ms", "client", "request_id"} <= set(line)
        for line in access
    ), access
    # Each response's X-Request-Id is its access line's; none is the client's.
    assert "chosen-by-client" not in log.text
    by_id = {line["request_id"]: line for line in access}
    assert set(exchanged.request_ids) <= set(by_id)
    polls = [line for line in access if line["path"].startswith("/api/events")]
    assert polls and all(line["status"] == 200 and line["user_id"] for line in polls)
    assert all(line["method"] == "GET" and isinstance(line["duration_ms"], float) for line in polls)
    assert any("queue_id=***" in line["path"] for line in polls)
    signup = next(line for line in access if line["path"] == "/api/auth/register")
    assert signup["status"] == 201 and "user_id" not in signup  # not signed in yet
    upgrade = next(line for line in access if line["path"] == "/ws")
    assert upgrade["status"] == 101 and upgrade["request_id"]


async def test_a_trusted_proxy_names_the_request_id(database_uri: str, tmp_path: Path) -> None:
    async with logged_server(
        database_uri, tmp_path, "--log-format", "json", "--access-log", "--trusted-proxy",
        "127.0.0.1",
    ) as (host, log):  # fmt: skip
        api = ApiClient(f"http://{host}")
        kept = await api.get(
            "/healthz", headers={"X-Request-Id": "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"}
        )
        assert kept.headers["X-Request-Id"] == "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"
        # Not a plain token (or too long): replaced, so no odd text reaches a log line.
        for odd in ("two words", "x" * 129, 'quote"d'):
            replaced = await api.get("/healthz", headers={"X-Request-Id": odd})
            assert replaced.headers["X-Request-Id"] != odd
            assert len(replaced.headers["X-Request-Id"]) == 16
        # Per request: the next one on the same connection gets its own id again.
        plain = await api.get("/healthz")
        assert len(plain.headers["X-Request-Id"]) == 16
        api.close()
    ids = [
        line.get("request_id") for line in log.json_lines() if line["logger"] == "tornado.access"
    ]
    assert "0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c" in ids
    assert plain.headers["X-Request-Id"] in ids


async def test_the_suite_wide_scan_catches_a_token_a_queue_id_and_a_password(
    server: RunningServer,
) -> None:
    # conftest.no_secret_in_any_log_line fails the run on such lines; here is what it finds.
    api = ApiClient(server.base_url)
    token = (await api.register("leaky"))["token"]
    ws = await WsClient.connect(server.ws_url)
    queue_id = (await ws.auth(token))["queue_id"]
    assert {token, queue_id} <= SECRETS
    lines = [
        f"tornado.access: 200 GET /ws?token={token} (127.0.0.1)",
        f"chat.events: queue {queue_id} resumed",
        "handlers.base: body {'password': 'correct horse'}",
        "tornado.access: 200 GET /api/events?queue_id=*** (127.0.0.1)",
    ]
    assert leaked_lines(lines, SECRETS, TEST_PASSWORDS) == lines[:3]
