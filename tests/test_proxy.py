"""X-Forwarded-For, X-Real-IP and X-Forwarded-Proto count only when the TCP peer is a configured
trusted proxy: a direct client cannot choose the address or scheme the server sees."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import tornado.netutil
import tornado.web

from chat.config import parse_networks
from chat.service import ChatService
from chat.store import Store
from handlers.app import make_app
from handlers.proxy import ForwardedHTTPServer
from tests.client import ApiClient
from tests.conftest import make_settings
from tests.test_security_headers import directive
from tests.test_server_process import run_server, serve_on_test_db, stop


class WhoAmI(tornado.web.RequestHandler):
    """What a handler sees of the client."""

    def get(self) -> None:
        self.write({"remote_ip": self.request.remote_ip, "protocol": self.request.protocol})


Start = Callable[[str], Awaitable[ApiClient]]


@pytest.fixture
async def start(database_uri: str, db_name: str) -> AsyncIterator[Start]:
    """The real application behind ForwardedHTTPServer trusting the given networks."""
    servers: list[tuple[ForwardedHTTPServer, ChatService, Store]] = []

    async def run(trusted: str) -> ApiClient:
        networks = parse_networks(trusted) if trusted else ()
        settings = dataclasses.replace(
            make_settings(database_uri, db_name), trusted_proxies=networks
        )
        store = Store(settings.mongo_uri, settings.db_name, timeout_ms=settings.db_timeout_ms)
        service = ChatService.build(settings, store)
        app = make_app(service, extra_routes=[(r"/whoami", WhoAmI)])
        http = ForwardedHTTPServer(app, trusted_proxies=settings.trusted_proxies)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        http.add_sockets([sock])
        servers.append((http, service, store))
        return ApiClient(f"http://127.0.0.1:{sock.getsockname()[1]}")

    yield run
    for http, service, store in servers:
        http.stop()
        await http.close_all_connections()
        await service.close()
        await store.close()


async def seen(client: ApiClient, **headers: str) -> tuple[str, str]:
    response = await client.get("/whoami", headers=headers)
    assert response.status == 200, response.body
    return response.body["remote_ip"], response.body["protocol"]


async def test_without_a_trusted_proxy_the_headers_are_ignored(start: Start) -> None:
    for trusted in ("", "10.0.0.0/8,192.168.0.0/16,::1"):  # none, or not this peer
        client = await start(trusted)
        forged = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"}
        assert await seen(client, **forged, **{"X-Forwarded-Proto": "https"}) == (
            "127.0.0.1",
            "http",
        )
        assert await seen(client, **{"X-Real-IP": "203.0.113.8"}) == ("127.0.0.1", "http")


async def test_behind_a_trusted_proxy_the_client_is_the_first_untrusted_hop(start: Start) -> None:
    client = await start("127.0.0.0/8, 10.1.0.0/16")
    assert await seen(client) == ("127.0.0.1", "http")
    assert await seen(client, **{"X-Forwarded-For": "203.0.113.7"}) == ("203.0.113.7", "http")
    # Read from the right: trusted hops are skipped; what the client itself wrote further
    # left (a forged first entry) is not believed.
    chain = "198.51.100.1, 203.0.113.7, 10.1.2.3"
    assert (await seen(client, **{"X-Forwarded-For": chain}))[0] == "203.0.113.7"
    # A broken chain stops at the last good hop; all hops trusted: the leftmost.
    assert (await seen(client, **{"X-Forwarded-For": "junk, 203.0.113.9"}))[0] == "203.0.113.9"
    assert (await seen(client, **{"X-Forwarded-For": "10.1.0.5, 10.1.0.6"}))[0] == "10.1.0.5"
    assert (await seen(client, **{"X-Forwarded-For": "not-an-ip"}))[0] == "127.0.0.1"
    assert (await seen(client, **{"X-Forwarded-For": "2001:db8::1"}))[0] == "2001:db8::1"
    # X-Real-IP when there is no X-Forwarded-For; the scheme from X-Forwarded-Proto.
    assert (await seen(client, **{"X-Real-IP": "203.0.113.8"}))[0] == "203.0.113.8"
    assert await seen(client, **{"X-Forwarded-Proto": "https"}) == ("127.0.0.1", "https")
    assert (await seen(client, **{"X-Forwarded-Proto": "gopher"}))[1] == "http"
    # Per request: a kept-alive connection's next request starts from the peer again.
    results = await asyncio.gather(
        seen(client, **{"X-Forwarded-For": "203.0.113.10"}), seen(client)
    )
    assert sorted(r[0] for r in results) == ["127.0.0.1", "203.0.113.10"]
    assert await seen(client) == ("127.0.0.1", "http")


async def test_trusted_proxy_option_of_the_server_process(
    database_uri: str, tmp_path: Path
) -> None:
    forwarded = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "Host": "chat.example.com",
    }
    runs = (((), "127.0.0.1", "ws"), (("--trusted-proxy", "127.0.0.1"), "203.0.113.7", "wss"))
    for args, client_ip, scheme in runs:
        # The access log names the client's address as the server saw it.
        process, host = await serve_on_test_db(database_uri, tmp_path, "--access-log", *args)
        try:
            client = ApiClient(f"http://{host}")
            page = await client.get("/?probe", headers=forwarded)
            policy = page.headers["Content-Security-Policy"]
            assert directive(policy, "connect-src") == ["'self'", f"{scheme}://chat.example.com"]
            client.close()
        finally:
            out = stop(process)
        assert process.returncode == 0, out
        assert f"200 GET /?probe ({client_ip})" in out, out


def test_a_malformed_trusted_proxy_is_refused(tmp_path: Path) -> None:
    process = run_server("--trusted-proxy", "10.0.0.0/8,nonsense", "--data-dir", str(tmp_path))
    out, _ = process.communicate(timeout=20)
    assert process.returncode == 2
    assert "--trusted-proxy: 'nonsense' is not an IP address or network" in out
