"""Site roles and moderation (PROTOCOL.md section 8) against the real server: the command
line's grant and revoke (the real command, in a subprocess, on the test database), who may
give roles and suspend whom, a suspension ending every session at once (the socket closes
with 4403 after session.ended, a waiting long-poll within 1 s), sign-in refused with the
reason and the end, unsuspend and `until` giving access back, reports and their resolutions,
the audit log of every act, and plain users kept out of every admin command."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

from chat.models import iso
from chat.moderation import set_role_by_name
from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, unique_db_name
from tests.test_conversations import TRANSPORTS, Member, join, open_dm, send
from tests.test_processes import redis_server, redis_url, start_processes
from tests.test_server_process import ROOT, server_env, stop

__all__ = ["redis_server", "redis_url"]  # the fixtures of tests/test_processes.py

PASSWORD = "correct horse"  # tests/client.py's default


async def staff(server: RunningServer, role: str, transport: str = "rest") -> Member:
    member = await join(server, role, transport)
    assert await set_role_by_name(server.store, member.name, role)
    return member


async def login(server: RunningServer, member: Member) -> Any:
    api = server.client()
    return await api.post("/api/auth/login", {"login": member.name, "password": PASSWORD})


async def audit(member: Member) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = (await member.call("admin.audit")).expect()["entries"]
    return entries


def acts(entries: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """(action, target, reason) oldest first."""
    return [(e["action"], e["target_id"], e["reason"]) for e in reversed(entries)]


def uri_of_test_db(database_uri: str, db_name: str) -> str:
    """The test database's URI with its name as the path (what --mongo-uri takes)."""
    parts = urlsplit(database_uri)
    return urlunsplit(parts._replace(path=f"/{db_name}"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "admin", *args],
        capture_output=True, text=True, env=server_env(), cwd=ROOT, timeout=120,
    )  # fmt: skip


# -- roles --------------------------------------------------------------------------------


async def test_the_command_line_grants_and_revokes_roles(
    server: RunningServer, database_uri: str, db_name: str
) -> None:
    alice = await join(server, "alice")
    uri = uri_of_test_db(database_uri, db_name)
    assert (await alice.call("me")).expect()["user"]["role"] == "user"
    done = await asyncio.to_thread(cli, "grant", alice.name, "admin", "--mongo-uri", uri)
    assert done.returncode == 0, done.stderr
    assert f"{alice.name} is now admin" in done.stdout
    # Rights at once (read at every command); the role shows from the next sign-in.
    assert (await alice.call("admin.audit")).ok
    # A page cursor that cannot be an entry's id is refused (schemathesis found it accepted).
    (await alice.call("admin.audit", before="not/an id")).fails(400, "validation_failed")
    signed_in = await login(server, alice)
    assert signed_in.body["user"]["role"] == "admin"
    entries = await audit(alice)
    assert [(e["actor_id"], e["action"], e["target_id"]) for e in entries] == [
        ("cli", "role.grant", alice.id)
    ]
    done = await asyncio.to_thread(cli, "revoke", alice.name, "--mongo-uri", uri)
    assert done.returncode == 0, done.stderr
    (await alice.call("admin.audit")).fails(403, "forbidden")
    assert (await login(server, alice)).body["user"]["role"] == "user"
    stored = await server.store.db["audit"].find({}, {"_id": 0, "at": 0}).to_list()
    assert [(s["action"], s["reason"]) for s in stored] == [
        ("role.grant", "admin"),
        ("role.revoke", "user"),
    ]
    unknown = await asyncio.to_thread(cli, "grant", "nobody", "moderator", "--mongo-uri", uri)
    assert unknown.returncode == 1 and "no user named 'nobody'" in unknown.stderr
    wrong = await asyncio.to_thread(cli, "grant", alice.name, "owner", "--mongo-uri", uri)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


async def test_the_command_line_opens_the_embedded_default_database(tmp_path: Path) -> None:
    """Without --mongo-uri it starts the embedded database in --data-dir, as serve does."""
    done = await asyncio.to_thread(cli, "grant", "nobody", "admin", "--data-dir", str(tmp_path))
    assert done.returncode == 1, done.stderr
    assert "no user named 'nobody'" in done.stderr
    assert (tmp_path / "database-credentials.json").exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_only_admins_make_moderators(server: RunningServer, transport: str) -> None:
    admin = await staff(server, "admin", transport)
    moderator = await staff(server, "moderator", transport)
    bob = await join(server, "bob", transport)
    carol = await join(server, "carol", transport)
    (await moderator.call("admin.users.role", user_id=bob.id, role="moderator")).fails(403)
    (await bob.call("admin.users.role", user_id=bob.id, role="admin")).fails(403)
    made = (await admin.call("admin.users.role", user_id=bob.id, role="moderator")).expect()
    assert made["user"]["role"] == "moderator" and made["user"]["id"] == bob.id
    assert (await bob.call("me")).expect()["user"]["role"] == "moderator"
    (await admin.call("admin.users.role", user_id=carol.id, role="owner")).fails(400)
    (await admin.call("admin.users.role", user_id="0" * 24, role="admin")).fails(404)
    (await admin.call("admin.users.role", user_id=bob.id, role="user")).expect()
    assert acts(await audit(admin))[2:] == [  # after the two staff() made
        ("role.grant", bob.id, "moderator"),
        ("role.revoke", bob.id, "user"),
    ]
    found = (await moderator.call("admin.users.search", q="car")).expect()["users"]
    assert [(u["id"], u["role"], u["suspended"]) for u in found] == [(carol.id, "user", None)]


async def test_plain_users_get_403_from_every_admin_command(server: RunningServer) -> None:
    bob = await join(server, "bob")
    some_id = "0" * 24
    for command, fields in (
        ("admin.users.search", {"q": ""}),
        ("admin.users.role", {"user_id": some_id, "role": "admin"}),
        ("admin.users.suspend", {"user_id": some_id, "reason": "x"}),
        ("admin.users.unsuspend", {"user_id": some_id}),
        ("admin.reports", {}),
        ("admin.reports.resolve", {"report_id": some_id, "action": "dismiss"}),
        ("admin.audit", {}),
    ):
        (await bob.call(command, **fields)).fails(403, "forbidden")
    assert await server.store.db["audit"].count_documents({}) == 0


# -- suspension ---------------------------------------------------------------------------


async def waiting_poll(member: Member) -> asyncio.Task[Any]:
    """A long-poll held by the server on a new queue of the member's session."""
    hello = await member.api.get("/api/events")
    query = urlencode({"queue_id": hello.body["queue_id"], "last_event_id": 0, "timeout": 30})
    task = asyncio.create_task(member.api.get(f"/api/events?{query}", timeout=40))
    for _ in range(300):
        if member.server.service.registry.attached_count(member.id):
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the poll was not held")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_suspension_ends_every_session_and_refuses_sign_in(
    server: RunningServer, transport: str
) -> None:
    moderator = await staff(server, "moderator", transport)
    bob = await join(server, "bob")
    assert bob.ws is not None
    poller = await join(server, "x", online=False)
    poller.id, poller.name = bob.id, bob.name
    poller.api.token = (await login(server, bob)).body["token"]
    poll = await waiting_poll(poller)
    started = time.monotonic()
    done = await moderator.call("admin.users.suspend", user_id=bob.id, reason="spam")
    suspended = done.expect()["user"]["suspended"]
    assert suspended["reason"] == "spam" and suspended["until"] is None
    assert suspended["by"] == moderator.id
    ended = (await bob.ws.event("session.ended"))["event"]
    assert ended == {"type": "session.ended", "reason": "suspended"}
    assert await bob.ws.wait_closed() == 4403
    polled = await asyncio.wait_for(poll, 5)
    assert time.monotonic() - started < 1.0
    assert [item["event"] for item in polled.body["events"]] == [ended]
    assert (await bob.api.get("/api/me")).status == 401
    refused = await login(server, bob)
    assert refused.status == 403 and refused.body["error"]["code"] == "suspended"
    assert refused.body["error"]["reason"] == "spam" and refused.body["error"]["until"] is None
    (await moderator.call("admin.users.unsuspend", user_id=bob.id)).expect()
    assert (await login(server, bob)).status == 200
    assert acts(await audit(moderator)) == [
        ("role.grant", moderator.id, "moderator"),
        ("user.suspend", bob.id, "spam"),
        ("user.unsuspend", bob.id, None),
    ]


async def test_a_suspension_ends_by_itself_at_until(server: RunningServer) -> None:
    admin = await staff(server, "admin")
    bob = await join(server, "bob")
    until = datetime.now(UTC) + timedelta(seconds=1.5)
    done = await admin.call(
        "admin.users.suspend", user_id=bob.id, reason="cool off", until=iso(until)
    )
    assert done.expect()["user"]["suspended"]["until"] == iso(until)
    refused = await login(server, bob)
    assert refused.status == 403 and refused.body["error"]["until"] == iso(until)
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.1)
    assert (await login(server, bob)).status == 200
    past = iso(datetime.now(UTC) - timedelta(minutes=1))
    (await admin.call("admin.users.suspend", user_id=bob.id, reason="x", until=past)).fails(
        400, field="until"
    )


async def test_who_may_suspend_whom(server: RunningServer) -> None:
    admin = await staff(server, "admin")
    other_admin = await staff(server, "admin")
    moderator = await staff(server, "moderator")
    other_moderator = await staff(server, "moderator")
    bob = await join(server, "bob")
    for target in (admin, other_moderator):
        (await moderator.call("admin.users.suspend", user_id=target.id, reason="x")).fails(403)
    (await moderator.call("admin.users.unsuspend", user_id=admin.id)).fails(403)
    (await admin.call("admin.users.suspend", user_id=admin.id, reason="x")).fails(403)
    (await bob.call("admin.users.suspend", user_id=moderator.id, reason="x")).fails(403)
    (await admin.call("admin.users.suspend", user_id=bob.id, reason="")).fails(400, field="reason")
    (await admin.call("admin.users.suspend", user_id="0" * 24, reason="x")).fails(404)
    (await admin.call("admin.users.suspend", user_id=other_moderator.id, reason="x")).expect()
    (await other_admin.call("admin.users.suspend", user_id=admin.id, reason="y")).expect()
    assert (await login(server, admin)).status == 403


# -- reports ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reports_are_listed_with_context_and_resolved(
    server: RunningServer, transport: str
) -> None:
    moderator = await staff(server, "moderator", transport)
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    before = await send(bob, cid, "hi")
    bad = await send(bob, cid, "buy cheap pills")
    after = await send(alice, cid, "no thanks")
    # Only someone who can read the message may report it; a reason is required.
    stranger = await join(server, "eve", transport)
    report_of = {"conversation_id": cid, "message_id": bad["id"]}
    (await stranger.call("messages.report", **report_of, reason="spam")).fails(404)
    (await alice.call("messages.report", **report_of, reason=" ")).fails(400, field="reason")
    made = (await alice.call("messages.report", **report_of, reason="spam")).expect(201)
    report = made["report"]
    assert (report["status"], report["body"], report["reporter_id"]) == (
        "open",
        "buy cheap pills",
        alice.id,
    )
    listed = (await moderator.call("admin.reports")).expect()
    [shown] = listed["reports"]
    assert shown["id"] == report["id"] and shown["message"]["body"] == "buy cheap pills"
    assert [m["id"] for m in shown["context"]] == [before["id"], bad["id"], after["id"]]
    assert listed["users"][bob.id]["username"] == bob.name
    # Deleting the message erases it everywhere but in the report.
    done = await moderator.call("admin.reports.resolve", report_id=report["id"], action="delete")
    assert done.expect()["report"]["status"] == "deleted"
    deleted = (await alice.ws.event("message.deleted"))["event"]["message"]  # type: ignore[union-attr]
    assert deleted["id"] == bad["id"] and deleted["body"] == ""
    stored = await server.store.db["messages"].find_one({"body": "buy cheap pills"})
    assert stored is None
    kept = await server.store.db["reports"].find_one({"body": "buy cheap pills"})
    assert kept is not None
    assert (await moderator.call("admin.reports")).expect()["reports"] == []
    again = await moderator.call("admin.reports.resolve", report_id=report["id"], action="dismiss")
    again.fails(409, "conflict")
    # A report resolved by suspending the author; another dismissed.
    second = await send(bob, cid, "more spam")
    r2 = (await alice.call("messages.report", conversation_id=cid, message_id=second["id"],
                           reason="again")).expect(201)["report"]  # fmt: skip
    r3 = (await bob.call("messages.report", conversation_id=cid, message_id=after["id"],
                         reason="rude")).expect(201)["report"]  # fmt: skip
    (await moderator.call("admin.reports.resolve", report_id=r3["id"], action="dismiss")).expect()
    (await moderator.call("admin.reports.resolve", report_id=r2["id"], action="suspend")).expect()
    refused = await login(server, bob)
    assert refused.status == 403 and refused.body["error"]["reason"] == "again"
    assert [a for a, _, _ in acts(await audit(moderator))] == [
        "role.grant",
        "message.delete",
        "report.resolve",
        "report.resolve",
        "user.suspend",
        "report.resolve",
    ]


async def test_a_site_moderator_deletes_any_group_message_and_it_is_logged(
    server: RunningServer,
) -> None:
    owner = await join(server, "owner")
    moderator = await staff(server, "moderator")
    bob = await join(server, "bob")
    created = await owner.call("groups.create", name="team", member_ids=[moderator.id, bob.id])
    gid = created.expect(201)["conversation"]["id"]
    message = await send(bob, gid, "off topic")
    fields = {"conversation_id": gid, "message_id": message["id"]}
    (await moderator.call("messages.delete", **fields)).expect()
    # In a group the moderator is not a member of too; a plain user outside it sees nothing.
    outside = await owner.call("groups.create", name="elsewhere", member_ids=[bob.id])
    other_gid = outside.expect(201)["conversation"]["id"]
    spam = await send(bob, other_gid, "spam")
    elsewhere = {"conversation_id": other_gid, "message_id": spam["id"]}
    stranger = await join(server, "stranger")
    (await stranger.call("messages.delete", **elsewhere)).fails(404)
    tomb = (await moderator.call("messages.delete", **elsewhere)).expect()["message"]
    assert tomb["deleted"] is True and tomb["deleted_by"] == moderator.id
    # Not in a DM: there a moderator is a member like any other.
    plain = await join(server, "plain")
    cid = (await open_dm(moderator, plain))["id"]
    theirs = await send(plain, cid, "hello")
    (await moderator.call("messages.delete", conversation_id=cid, message_id=theirs["id"])).fails(
        403
    )
    assert acts(await audit(moderator))[1:] == [
        ("message.delete", message["id"], None),
        ("message.delete", spam["id"], None),
    ]


# -- several processes --------------------------------------------------------------------


async def test_a_suspension_on_one_process_closes_the_socket_on_another(
    database_uri: str, tmp_path: Path, redis_url: str
) -> None:
    """With --redis-url the revocation reaches every process (the path a password change
    takes): bob's socket on b closes with 4403 when a moderator on a suspends him."""
    uri = uri_of_test_db(database_uri, unique_db_name())
    # The later --mongo-uri wins: the processes use this test's database, the CLI too.
    started = await start_processes(
        database_uri, tmp_path, 2, "--redis-url", redis_url, "--mongo-uri", uri
    )
    try:
        a, b = (f"http://{host}" for _, host in started)
        moderator = await ApiClient(a).register("mod")
        bob = await ApiClient(a).register("bob")
        done = await asyncio.to_thread(cli, "grant", "mod", "moderator", "--mongo-uri", uri)
        assert done.returncode == 0, done.stderr
        ws = await WsClient.connect(b.replace("http", "ws") + "/ws")
        await ws.auth(bob["token"])
        assert (await ws.command("me"))["ok"] is True
        suspended = await ApiClient(a, moderator["token"]).post(
            f"/api/admin/users/{bob['user']['id']}/suspend", {"reason": "spam"}
        )
        assert suspended.status == 200, suspended.body
        ended = await ws.event("session.ended", timeout=3)
        assert ended["event"] == {"type": "session.ended", "reason": "suspended"}
        assert await ws.wait_closed() == 4403
        assert (await ApiClient(b, bob["token"]).get("/api/me")).status == 401
    finally:
        for process, _ in started:
            stop(process)


async def test_a_sign_in_racing_a_suspension_keeps_no_session(server: RunningServer) -> None:
    """The suspension lands after the sign-in's first check (here: that check skipped) and
    before its session exists, so the revocation cannot see that session: the sign-in's
    second look finds the suspension and ends the session it made."""
    bob = await join(server, "bob", online=False)
    moderator = await staff(server, "moderator")

    async def read_too_early(user: Any) -> None:
        await server.store.moderation.suspend(bob.id, "spam", None, moderator.id)

    server.service.check_sign_in = read_too_early  # type: ignore[method-assign]
    refused = await login(server, bob)
    assert refused.status == 403 and refused.body["error"]["code"] == "suspended"
    assert await server.store.sessions.live_of(bob.id) == []
