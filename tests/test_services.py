"""Service keys and system notifications (PROTOCOL.md section 10): the CLI through a real
subprocess (create prints the key once, list never shows keys, revoke); the key sends system
notifications to user_ids, a group and everyone, persisted and live; it opens nothing else;
a revoked or wrong key is 401 at once; each key is rate-limited with Retry-After."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.client import ApiClient
from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import Member, join
from tests.test_lifecycle import make_group
from tests.test_server_process import ROOT, SECRET, server_env

PATH = "/api/system/notifications"


async def service_key(
    *args: str, uri: str | None, data_dir: Path
) -> subprocess.CompletedProcess[str]:
    """`chat-server service-key ARGS` on this database (None: the embedded default one)."""
    options = ["--data-dir", str(data_dir), "--secret", SECRET]
    if uri is not None:
        options += ["--mongo-uri", uri]
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "server.py"), "service-key", *args, *options],
        capture_output=True, text=True, env=server_env(), timeout=120, cwd=ROOT,
    )  # fmt: skip


def uri_of(server: RunningServer) -> str:
    settings = server.service.settings
    return urlunsplit(urlsplit(settings.mongo_uri)._replace(path=f"/{settings.db_name}"))


async def create_key(server: RunningServer, name: str, tmp_path: Path) -> str:
    done = await service_key("create", name, uri=uri_of(server), data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("svc_") and len(key) > 40 and "shown only now" in done.stderr
    return key


async def system(server: RunningServer, key: str, body: Any) -> Any:
    api = ApiClient(server.base_url, token=key)
    try:
        return await api.post(PATH, body)
    finally:
        api.close()


async def test_the_cli_creates_lists_and_revokes_keys_stored_hashed(
    server: RunningServer, tmp_path: Path
) -> None:
    key = await create_key(server, "tournament", tmp_path)
    again = await service_key("create", "tournament", uri=uri_of(server), data_dir=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr
    listed = await service_key("list", uri=uri_of(server), data_dir=tmp_path)
    assert listed.returncode == 0
    [line] = listed.stdout.splitlines()
    name, created = line.split("\t")
    assert name == "tournament" and created.endswith("Z") and key not in listed.stdout
    docs = await server.store.db["service_keys"].find({}).to_list()
    assert key not in repr(docs) and len(docs[0]["_id"]) == 64  # its sha256 only
    revoked = await service_key("revoke", "tournament", uri=uri_of(server), data_dir=tmp_path)
    assert revoked.returncode == 0
    missing = await service_key("revoke", "tournament", uri=uri_of(server), data_dir=tmp_path)
    assert missing.returncode == 1 and "no service key" in missing.stderr
    usage = await service_key("create", uri=uri_of(server), data_dir=tmp_path)
    assert usage.returncode == 2 and "usage" in usage.stderr


async def test_the_cli_works_on_the_embedded_default_database(tmp_path: Path) -> None:
    created = await service_key("create", "games", uri=None, data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    listed = await service_key("list", uri=None, data_dir=tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("games\t"), listed.stderr


async def system_notes(member: Member) -> list[dict[str, Any]]:
    page = (await member.call("notifications.list")).expect()
    return [n for n in page["notifications"] if n["kind"] == "system"]


async def test_a_key_notifies_users_a_group_and_everyone(
    server: RunningServer, tmp_path: Path
) -> None:
    key = await create_key(server, "tournament", tmp_path)
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    carol = await join(server, "carol")
    body = {"title": "Round 2", "body": "Your match starts in 5 minutes", "data": {"match": 7}}
    reply = await system(server, key, {**body, "user_ids": [alice.id, bob.id, "a" * 24]})
    assert reply.status == 200 and reply.body == {"sent": 2}
    for member in (alice, bob):
        event = await member.event("notification.new")
        note = event["notification"]
        assert note["kind"] == "system" and "actor" not in note and event["unread_count"] == 1
        assert note["data"] == {**body, "service": "tournament"} | {"data": {"match": 7}}
    await carol.no_event("notification.new")
    group_id = await make_group(alice, carol)
    await carol.event("notification.new")  # group.added
    reply = await system(server, key, {**body, "group_id": group_id})
    assert reply.body == {"sent": 2}
    assert (await carol.event("notification.new"))["notification"]["kind"] == "system"
    reply = await system(server, key, {"title": "Maintenance", "body": "At noon", "all": True})
    assert reply.body == {"sent": 3}
    for member in (alice, bob, carol):
        titles = [n["data"]["title"] for n in await system_notes(member)]  # after a reload
        assert titles[0] == "Maintenance"
    assert len(await system_notes(alice)) == 3 and len(await system_notes(bob)) == 2
    bad = await system(server, key, {**body, "user_ids": [bob.id], "all": True})
    assert bad.status == 400 and bad.error_code == "validation_failed"
    assert (await system(server, key, {**body, "group_id": "f" * 24})).status == 404
    assert (await system(server, key, {"title": "", "body": "x", "all": True})).status == 400
    nul = await system(server, key, {**body, "all": True, "data": {"a\u0000": 1}})
    assert nul.status == 400 and nul.error_code == "validation_failed", nul.body


async def test_a_key_opens_nothing_else_and_stops_when_revoked(
    server: RunningServer, tmp_path: Path
) -> None:
    key = await create_key(server, "tournament", tmp_path)
    alice = await join(server, "alice")
    api = ApiClient(server.base_url, token=key)
    for response in (
        await api.get("/api/me"),
        await api.get("/api/notifications"),
        await api.get("/api/conversations"),
        await api.post("/api/groups", {"name": "x"}),
        await api.get("/api/events"),
    ):
        assert response.status == 401, response.body
    api.close()
    user = ApiClient(server.base_url, token=alice.token)  # a session token is no service key
    assert (await user.post(PATH, {"title": "t", "body": "b", "all": True})).status == 401
    user.close()
    assert (await system(server, key + "x", {"title": "t", "body": "b", "all": True})).status == 401
    assert (await system(server, key, {"title": "t", "body": "b", "all": True})).status == 200
    revoked = await service_key("revoke", "tournament", uri=uri_of(server), data_dir=tmp_path)
    assert revoked.returncode == 0
    after = await system(server, key, {"title": "t", "body": "b", "all": True})
    assert after.status == 401 and after.error_code == "unauthorized"


async def test_each_key_is_rate_limited(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server(service_sends_per_key=2, service_send_window_secs=60)
    first = await create_key(server, "one", tmp_path)
    second = await create_key(server, "two", tmp_path)
    alice = await join(server, "alice", online=False)
    body = {"title": "t", "body": "b", "user_ids": [alice.id]}
    assert [(await system(server, first, body)).status for _ in range(2)] == [200, 200]
    limited = await system(server, first, body)
    assert limited.status == 429 and limited.error_code == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert (await system(server, second, body)).status == 200  # per key
