"""Account self-service over REST and WebSocket: change the password (other sessions end at
once: their sockets close, their long-polls are answered), list and revoke sessions, delete
the account (checked in the database itself), and the errors of each."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, ServerFactory
from tests.test_social import Result

TRANSPORTS = ("rest", "ws")
PASSWORD = "correct horse"
NEW_PASSWORD = "battery staple"

# The REST face of each account command: method and path template.
ROUTES: dict[str, tuple[str, str]] = {
    "account.password": ("POST", "/api/account/password"),
    "account.sessions": ("GET", "/api/account/sessions"),
    "account.sessions.revoke": ("DELETE", "/api/account/sessions/{session_id}"),
    "account.delete": ("DELETE", "/api/account"),
}


class Account:
    """A signed-in session of one user: its HTTP client, and a socket when connected."""

    def __init__(self, server: RunningServer, reply: dict[str, Any]) -> None:
        self.server = server
        self.user = reply["user"]
        self.id: str = self.user["id"]
        self.token: str = reply["token"]
        self.api = server.client(self.token)
        self.ws: WsClient | None = None

    @classmethod
    async def register(cls, server: RunningServer, name: str) -> Account:
        api = server.client()
        reply = await api.register(name, PASSWORD)
        api.close()
        return cls(server, reply)

    async def login(self, user_agent: str = "Other/1.0", password: str = PASSWORD) -> Account:
        """Another session of the same user."""
        response = await self.api.post(
            "/api/auth/login",
            {"login": self.user["username"], "password": password},
            headers={"User-Agent": user_agent},
        )
        assert response.status == 200, response.body
        return Account(self.server, response.body)

    async def connect(self) -> WsClient:
        self.ws = await WsClient.connect(self.server.ws_url)
        await self.ws.auth(self.token)
        return self.ws

    async def call(self, transport: str, command: str, **fields: Any) -> Result:
        """The command over REST (fields as the JSON body, path fields in the path) or over
        this session's socket."""
        if transport == "ws":
            ws = self.ws or await self.connect()
            reply = await ws.command(command, **fields)
            if reply["ok"]:
                return Result(True, None, reply["data"])
            error = reply["error"]
            return Result(False, None, reply, error["code"], error.get("field"))
        method, template = ROUTES[command]
        path = template.format(**fields)
        body = {k: v for k, v in fields.items() if "{" + k + "}" not in template}
        response = await self.api.request(method, path, body if body else None)
        if 200 <= response.status < 300:
            return Result(True, response.status, response.body)
        error = response.body["error"]
        return Result(False, response.status, response.body, error["code"], error.get("field"))

    async def status(self) -> int:
        """The HTTP status of GET /api/me with this session's token."""
        return (await self.api.get("/api/me")).status


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def waiting_poll(account: Account) -> asyncio.Task[Any]:
    """A long-poll held by the server on a new queue of this session."""
    hello = await account.api.get("/api/events")
    query = urlencode({"queue_id": hello.body["queue_id"], "last_event_id": 0, "timeout": 30})
    task = asyncio.create_task(account.api.get(f"/api/events?{query}", timeout=40))
    registry = account.server.service.registry
    for _ in range(300):
        if registry.attached_count(account.id):
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the poll was not held")


async def ended_on_socket(ws: WsClient) -> dict[str, Any]:
    """The session.ended event the socket delivers before it closes with 4401."""
    event: dict[str, Any] = (await ws.event("session.ended"))["event"]
    assert await ws.wait_closed() == 4401
    return event


# -- change the password -------------------------------------------------------------------


async def test_change_password_ends_every_other_session_at_once(
    server: RunningServer, transport: str
) -> None:
    me = await Account.register(server, "alice")
    other = await me.login()
    other_ws = await other.connect()
    other_poll = await waiting_poll(other)
    done = await me.call(
        transport, "account.password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    assert done.expect(200) == {"revoked_sessions": 1}
    # The other session's socket hears why and closes; its held poll is answered with it.
    ended = {"type": "session.ended", "reason": "password_changed"}
    assert await ended_on_socket(other_ws) == ended
    polled = await asyncio.wait_for(other_poll, 5)
    assert polled.status == 200
    assert [item["event"] for item in polled.body["events"]] == [ended]
    assert await other.status() == 401
    # This session goes on (its socket too), and only the new password signs in.
    assert await me.status() == 200
    if me.ws is not None:
        assert (await me.ws.command("me"))["ok"] is True
    wrong = await me.api.post("/api/auth/login", {"login": "alice", "password": PASSWORD})
    assert wrong.status == 401 and wrong.error_code == "invalid_credentials"
    await me.login(password=NEW_PASSWORD)


async def test_change_password_errors(server: RunningServer, transport: str) -> None:
    me = await Account.register(server, "alice")
    other = await me.login()
    (await me.call(transport, "account.password", new_password=NEW_PASSWORD)).fails(
        400, "validation_failed"
    )
    missing = await me.call(transport, "account.password", current_password=PASSWORD)
    assert missing.field == "new_password"
    short = await me.call(
        transport, "account.password", current_password=PASSWORD, new_password="short"
    )
    short.fails(400, "validation_failed")
    assert short.field == "new_password" and "at least 8" in short.data["error"]["message"]
    long = await me.call(
        transport, "account.password", current_password=PASSWORD, new_password="é" * 37
    )
    assert long.field == "new_password" and "72" in long.data["error"]["message"]
    wrong = await me.call(
        transport, "account.password", current_password="wrong horse", new_password=NEW_PASSWORD
    )
    wrong.fails(401, "invalid_credentials")
    # Nothing changed: the old password still signs in, the other session still works, and
    # a refused change did not sign this session out.
    assert await other.status() == 200 and await me.status() == 200
    await me.login(password=PASSWORD)


async def test_wrong_current_passwords_spend_the_sign_in_allowance(
    make_server: ServerFactory,
) -> None:
    server = await make_server(login_failures_per_account=2)
    me = await Account.register(server, "alice")
    for _ in range(2):
        (
            await me.call(
                "rest", "account.password", current_password="guess one", new_password=NEW_PASSWORD
            )
        ).fails(401, "invalid_credentials")
    limited = await me.call(
        "rest", "account.password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    limited.fails(429, "rate_limited")
    login = await me.api.post("/api/auth/login", {"login": "alice", "password": PASSWORD})
    assert login.status == 429


# -- sessions ------------------------------------------------------------------------------


async def test_sessions_list_shows_each_client_and_marks_the_current_one(
    server: RunningServer, transport: str
) -> None:
    api = server.client()
    response = await api.post(
        "/api/auth/register",
        {"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        headers={"User-Agent": "First/2.0"},
    )
    me = Account(server, response.body)
    other = await me.login(user_agent="Other/1.0")
    listed = (await me.call(transport, "account.sessions")).expect(200)["sessions"]
    assert [(s["user_agent"], s["current"]) for s in listed] == [
        ("Other/1.0", False),
        ("First/2.0", True),
    ]
    for session in listed:
        assert session["address"] == "127.0.0.1"
        assert session["created_at"].endswith("Z") and session["last_used_at"].endswith("Z")
        assert set(session) == {
            "id", "created_at", "last_used_at", "expires_at", "address", "user_agent", "current"
        }  # fmt: skip
    # Another user's list holds none of these.
    bob = await Account.register(server, "bob")
    theirs = (await bob.call("rest", "account.sessions")).expect(200)["sessions"]
    assert [s["current"] for s in theirs] == [True]
    assert await other.status() == 200


async def test_last_use_is_written_at_most_once_a_minute(server: RunningServer) -> None:
    me = await Account.register(server, "alice")
    sessions = server.store.db["sessions"]
    doc = await sessions.find_one({"user_id": me.id})
    assert doc is not None
    created = doc["last_used_at"]
    for _ in range(3):
        assert await me.status() == 200
    await asyncio.sleep(0.2)
    doc = await sessions.find_one({"user_id": me.id})
    assert doc is not None and doc["last_used_at"] == created  # a sign-in is its first use
    # A minute later (the process's record of the last write aged by 61 s), the next request
    # writes it.
    server.service._session_touched[doc["_id"]] -= 61
    assert await me.status() == 200
    for _ in range(100):
        doc = await sessions.find_one({"user_id": me.id})
        assert doc is not None
        if doc["last_used_at"] > created:
            break
        await asyncio.sleep(0.02)
    assert doc["last_used_at"] > created


async def test_revoke_one_session(server: RunningServer, transport: str) -> None:
    me = await Account.register(server, "alice")
    other = await me.login()
    other_ws = await other.connect()
    third = await me.login()
    listed = (await me.call(transport, "account.sessions")).expect(200)["sessions"]
    # Newest first: third, other, me.
    assert [s["current"] for s in listed] == [False, False, True]
    other_id = listed[1]["id"]
    (await me.call(transport, "account.sessions.revoke", session_id=other_id)).expect(200)
    assert await ended_on_socket(other_ws) == {"type": "session.ended", "reason": "revoked"}
    assert await other.status() == 401
    assert await me.status() == 200 and await third.status() == 200
    again = await me.call(transport, "account.sessions.revoke", session_id=other_id)
    again.fails(404, "not_found")
    # Someone else's session is not found either, and stays.
    bob = await Account.register(server, "bob")
    bobs = (await bob.call("rest", "account.sessions")).expect(200)["sessions"][0]["id"]
    (await me.call(transport, "account.sessions.revoke", session_id=bobs)).fails(404, "not_found")
    assert await bob.status() == 200
    listed = (await me.call(transport, "account.sessions")).expect(200)["sessions"]
    assert other_id not in [s["id"] for s in listed] and len(listed) == 2


async def test_a_session_ended_by_another_process_ends_here_with_its_reason(
    server: RunningServer,
) -> None:
    # What the Redis bus hands over from another process: [session id, reason].
    me = await Account.register(server, "alice")
    ws = await me.connect()
    session_id = (await me.call("rest", "account.sessions")).expect(200)["sessions"][0]["id"]
    assert await me.status() == 200  # trusted from memory for 5 s from now
    await server.store.sessions.revoke(session_id)  # by the other process
    server.service.session_ended_elsewhere([session_id, "password_changed"])
    assert (await ended_on_socket(ws))["reason"] == "password_changed"
    assert await me.status() == 401  # at once, not 5 s later
    # A logout's notice is the bare id, and its event has no reason (as before).
    other = await me.login()
    other_ws = await other.connect()
    other_id = next(
        s["id"] for s in (await other.call("rest", "account.sessions")).expect(200)["sessions"]
        if s["current"]
    )  # fmt: skip
    server.service.session_ended_elsewhere(other_id)
    assert await ended_on_socket(other_ws) == {"type": "session.ended"}


# -- delete the account ----------------------------------------------------------------


async def befriend(a: Account, b: Account) -> None:
    request = await a.api.post("/api/friends/requests", {"user_id": b.id})
    assert request.status == 201, request.body
    accept = await b.api.post(f"/api/friends/requests/{request.body['request']['id']}/accept")
    assert accept.status == 200, accept.body


async def send(account: Account, conversation_id: str, body: str) -> None:
    response = await account.api.post(
        f"/api/conversations/{conversation_id}/messages",
        {"body": body, "client_msg_id": f"{conversation_id}-{body}"},
    )
    assert response.status == 201, response.body


async def test_delete_account_erases_it_and_keeps_its_messages(
    server: RunningServer, transport: str
) -> None:
    alice = await Account.register(server, "alice")
    bob, carol, dave, eve = [
        await Account.register(server, name) for name in ("bob", "carol", "dave", "eve")
    ]
    await befriend(alice, bob)
    assert (await alice.api.post("/api/friends/requests", {"user_id": carol.id})).status == 201
    assert (await dave.api.post("/api/friends/requests", {"user_id": alice.id})).status == 201
    assert (await alice.api.put(f"/api/blocks/{eve.id}")).status == 200
    assert (await eve.api.put(f"/api/blocks/{alice.id}")).status == 200
    dm = (await alice.api.post("/api/conversations/dm", {"user_id": bob.id})).body["conversation"]
    group = await alice.api.post("/api/groups", {"name": "club", "member_ids": [bob.id]})
    group_id = group.body["conversation"]["id"]
    for conversation_id in (dm["id"], group_id):
        await send(alice, conversation_id, "from alice")
        await send(bob, conversation_id, "from bob")
    other_ws = await (await alice.login()).connect()
    bob_ws = await bob.connect()

    (await alice.call(transport, "account.delete", password=PASSWORD)).expect(200)

    # Its sockets closed, every one of its tokens refused.
    assert (await ended_on_socket(other_ws))["reason"] == "account_deleted"
    assert await alice.status() == 401
    # Bob heard that the friendship ended.
    assert (await bob_ws.event("friend.removed"))["event"]["user"]["id"] == alice.id
    # In the database: nothing of the account is left but its messages and a tombstone.
    db = server.store.db
    assert await db["sessions"].count_documents({"user_id": alice.id}) == 0
    assert await db["friendships"].count_documents({"users": alice.id}) == 0
    either = [{"from_id": alice.id}, {"to_id": alice.id}]
    assert await db["friend_requests"].count_documents({"$or": either}) == 0
    blocks = [{"blocker_id": alice.id}, {"blocked_id": alice.id}]
    assert await db["blocks"].count_documents({"$or": blocks}) == 0
    assert await db["user_settings"].count_documents({"_id": alice.id}) == 0
    tomb = await db["users"].find_one({"username": "Deleted user"})
    assert tomb is not None and str(tomb["_id"]) == alice.id and tomb["deleted"] is True
    assert "password_hash" not in tomb and tomb["email"] == ""
    assert "alice" not in json.dumps(tomb, default=str)
    kept = await db["messages"].count_documents({"sender_id": alice.id})
    assert kept == 2
    dm_doc = await db["conversations"].find_one({"kind": "dm"})
    assert dm_doc is not None
    [gone] = [m for m in dm_doc["members"] if m["user_id"] == alice.id]
    assert gone["username"] == "Deleted user" and gone["deleted"] is True
    group_doc = await db["conversations"].find_one({"kind": "group"})
    assert group_doc is not None
    assert [(m["user_id"], m["role"]) for m in group_doc["members"]] == [(bob.id, "owner")]
    assert [f["username"] for f in group_doc["former"]] == ["Deleted user"]

    # What bob sees: the messages, from a deleted user; no more friend.
    history = await bob.api.get(f"/api/conversations/{dm['id']}/messages")
    assert [(m["sender_id"], m["body"]) for m in history.body["messages"]] == [
        (alice.id, "from alice"),
        (bob.id, "from bob"),
    ]
    listed = (await bob.api.get("/api/conversations")).body["conversations"]
    dm_view = next(c for c in listed if c["id"] == dm["id"])
    partner = next(m for m in dm_view["members"] if m["user_id"] == alice.id)
    assert partner["username"] == "Deleted user" and partner["deleted"] is True
    group_history = await bob.api.get(f"/api/conversations/{group_id}/messages")
    assert [m["sender_id"] for m in group_history.body["messages"]][:1] == [alice.id]
    assert (await bob.api.get("/api/friends")).body["friends"] == []
    refused = await bob.api.post(
        f"/api/conversations/{dm['id']}/messages", {"body": "hello?", "client_msg_id": "late"}
    )
    assert refused.status == 403 and refused.error_code == "forbidden"
    assert (await bob.api.post("/api/conversations/dm", {"user_id": alice.id})).status == 404
    found = await bob.api.get("/api/users?q=")
    assert alice.id not in [u["id"] for u in found.body["users"]]

    # The name and the email are free: a new sign-up takes them, and it is someone new.
    again = await server.client().post(
        "/api/auth/register",
        {"username": "Alice", "email": "ALICE@example.com", "password": "another one"},
    )
    assert again.status == 201, again.body
    assert again.body["user"]["id"] != alice.id
    old_login = await bob.api.post("/api/auth/login", {"login": "alice", "password": PASSWORD})
    assert old_login.status == 401


async def test_delete_account_errors(server: RunningServer, transport: str) -> None:
    me = await Account.register(server, "alice")
    missing = await me.call(transport, "account.delete")
    missing.fails(400, "validation_failed")
    assert missing.field == "password"
    (await me.call(transport, "account.delete", password="wrong horse")).fails(
        401, "invalid_credentials"
    )
    (await me.call(transport, "account.delete", password=12345678)).fails(400, "validation_failed")
    assert await me.status() == 200
    user = await server.store.db["users"].find_one({"username": "alice"})
    assert user is not None and not user.get("deleted")


async def test_account_commands_need_a_session(server: RunningServer) -> None:
    api: ApiClient = server.client()
    for command, (method, template) in ROUTES.items():
        path = template.format(session_id="abc")
        response = await api.request(method, path, {"password": PASSWORD})
        assert response.status == 401, (command, response.body)
        assert response.error_code == "unauthorized"
