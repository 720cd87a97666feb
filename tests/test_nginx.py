"""TLS at nginx in front of the server: Debian's nginx (test.sh installs it), run with
deploy/nginx.conf itself (its ports, addresses and certificate paths replaced), carries a
conversation over WSS and long-polling; the server, trusting it, sees the client's address, the
https scheme and nginx's request id."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.httpclient

from chat.dbserver import free_port
from tests.certs import Certificates, make_certificates
from tests.client import ApiClient
from tests.exchange import chat_exchange
from tests.test_logs import logged_server
from tests.test_security_headers import directive

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

MAIN_CONFIG = """
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections {connections}; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
"""


def rendered(site: Path, https_port: int, http_port: int, certs: Certificates,
             replacements: dict[str, str]) -> str:  # fmt: skip
    """A sample site on loopback ports of a test, with its certificate, and these changes."""
    text = site.read_text()
    replacements = {
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen [::]:443 ssl;": "",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "/etc/letsencrypt/live/chat.example.com/fullchain.pem": str(certs.cert_file),
        "/etc/letsencrypt/live/chat.example.com/privkey.pem": str(certs.key_file),
        **replacements,
    }
    for old, new in replacements.items():
        assert old in text, f"deploy/{site.name} no longer has {old!r}: update this test"
        text = text.replace(old, new)
    return text


def site_config(server_port: int, https_port: int, http_port: int, certs: Certificates) -> str:
    """deploy/nginx.conf on loopback ports of this test, with its certificate."""
    upstream = {"server 127.0.0.1:8888;": f"server 127.0.0.1:{server_port};"}
    return rendered(SITE, https_port, http_port, certs, upstream)


def wait_listening(port: int, process: subprocess.Popen[bytes], prefix: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
            raise AssertionError(f"nginx exited ({process.returncode}): {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError("nginx did not listen")


@contextlib.contextmanager
def nginx(prefix: Path, site: str, port: int, connections: int = 512) -> Iterator[None]:
    """nginx with this site, in the foreground, until the block ends (the benchmarks give it
    room for more connections)."""
    assert Path(NGINX).exists(), "nginx is not installed: ./test.sh installs it (apt-get)"
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site)
    (prefix / "nginx.conf").write_text(MAIN_CONFIG.format(prefix=prefix, connections=connections))
    process = subprocess.Popen(
        [
            NGINX,
            "-p",
            str(prefix),
            "-c",
            str(prefix / "nginx.conf"),
            "-e",
            str(prefix / "error.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process, prefix)
        yield
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


async def test_a_conversation_through_nginx_terminating_tls(
    database_uri: str, tmp_path: Path, certs: Certificates
) -> None:
    https_port, http_port = free_port(), free_port()
    base = f"https://localhost:{https_port}"
    async with logged_server(
        database_uri, tmp_path / "server", "--trusted-proxy", "127.0.0.1", "--access-log",
        "--log-format", "json",
    ) as (host, log):  # fmt: skip
        server_port = int(host.rsplit(":", 1)[1])
        site = site_config(server_port, https_port, http_port, certs)
        with nginx(tmp_path / "nginx", site, https_port):
            client = ApiClient(base, ssl_context=certs.client_context())
            health = await client.get("/healthz")
            assert health.status == 200, health.body
            # The server saw https (from X-Forwarded-Proto): HSTS, and a page naming wss:.
            assert health.headers["Strict-Transport-Security"] == "max-age=31536000"
            assert re.fullmatch(r"[0-9a-f]{32}", health.headers["X-Request-Id"])  # nginx's
            page = await client.get("/")
            assert directive(page.headers["Content-Security-Policy"], "connect-src") == [
                "'self'",
                f"wss://localhost:{https_port}",
            ]
            exchanged = await asyncio.wait_for(
                chat_exchange(
                    base,
                    f"wss://localhost:{https_port}/ws",
                    ssl_context=certs.client_context(),
                    headers={"X-Forwarded-For": "203.0.113.9"},
                    origin=base,  # as a browser sends it: the same origin, through nginx
                ),
                60,
            )
            plain = tornado.httpclient.AsyncHTTPClient(force_instance=True)
            redirect = await plain.fetch(
                f"http://127.0.0.1:{http_port}/healthz", follow_redirects=False, raise_error=False
            )
            assert redirect.code == 301
            assert redirect.headers["Location"] == "https://127.0.0.1/healthz"
            client.close()
            plain.close()
    access = [line for line in log.json_lines() if line["logger"] == "tornado.access"]
    # What the client said of itself, appended to by nginx (a trusted hop): the client is it.
    rest = [line for line in access if line["path"].startswith("/api/")]
    assert rest and {line["client"] for line in rest} == {"203.0.113.9"}, rest
    ids = {line["request_id"] for line in access}
    assert set(exchanged.request_ids) <= ids
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in exchanged.request_ids)
    upgrade = next(line for line in access if line["path"] == "/ws")
    assert upgrade["status"] == 101
