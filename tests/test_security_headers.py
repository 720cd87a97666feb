"""Security headers over real HTTP: the page's Content-Security-Policy lets it connect to its own
origin only (WebSockets included), and every static file is sent with nosniff."""

from __future__ import annotations

import re

from tests.conftest import RunningServer


def directive(policy: str, name: str) -> list[str]:
    [found] = [d.split() for d in policy.split(";") if d.split()[:1] == [name]]
    return found[1:]


async def test_page_connects_only_to_its_own_origin(server: RunningServer) -> None:
    client = server.client()
    response = await client.get("/")
    assert response.status == 200
    host = f"127.0.0.1:{server.port}"
    policy = response.headers["Content-Security-Policy"]
    # 'self' does not cover ws: in every browser: the socket's own URL is named, nothing else.
    assert directive(policy, "connect-src") == ["'self'", f"ws://{host}"]
    assert directive(policy, "default-src") == ["'self'"]
    # The name the browser used is the one allowed...
    named = await client.get("/", headers={"Host": "chat.example.com:8443"})
    assert directive(named.headers["Content-Security-Policy"], "connect-src") == [
        "'self'",
        "ws://chat.example.com:8443",
    ]
    # ...and a Host that is not a host name adds nothing to the policy (Tornado itself
    # refuses some with 400).
    odd = await client.get("/", headers={"Host": "x'y"})
    assert directive(odd.headers["Content-Security-Policy"], "connect-src") == ["'self'"]
    for bad in ("evil.example; script-src *", "a b"):
        odd = await client.get("/", headers={"Host": bad})
        assert odd.status == 400 or "script-src *" not in odd.headers["Content-Security-Policy"]


async def test_static_files_are_sent_with_nosniff(server: RunningServer) -> None:
    client = server.client()
    page = await client.get("/")
    paths = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.body)
    assert any(p.startswith("/static/js/") for p in paths)
    assert any(p.startswith("/static/css/") for p in paths)
    for path in [*paths, "/static/js/api.js", "/static/no-such-file.js"]:
        response = await client.get(path)
        assert response.status in (200, 404), path
        assert response.headers.get("X-Content-Type-Options") == "nosniff", path
    assert page.headers.get("X-Content-Type-Options") == "nosniff"
