"""TLS in the server (--certfile/--keyfile): HTTPS, WSS and long-polling on one port, checked by
clients that verify the certificate (made by the test, tests/certs.py); HSTS over https only;
clear start-up errors for a certificate or key that cannot be used; and the browser client on
an https page connecting with wss: by itself."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import tornado.httpclient
from playwright.async_api import WebSocket

from chat.dbserver import free_port
from tests.browser_helpers import (
    dm_from_api,
    expect_sent,
    launch,
    new_person,
    send,
    sign_up,
    wait_live,
)
from tests.certs import Certificates, make_certificates
from tests.client import ApiClient
from tests.conftest import RunningServer, ServerFactory, unique_db_name
from tests.exchange import chat_exchange
from tests.test_security_headers import directive
from tests.test_server_process import SECRET, run_server, stop

HSTS = "max-age=31536000"


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


async def test_https_wss_and_long_polling_on_one_port(
    make_server: ServerFactory, certs: Certificates
) -> None:
    server = await make_server(tls=certs)
    assert server.base_url.startswith("https://") and server.ws_url.startswith("wss://")
    exchanged = await chat_exchange(
        server.base_url, server.ws_url, ssl_context=certs.client_context()
    )
    assert len(exchanged.request_ids) > 5 and all(exchanged.request_ids)
    client = server.client()
    health = await client.get("/healthz")
    assert health.status == 200 and health.headers["Strict-Transport-Security"] == HSTS
    page = await client.get("/")
    assert page.headers["Strict-Transport-Security"] == HSTS
    # The page's policy names the wss: origin its client connects to.
    host = f"127.0.0.1:{server.port}"
    assert directive(page.headers["Content-Security-Policy"], "connect-src") == [
        "'self'",
        f"wss://{host}",
    ]
    static = await client.get("/static/js/realtime.js")
    assert static.status == 200 and static.headers["Strict-Transport-Security"] == HSTS


async def test_a_client_that_does_not_trust_the_certificate_is_refused(
    make_server: ServerFactory, certs: Certificates
) -> None:
    server = await make_server(tls=certs)
    # The system's CAs only: the test CA is not among them, so the handshake fails.
    stranger = ApiClient(server.base_url, ssl_context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        await stranger.get("/healthz")
    # Plain HTTP to the TLS port gets no answer.
    plain = ApiClient(f"http://127.0.0.1:{server.port}")
    with pytest.raises((tornado.httpclient.HTTPClientError, OSError)):
        await plain.get("/healthz", timeout=5)


async def test_no_hsts_over_plain_http(server: RunningServer) -> None:
    response = await server.client().get("/healthz")
    assert response.status == 200
    assert "Strict-Transport-Security" not in response.headers
    assert len(response.headers["X-Request-Id"]) == 16


def https_healthy(port: int, context: ssl.SSLContext, process: subprocess.Popen[str]) -> dict:
    """GET /healthz over https (verifying the certificate) once it answers: its headers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            url = f"https://localhost:{port}/healthz"
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                assert json.loads(response.read())["status"] == "ok"
                return dict(response.headers)
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not become healthy over https")


async def test_the_server_process_serves_https_with_certfile_and_keyfile(
    database_uri: str, tmp_path: Path, certs: Certificates
) -> None:
    port = free_port()
    uri = urlunsplit(urlsplit(database_uri)._replace(path=f"/{unique_db_name()}"))
    process = run_server(
        "--mongo-uri", uri, "--port", str(port), "--secret", SECRET, "--data-dir", str(tmp_path),
        "--certfile", str(certs.cert_file), "--keyfile", str(certs.key_file),
    )  # fmt: skip
    try:
        headers = await asyncio.to_thread(https_healthy, port, certs.client_context(), process)
        assert headers["Strict-Transport-Security"] == HSTS
        await chat_exchange(
            f"https://localhost:{port}",
            f"wss://localhost:{port}/ws",
            ssl_context=certs.client_context(),
        )
    finally:
        out = stop(process)
    assert process.returncode == 0, out
    assert f"listening on https://localhost:{port}" in out


def start_error(tmp_path: Path, *args: str) -> tuple[int, str]:
    process = run_server("--secret", SECRET, "--data-dir", str(tmp_path), *args)
    out, _ = process.communicate(timeout=30)
    return process.returncode, out


def test_a_certificate_or_key_that_cannot_be_used_stops_the_start(
    tmp_path: Path, certs: Certificates
) -> None:
    cert, key = str(certs.cert_file), str(certs.key_file)
    missing = str(tmp_path / "missing.pem")
    code, out = start_error(tmp_path, "--certfile", missing, "--keyfile", key)
    assert code == 2
    assert f"error: --certfile {missing}: cannot read it: No such file or directory" in out
    code, out = start_error(tmp_path, "--certfile", cert, "--keyfile", str(tmp_path))
    assert code == 2
    assert f"error: --keyfile {tmp_path}: cannot read it: Is a directory" in out
    # Another certificate's key, and a file that is not PEM at all.
    other = make_certificates(tmp_path / "other")
    code, out = start_error(tmp_path, "--certfile", cert, "--keyfile", str(other.key_file))
    assert code == 2
    assert "not a PEM certificate and its private key (KEY_VALUES_MISMATCH)" in out, out
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    code, out = start_error(tmp_path, "--certfile", str(garbage), "--keyfile", key)
    assert code == 2 and "not a PEM certificate and its private key" in out, out
    code, out = start_error(tmp_path, "--certfile", cert)
    assert code == 2 and "--certfile and --keyfile go together" in out
    assert "Traceback" not in out


async def test_the_browser_client_on_https_connects_with_wss(
    make_server: ServerFactory, certs: Certificates
) -> None:
    server = await make_server(tls=certs)
    async with launch() as browser:
        alice = await new_person(browser, server, "alice", sign_up_now=False)
        sockets: list[WebSocket] = []
        alice.page.on("websocket", lambda ws: sockets.append(ws))
        await sign_up(alice.page, "alice")
        await wait_live(alice)
        assert [ws.url for ws in sockets] == [f"wss://127.0.0.1:{server.port}/ws"]
        # Events and commands go over it: Bob's message arrives, Alice's reply is confirmed.
        await dm_from_api(server, alice, "bob")
        await send(alice, "over wss")
        await expect_sent(alice.page, "over wss")
        assert len(sockets) == 1 and not alice.errors, alice.errors
