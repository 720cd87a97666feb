"""Accounts over REST: register, login, logout, me, and every validation rule."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import tornado.httpserver
import tornado.netutil
from bson import ObjectId

from chat.accounts import SessionCache
from chat.auth import TokenCodec
from chat.dbserver import free_port
from chat.errors import Unauthorized
from chat.service import ChatService
from chat.store import Store
from handlers.app import make_app
from tests.client import ApiClient
from tests.conftest import TEST_SECRET, RunningServer, ServerFactory

GOOD = {"username": "alice", "email": "alice@example.com", "password": "correct horse"}


@pytest.fixture
async def api(server: RunningServer) -> ApiClient:
    client = server.client()
    yield client  # type: ignore[misc]
    client.close()


async def test_register_returns_user_token_and_expiry(api: ApiClient) -> None:
    r = await api.post("/api/auth/register", GOOD)
    assert r.status == 201
    user = r.body["user"]
    assert user["username"] == "alice"
    assert user["email"] == "alice@example.com"
    assert len(user["friend_code"]) == 9 and user["friend_code"][4] == "-"
    assert set(user["friend_code"].replace("-", "")) <= set("23456789ABCDEFGHJKMNPQRSTUVWXYZ")
    assert isinstance(user["id"], str)
    assert "password" not in str(r.body) and "hash" not in str(r.body)
    expires = datetime.fromisoformat(r.body["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert r.body["expires_at"].endswith("Z") and len(r.body["expires_at"]) == 24
    me = await api.get("/api/me", token=r.body["token"])
    assert me.status == 200 and me.body["user"] == user


async def test_password_is_stored_as_bcrypt_hash(api: ApiClient, server: RunningServer) -> None:
    await api.post("/api/auth/register", GOOD)
    doc = await server.store.db["users"].find_one({"username_lower": "alice"})
    assert doc is not None
    assert doc["password_hash"].startswith("$2b$04$")  # the tests' cost; production is 12
    assert "correct horse" not in str(doc)


async def test_default_bcrypt_cost_is_12(make_server: ServerFactory) -> None:
    server = await make_server(bcrypt_rounds=12)
    assert server.service.settings.bcrypt_rounds == 12
    hashed = await server.service.hasher.hash("correct horse")
    assert hashed.startswith("$2b$12$")
    assert await server.service.hasher.verify("correct horse", hashed)
    assert not await server.service.hasher.verify("wrong horse", hashed)


async def test_login_by_username_or_email_any_case(api: ApiClient) -> None:
    await api.post("/api/auth/register", GOOD)
    for login in ("alice", "ALICE", "alice@example.com", "Alice@Example.COM"):
        r = await api.post("/api/auth/login", {"login": login, "password": "correct horse"})
        assert r.status == 200, (login, r.body)
        assert r.body["user"]["username"] == "alice"
        assert r.body["token"] and r.body["expires_at"]


async def test_login_same_error_for_unknown_user_and_wrong_password(api: ApiClient) -> None:
    await api.post("/api/auth/register", GOOD)
    wrong = await api.post("/api/auth/login", {"login": "alice", "password": "wrong horse"})
    unknown = await api.post("/api/auth/login", {"login": "nobody", "password": "correct horse"})
    too_long = await api.post("/api/auth/login", {"login": "alice", "password": "x" * 100})
    assert wrong.status == unknown.status == too_long.status == 401
    assert wrong.body == unknown.body == too_long.body
    assert wrong.body["error"]["code"] == "invalid_credentials"


async def test_logout_revokes_the_token_at_once(api: ApiClient) -> None:
    reg = await api.post("/api/auth/register", GOOD)
    token = reg.body["token"]
    login = await api.post("/api/auth/login", {"login": "alice", "password": "correct horse"})
    other = login.body["token"]
    assert (await api.post("/api/auth/logout", token=token)).status == 200
    r = await api.get("/api/me", token=token)
    assert r.status == 401 and r.body["error"]["code"] == "unauthorized"
    assert (await api.post("/api/auth/logout", token=token)).status == 401
    # Another session of the same user is untouched.
    assert (await api.get("/api/me", token=other)).status == 200


async def test_missing_forged_expired_tokens_are_401(api: ApiClient, server: RunningServer) -> None:
    reg = await api.post("/api/auth/register", GOOD)
    token = reg.body["token"]
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    forged = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    none_alg = jwt.encode(claims, None, algorithm="none")
    unknown_session = jwt.encode({**claims, "sid": "0" * 32}, TEST_SECRET, algorithm="HS256")
    expired = TokenCodec(TEST_SECRET, 60).issue(
        claims["sub"], claims["sid"], datetime.now(UTC) - timedelta(seconds=5)
    )
    cases = {
        "missing": {},
        "garbage": {"Authorization": "Bearer not.a.token"},
        "wrong scheme": {"Authorization": f"Basic {token}"},
        "forged": {"Authorization": f"Bearer {forged}"},
        "alg none": {"Authorization": f"Bearer {none_alg}"},
        "unknown session": {"Authorization": f"Bearer {unknown_session}"},
        "expired": {"Authorization": f"Bearer {expired}"},
    }
    for name, headers in cases.items():
        r = await api.get("/api/me", token="", headers=headers)
        assert r.status == 401, name
        assert r.body["error"]["code"] == "unauthorized", name
        assert r.headers["Content-Type"].startswith("application/json")


async def test_a_logout_in_another_process_is_honoured_within_the_check_interval(
    make_server: ServerFactory,
) -> None:
    # Two servers on one database, as two processes would be: a logout on one reaches the
    # other's memory of checked sessions within settings.session_check_secs.
    one = await make_server(session_check_secs=0.5)
    two = await make_server(session_check_secs=0.5)
    reg = await one.client().post("/api/auth/register", GOOD)
    token = reg.body["token"]
    assert (await two.client(token).get("/api/me")).status == 200  # checked and remembered
    assert (await one.client(token).post("/api/auth/logout")).status == 200
    assert (await one.client(token).get("/api/me")).status == 401  # here: at once
    await asyncio.sleep(0.6)
    r = await two.client(token).get("/api/me")
    assert r.status == 401 and r.body["error"]["code"] == "unauthorized"


async def test_session_past_its_stored_expiry_is_401(make_server: ServerFactory) -> None:
    # The stored session changes behind the server's back, as another process would change
    # it: without a check interval the next request reads it.
    server = await make_server(session_check_secs=0)
    api = server.client()
    reg = await api.post("/api/auth/register", GOOD)
    claims = jwt.decode(reg.body["token"], TEST_SECRET, algorithms=["HS256"])
    await server.store.db["sessions"].update_one(
        {"_id": claims["sid"]}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    assert (await api.get("/api/me", token=reg.body["token"])).status == 401


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "ab"),
        ("username", "a" * 33),
        ("username", "bad name"),
        ("username", "émile"),
        ("username", "semi;colon"),
        ("username", ""),
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("email", "two@@example.com"),
        ("email", "spaces in@example.com"),
        ("password", "short"),
        ("password", "x" * 73),
        ("password", "é" * 37),  # 74 bytes in UTF-8, 37 characters
    ],
)
async def test_register_validation(api: ApiClient, field: str, value: str) -> None:
    r = await api.post("/api/auth/register", {**GOOD, field: value})
    assert r.status == 400, r.body
    assert r.body["error"]["code"] == "validation_failed"
    assert r.body["error"]["field"] == field
    assert isinstance(r.body["error"]["message"], str) and r.body["error"]["message"]


async def test_register_limits_that_pass(api: ApiClient) -> None:
    edge = [
        {"username": "abc", "email": "a1@example.com", "password": "x" * 8},
        {"username": "a" * 32, "email": "a2@example.com", "password": "x" * 72},
        {"username": "a.b-c_D9", "email": "a3@example.com", "password": "é" * 36},
    ]
    for body in edge:
        r = await api.post("/api/auth/register", body)
        assert r.status == 201, (body, r.body)


@pytest.mark.parametrize("missing", ["username", "email", "password"])
async def test_register_missing_field(api: ApiClient, missing: str) -> None:
    body = {k: v for k, v in GOOD.items() if k != missing}
    r = await api.post("/api/auth/register", body)
    assert r.status == 400
    assert r.body["error"] == {
        "code": "validation_failed",
        "message": f"{missing} is required.",
        "field": missing,
    }


@pytest.mark.parametrize("value", [123, True, ["alice"], {"a": 1}])
async def test_register_wrong_json_types(api: ApiClient, value: object) -> None:
    r = await api.post("/api/auth/register", {**GOOD, "username": value})
    assert r.status == 400
    assert r.body["error"]["code"] == "validation_failed"
    assert r.body["error"]["field"] == "username"


@pytest.mark.parametrize("body", [b"not json", b'{"username": ', b"\xff\xfe", b"[1, 2]", b"42"])
async def test_register_non_json_or_non_object_body(api: ApiClient, body: bytes) -> None:
    r = await api.post("/api/auth/register", raw_body=body)
    assert r.status == 400
    assert r.body["error"]["code"] in ("bad_request", "validation_failed")
    assert r.headers["Content-Type"].startswith("application/json")


async def test_duplicate_username_differing_in_case_and_duplicate_email(api: ApiClient) -> None:
    assert (await api.post("/api/auth/register", GOOD)).status == 201
    r = await api.post(
        "/api/auth/register", {**GOOD, "username": "ALICE", "email": "other@example.com"}
    )
    assert r.status == 409 and r.body["error"]["field"] == "username"
    assert r.body["error"]["code"] == "conflict"
    r = await api.post(
        "/api/auth/register", {**GOOD, "username": "alice2", "email": "ALICE@example.com"}
    )
    assert r.status == 409 and r.body["error"]["field"] == "email"


async def test_concurrent_registration_exactly_one_wins(api: ApiClient) -> None:
    bodies = [
        {"username": "racer" if i % 2 else "RACER", "email": f"r{i}@example.com",
         "password": "correct horse"}
        for i in range(8)
    ]  # fmt: skip
    results = await asyncio.gather(*(api.post("/api/auth/register", b) for b in bodies))
    statuses = sorted(r.status for r in results)
    assert statuses == [201] + [409] * 7
    assert all(r.body["error"]["field"] == "username" for r in results if r.status == 409)


async def test_friend_codes_are_unique_and_stable(api: ApiClient) -> None:
    codes = set()
    for i in range(20):
        r = await api.post(
            "/api/auth/register",
            {"username": f"user{i}", "email": f"u{i}@example.com", "password": "correct horse"},
        )
        codes.add(r.body["user"]["friend_code"])
        me = await api.get("/api/me", token=r.body["token"])
        assert me.body["user"]["friend_code"] == r.body["user"]["friend_code"]
    assert len(codes) == 20


async def test_api_errors_are_json_never_html(api: ApiClient) -> None:
    r = await api.get("/api/nope")
    assert r.status == 404 and r.body["error"]["code"] == "not_found"
    r = await api.post("/api/does/not/exist", {})
    assert r.status == 404 and r.body["error"]["code"] == "not_found"
    r = await api.get("/api/auth/register")
    assert r.status == 405 and r.body["error"]["code"] == "method_not_allowed"
    assert r.headers["Content-Type"].startswith("application/json")
    r = await api.post("/api/auth/register", raw_body=b"x" * (1024 * 1024 + 1))
    assert r.status == 413 and r.body["error"]["code"] == "too_large"


async def test_healthz(server: RunningServer) -> None:
    api = server.client()
    r = await api.get("/healthz")
    assert r.status == 200 and r.body == {"status": "ok", "db": "ok"}
    api.close()


async def test_healthz_and_api_503_when_database_unreachable(server: RunningServer) -> None:
    # The same application on a store whose database does not listen anywhere.
    settings = dataclasses.replace(
        server.service.settings, mongo_uri=f"mongodb://127.0.0.1:{free_port()}/", db_timeout_ms=500
    )
    store = Store(settings.mongo_uri, "x", timeout_ms=500)
    service = ChatService.build(settings, store)
    http = tornado.httpserver.HTTPServer(make_app(service))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    http.add_sockets([sock])
    api = ApiClient(f"http://127.0.0.1:{sock.getsockname()[1]}")
    try:
        r = await api.get("/healthz")
        assert r.status == 503 and r.body == {"status": "unavailable", "db": "unavailable"}
        r = await api.post("/api/auth/login", {"login": "alice", "password": "correct horse"})
        assert r.status == 503 and r.body["error"]["code"] == "database_unavailable"
    finally:
        http.stop()
        await service.close()
        await store.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_session_cache_trusts_a_checked_session_for_its_ttl_only() -> None:
    clock = FakeClock()
    cache = SessionCache(5.0, clock=clock)
    assert not cache.valid("s1", "u1")
    cache.remember("s1", "u1")
    assert cache.valid("s1", "u1")
    assert not cache.valid("s1", "u2")  # a token naming another user is never trusted
    clock.now += 5.0
    assert not cache.valid("s1", "u1")
    assert len(cache) == 0  # expired entries are dropped when looked up


def test_session_cache_forgets_a_revoked_session_and_refuses_to_relearn_it() -> None:
    clock = FakeClock()
    cache = SessionCache(5.0, clock=clock)
    cache.remember("s1", "u1")
    cache.forget("s1")
    assert not cache.valid("s1", "u1")
    # A check that read the session just before the revocation finishes after it.
    cache.remember("s1", "u1")
    assert not cache.valid("s1", "u1")
    clock.now += 6.0
    cache.forget("s2")  # prunes old revocations
    cache.remember("s1", "u1")  # (a revoked session is never found valid in the database)
    assert cache.valid("s1", "u1")


def test_session_cache_is_bounded_and_off_with_a_zero_ttl() -> None:
    cache = SessionCache(5.0, max_entries=2, clock=FakeClock())
    for sid in ("a", "b", "c"):
        cache.remember(sid, "u")
    assert len(cache) == 2 and not cache.valid("a", "u") and cache.valid("c", "u")
    off = SessionCache(0.0, clock=FakeClock())
    off.remember("a", "u")
    assert not off.valid("a", "u")


async def test_a_token_checked_before_is_refused_once_it_expires() -> None:
    """Verified tokens are remembered (a poll after every event presents the same one), but
    never past their expiry, and a forged one is never taken for a remembered one."""
    codec = TokenCodec(TEST_SECRET, 60)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    token = codec.issue(str(ObjectId()), str(ObjectId()), expires_at)
    assert codec.decode(token).expires_at == expires_at
    assert codec.decode(token).expires_at == expires_at  # from memory
    head, body, signature = token.split(".")
    with pytest.raises(Unauthorized):
        codec.decode(f"{head}.{body}.{signature[::-1]}")
    await asyncio.sleep((expires_at - datetime.now(UTC)).total_seconds() + 0.05)
    with pytest.raises(Unauthorized):
        codec.decode(token)
