"""deploy/nginx-processes.conf with Debian's nginx (ports, addresses and certificate paths
replaced) in front of two server processes on one database and one Redis, round robin, no
stickiness: nginx's own log (the sample's $upstream_addr) shows which process took each request.
WebSockets, long-polling (the queues are in Redis), presence.subscribe over REST (forwarded to
the queue's process over the bus) and the browser work so; the sample's ip_hash line is tested
too."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from playwright.async_api import expect

from chat.dbserver import free_port
from tests.browser_helpers import (
    befriend,
    bubble,
    close_all,
    launch,
    live_person,
    open_conversation,
    open_dm_from_friends,
    person_row,
    send,
    tab,
)
from tests.certs import Certificates, make_certificates
from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer
from tests.test_nginx import nginx, rendered
from tests.test_processes import redis_server, redis_url, start_processes, stop_all

__all__ = ["redis_server", "redis_url"]  # the fixtures of test_processes, shared

SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx-processes.conf"
MESSAGES = 6  # per sender


@dataclasses.dataclass
class Front:
    """nginx on its https port, the processes behind it, and nginx's access log."""

    port: int
    hosts: list[str]
    certs: Certificates
    log: Path

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def tls(self) -> Certificates:  # what browser_helpers reads of a RunningServer
        return self.certs

    def api(self, token: str | None = None) -> ApiClient:
        return ApiClient(self.base_url, token, ssl_context=self.certs.client_context())

    async def ws(self) -> WsClient:
        return await WsClient.connect(
            f"wss://localhost:{self.port}/ws", ssl_context=self.certs.client_context()
        )

    def served(self, path_prefix: str) -> Counter[str]:
        """How many requests under this path each process answered (nginx's log)."""
        counts: Counter[str] = Counter()
        for line in self.log.read_text().splitlines():
            found = re.search(r'"[A-Z]+ (\S+) HTTP/[\d.]+" \d+ upstream=(\S+)', line)
            if found and found[1].startswith(path_prefix):
                counts[found[2]] += 1
        return counts

    async def served_soon(self, path_prefix: str, requests: int) -> Counter[str]:
        """served(), once nginx has logged this many such requests (or after 5 s)."""
        for _ in range(100):
            if (counts := self.served(path_prefix)).total() >= requests:
                return counts
            await asyncio.sleep(0.05)
        return self.served(path_prefix)


def site_config(hosts: list[str], https_port: int, http_port: int, prefix: Path,
                certs: Certificates) -> str:  # fmt: skip
    """The sample on this test's loopback ports, with its certificate and log."""
    servers = "".join(f"    server {host} max_fails=1 fail_timeout=5s;\n" for host in hosts)
    return rendered(SITE, https_port, http_port, certs, {
        "    server 127.0.0.1:8001 max_fails=1 fail_timeout=5s;\n": servers,
        "    server 127.0.0.1:8002 max_fails=1 fail_timeout=5s;\n": "",
        "/var/log/nginx/chat.access.log": str(prefix / "chat.access.log"),
    })  # fmt: skip


@contextlib.asynccontextmanager
async def running_front(
    database_uri: str, tmp_path: Path, redis_url: str, *, sticky: bool = False
) -> AsyncIterator[Front]:
    """Two processes and nginx with the sample; sticky: its `ip_hash;` line uncommented."""
    started = await start_processes(
        database_uri, tmp_path, 2, "--redis-url", redis_url, "--trusted-proxy", "127.0.0.1"
    )
    try:
        hosts = [host for _, host in started]
        certs = make_certificates(tmp_path / "tls")
        https_port, prefix = free_port(), tmp_path / "nginx"
        site = site_config(hosts, https_port, free_port(), prefix, certs)
        if sticky:
            assert "    # ip_hash;" in site, "the sample no longer offers ip_hash: update this test"
            site = site.replace("    # ip_hash;", "    ip_hash;")
        with nginx(prefix, site, https_port):
            yield Front(https_port, hosts, certs, prefix / "chat.access.log")
    finally:
        stop_all(started)


@pytest.fixture
async def front(database_uri: str, tmp_path: Path, redis_url: str) -> AsyncIterator[Front]:
    async with running_front(database_uri, tmp_path, redis_url) as running:
        yield running


async def dm_between(front: Front) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Alice and Bob, signed up through nginx, and their DM."""
    alice = await front.api().register("alice")
    bob = await front.api().register("bob")
    dm = await front.api(alice["token"]).post(
        "/api/conversations/dm", {"user_id": bob["user"]["id"]}
    )
    assert dm.status == 200, dm.body
    return alice, bob, dm.body["conversation"]["id"]


async def ws_bodies(ws: WsClient, count: int) -> list[tuple[int, str]]:
    """The next count message.new events of a socket: (seq, body)."""
    got = []
    for _ in range(count):
        message = (await ws.event("message.new", timeout=5))["event"]["message"]
        got.append((message["seq"], message["body"]))
    return got


async def test_websockets_and_rest_round_robin_over_two_processes_deliver_each_event_once(
    front: Front,
) -> None:
    alice, bob, cid = await dm_between(front)
    alice_ws, bob_ws = await front.ws(), await front.ws()
    await alice_ws.auth(alice["token"])
    await bob_ws.auth(bob["token"])
    alice_api = front.api(alice["token"])
    sent = []
    for n in range(MESSAGES):  # Alice over REST (each call to either process), Bob over his socket
        reply = await alice_api.post(f"/api/conversations/{cid}/messages", {"body": f"a{n}"})
        assert reply.status == 201, reply.body
        sent.append((reply.body["message"]["seq"], f"a{n}"))
        frame = await bob_ws.command("messages.send", conversation_id=cid, body=f"b{n}")
        assert frame["ok"], frame
        sent.append((frame["data"]["message"]["seq"], f"b{n}"))
    for ws in (alice_ws, bob_ws):  # each socket: every message once, in seq order
        assert await ws_bodies(ws, 2 * MESSAGES) == sent
    served = front.served("/api/")
    assert len(served) == 2 and min(served.values()) >= MESSAGES // 2, served
    for ws in (alice_ws, bob_ws):
        ws.close()
        await ws.wait_closed()
    # nginx logs a socket once it ends: the two sockets, one on each process.
    assert len(await front.served_soon("/ws", 2)) == 2, front.served("/ws")


Sent = list[tuple[int, str]]  # (seq, body) of each message


async def poll_through(front: Front) -> tuple[int, Sent, Sent]:
    """Bob sends over his socket while Alice long-polls one queue through nginx: how many
    new queues her polls got (hellos), the messages they carried, and those sent."""
    alice, bob, cid = await dm_between(front)
    bob_ws = await front.ws()
    await bob_ws.auth(bob["token"])
    alice_api = front.api(alice["token"])
    first = await alice_api.get("/api/events?timeout=0")
    queue_id, cursor = first.body["queue_id"], 0
    sent = []
    for n in range(MESSAGES):
        frame = await bob_ws.command("messages.send", conversation_id=cid, body=f"b{n}")
        assert frame["ok"], frame
        sent.append((frame["data"]["message"]["seq"], f"b{n}"))
    got: list[tuple[int, str]] = []
    hellos = 0

    async def poll(timeout: int) -> None:
        nonlocal queue_id, cursor, hellos
        reply = await alice_api.get(
            f"/api/events?timeout={timeout}&queue_id={queue_id}&last_event_id={cursor}"
        )
        assert reply.status == 200, reply.body
        for item in reply.body["events"]:
            event = item["event"]
            hellos += event["type"] == "hello"
            if event["type"] == "message.new":
                got.append((event["message"]["seq"], event["message"]["body"]))
            cursor = item["id"]
        queue_id = reply.body["queue_id"]

    for _ in range(2 * MESSAGES):  # polls of one queue, to whichever process nginx picks
        if len(got) >= MESSAGES:
            break
        await poll(2)
    # A few more polls, each to whichever process nginx picks: whatever the timing (one poll
    # may have carried every message), the polls reached both processes, and none of them
    # brings an event again.
    for _ in range(4):
        await poll(0)
    return hellos, got, sent


async def test_a_long_polling_client_round_robin_over_two_processes_gets_each_event_once(
    front: Front,
) -> None:
    hellos, got, sent = await poll_through(front)
    assert len(front.served("/api/events")) == 2, front.served("/api/events")
    assert hellos == 0, f"{hellos} new queues: the polls' queue was not found on the other process"
    assert got == sent


async def test_with_the_samples_ip_hash_a_long_polling_client_gets_each_event_once(
    database_uri: str, tmp_path: Path, redis_url: str
) -> None:
    # The interim for long-polling clients (docs/deploy.md): one address, one process. Here
    # every client is 127.0.0.1, so all of them are on one process.
    async with running_front(database_uri, tmp_path, redis_url, sticky=True) as front:
        hellos, got, sent = await poll_through(front)
        assert hellos == 0 and got == sent, (hellos, got, sent)
        assert len(front.served("/api/")) == 1, front.served("/api/")


async def test_presence_subscribe_over_rest_reaches_the_queue_of_a_socket_on_either_process(
    front: Front,
) -> None:
    alice, bob, _ = await dm_between(front)
    ws = await front.ws()
    queue_id = (await ws.auth(alice["token"]))["queue_id"]
    api = front.api(alice["token"])
    body = {"queue_id": queue_id, "user_ids": [bob["user"]["id"]]}
    statuses = [(await api.post("/api/presence/subscribe", body)).status for _ in range(4)]
    assert len(front.served("/api/presence/subscribe")) == 2  # both processes were asked
    assert statuses == [200] * 4, statuses  # what the browser client does for the directory
    # A stranger (not in Alice's audience) subscribed to through both processes: the
    # socket hears each of her transitions once, whichever process holds either socket.
    carol = await front.api().register("carol")
    body = {"queue_id": queue_id, "user_ids": [carol["user"]["id"]]}
    for _ in range(2):
        reply = await api.post("/api/presence/subscribe", body)
        assert reply.status == 200 and reply.body["presence"] == {carol["user"]["id"]: "offline"}
    await asyncio.sleep(0.3)  # the forwarded subscription crosses the bus
    carol_ws = await front.ws()
    await carol_ws.auth(carol["token"])
    online = (await ws.event("presence"))["event"]
    assert (online["user_id"], online["status"]) == (carol["user"]["id"], "online")
    with pytest.raises(TimeoutError):
        extra = await ws.event("presence", timeout=1)
        pytest.fail(f"a second presence event: {extra}")


async def test_two_people_in_chromium_through_nginx_chat_live(front: Front) -> None:
    server = cast(RunningServer, front)  # browser_helpers read base_url and tls only
    async with launch() as browser:
        ann = await live_person(browser, server, "ann")
        ben = await live_person(browser, server, "ben")
        await befriend(ann, ben)
        await open_dm_from_friends(ann, "ben")
        await send(ann, "hello through nginx")
        await open_conversation(ben, "ann")
        await expect(bubble(ben.page, "hello through nginx")).to_be_visible()
        await send(ben, "and back")
        await expect(bubble(ann.page, "and back")).to_be_visible()
        assert ann.errors == [] and ben.errors == [], (ann.errors, ben.errors)
        await close_all(ann, ben)
    assert len(front.served("/api/")) == 2, front.served("/api/")
    assert len(front.served("/ws")) >= 1


async def test_the_directory_in_chromium_shows_a_stranger_come_online_through_nginx(
    front: Front,
) -> None:
    # The directory's dots come from presence.subscribe, which nginx sends to either process.
    server = cast(RunningServer, front)
    carol = await front.api().register("carol")
    async with launch() as browser:
        ann = await live_person(browser, server, "ann")
        await tab(ann, "People")
        row = person_row(ann.page, "directory-list", "carol")
        await expect(row).to_have_attribute("data-status", "offline")
        await asyncio.sleep(0.5)  # the subscription (forwarded, maybe) is recorded
        carol_ws = await front.ws()
        await carol_ws.auth(carol["token"])
        await expect(row).to_have_attribute("data-status", "online")
        assert ann.errors == [], ann.errors
        await close_all(ann)
    assert front.served("/api/presence/subscribe"), "the directory did not subscribe"
