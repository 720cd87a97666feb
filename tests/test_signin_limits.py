"""Failed sign-ins are limited per account and per client address, sign-ups per address: one
limiter, shared by REST and WebSocket."""

from __future__ import annotations

from tests.client import WsClient
from tests.conftest import ServerFactory

WRONG = {"login": "alice", "password": "wrong horse"}
RIGHT = {"login": "alice", "password": "correct horse"}


async def test_failed_sign_ins_per_account_over_both_transports(
    make_server: ServerFactory,
) -> None:
    server = await make_server(
        login_failures_per_account=3, login_failures_per_address=100, login_window_secs=60
    )
    api = server.client()
    await api.register("alice")
    await api.register("bob")
    for _ in range(2):
        assert (await api.post("/api/auth/login", WRONG)).error_code == "invalid_credentials"
    # A new socket is no fresh allowance: the third failure is the account's last.
    ws = await WsClient.connect(server.ws_url)
    reply = await ws.command("auth.login", **WRONG)
    assert reply["error"]["code"] == "invalid_credentials"
    ws = await WsClient.connect(server.ws_url)
    reply = await ws.command("auth.login", **RIGHT)
    assert reply["ok"] is False and reply["error"]["code"] == "rate_limited"
    assert 1 <= reply["error"]["retry_after"] <= 20  # 3 per 60 s: one back every 20 s
    refused = await api.post("/api/auth/login", {**RIGHT, "login": "ALICE@example.com"})
    assert refused.status == 429 and refused.error_code == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    # Another account from the same address is not affected, nor are signed-in sessions.
    assert (await api.post("/api/auth/login", {**RIGHT, "login": "bob"})).status == 200
    assert (await api.get("/api/me")).status == 200


async def test_failed_sign_ins_per_address_whatever_the_account(make_server: ServerFactory) -> None:
    server = await make_server(
        login_failures_per_account=100, login_failures_per_address=3, login_window_secs=60
    )
    api = server.client()
    await api.register("alice")
    for name in ("nobody", "alice"):
        assert (await api.post("/api/auth/login", {**WRONG, "login": name})).status == 401
    ws = await WsClient.connect(server.ws_url)
    assert (await ws.command("auth.login", **{**WRONG, "login": "ghost"}))["ok"] is False
    refused = await api.post("/api/auth/login", {**WRONG, "login": "someone-else"})
    assert refused.status == 429 and "Retry-After" in refused.headers
    reply = await ws.command("auth.login", **RIGHT)
    assert reply["error"]["code"] == "rate_limited"
    # Successful sign-ins spend nothing: under a fresh limit, many in a row pass.
    server = await make_server(login_failures_per_address=2)
    api = server.client()
    await api.register("carol")
    for _ in range(5):
        ok = await api.post("/api/auth/login", {"login": "carol", "password": "correct horse"})
        assert ok.status == 200


async def test_sign_ups_per_address(make_server: ServerFactory) -> None:
    server = await make_server(signups_per_address=2, signup_window_secs=3600)
    api = server.client()
    await api.register("alice")
    ws = await WsClient.connect(server.ws_url)
    reply = await ws.command(
        "auth.register", username="bob", email="bob@example.com", password="correct horse"
    )
    assert reply["ok"] is True
    body = {"username": "carol", "email": "carol@example.com", "password": "correct horse"}
    refused = await api.post("/api/auth/register", body)
    assert refused.status == 429 and refused.error_code == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1000  # 2 an hour: one back every 30 min
    ws = await WsClient.connect(server.ws_url)
    reply = await ws.command("auth.register", **body)
    assert reply["error"]["code"] == "rate_limited" and reply["error"]["retry_after"] >= 1000
