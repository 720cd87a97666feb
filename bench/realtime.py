"""Real-time fan-out: N clients connected over WebSocket (then over long-polling), messages
published to all of them through the product's own API.

Run:  .venv/bin/python -m bench.realtime            (2,000 clients; --help for options)

For each transport, against a freshly started server process (so memory deltas are not
muddied by the previous phase):

- connect: N clients open their queue (WebSocket: connect, auth frame, hello, which also
  attaches the queue and announces presence; long-polling: the first GET /api/events that
  returns the hello -- attaching and presence come with the held poll that follows, outside
  the timed part) -> clients per second;
- memory: the server's resident memory after the connects minus before, per client;
- latency: one sender posts a message to every group (POST /api/conversations/{id}/messages;
  the groups together hold every client) and each client notes when message.new arrives;
  latency = arrival minus the moment the POST was sent, over every delivery of every round.

Accounts and sessions are written straight through the store and tokens minted with the
server's secret: signing up 2,000 users over HTTP would mostly measure bcrypt (12 rounds).
The clients all run in this one process and event loop, so the latency includes the time the
client side needs to read N frames; it is an upper bound of the server's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import tornado.httpclient
import tornado.websocket

from bench.common import BENCH_SECRET, ServerProcess, database, percentile, print_table
from bench.loadgen import gather_limited
from chat.auth import PasswordHasher, TokenCodec
from chat.store import Store

SEED_BATCH = 100  # accounts written concurrently while seeding
DELIVERY_TIMEOUT_SECS = 60.0  # a round that does not complete by then is reported as lost
CONNECT_TIMEOUT_SECS = 30.0
ACK_EVERY = 50  # events between acknowledgements, as a client would
IDLE_TIMEOUT_SECS = 30.0  # waiting for the server to go idle gives up after this


class Account:
    __slots__ = ("token", "user_id")

    def __init__(self, user_id: str, token: str) -> None:
        self.user_id = user_id
        self.token = token


async def seed_accounts(uri: str, db_name: str, count: int) -> list[Account]:
    """count accounts with a live session each, written through the store."""
    store = Store(uri, db_name, timeout_ms=10_000)
    codec = TokenCodec(BENCH_SECRET, 24 * 3600)
    password_hash = await PasswordHasher(4).hash(uuid.uuid4().hex)  # nobody signs in with it
    prefix = uuid.uuid4().hex[:6]

    async def one(i: int) -> Account:
        user = await store.users.create(
            f"b{prefix}{i}", f"b{prefix}{i}@bench.example", password_hash
        )
        expires_at = codec.expiry()
        session = await store.sessions.create(user.id, expires_at)
        return Account(user.id, codec.issue(user.id, session.id, expires_at))

    accounts: list[Account] = []
    try:
        for start in range(0, count, SEED_BATCH):
            batch = range(start, min(count, start + SEED_BATCH))
            accounts += await asyncio.gather(*(one(i) for i in batch))
    finally:
        await store.close()
    return accounts


class Http:
    """JSON over HTTP to the server under test."""

    def __init__(self, base_url: str, max_clients: int) -> None:
        self.base_url = base_url
        self.client = tornado.httpclient.AsyncHTTPClient(
            force_instance=True, max_clients=max_clients
        )

    async def call(
        self, method: str, path: str, token: str, body: Any = None, timeout: float = 60.0
    ) -> Any:
        response = await self.client.fetch(
            self.base_url + path,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=timeout,
            connect_timeout=CONNECT_TIMEOUT_SECS,
        )
        return json.loads(response.body)

    def close(self) -> None:
        self.client.close()


async def create_groups(
    http: Http, sender: Account, members: Sequence[Account], group_size: int
) -> list[tuple[str, list[str]]]:
    """Groups that together hold every member, sender included in each: (id, member ids)."""
    per_group = group_size - 1  # the sender takes one seat
    groups: list[tuple[str, list[str]]] = []
    for start in range(0, len(members), per_group):
        ids = [m.user_id for m in members[start : start + per_group]]
        body = {"name": f"bench {start // per_group}", "member_ids": ids}
        reply = await http.call("POST", "/api/groups", sender.token, body)
        groups.append((reply["conversation"]["id"], ids))
    return groups


class Deliveries:
    """Arrival times of message.new per (body, user), compared with when each was sent."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        self.expected = 0
        self.arrived = asyncio.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "message.new":
            return
        sent = self.sent_at.get(event["message"]["body"])
        if sent is None:
            return
        self.latencies.append(time.perf_counter() - sent)
        if len(self.latencies) >= self.expected:
            self.arrived.set()


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of a process, in clock ticks, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because an accept queue was full."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(row.get("ListenOverflows", 0))
    return 0


async def wait_idle(pid: int, timeout: float = IDLE_TIMEOUT_SECS) -> None:
    """Wait until the process uses under a tenth of a core (or timeout): a round's
    reconnects and acknowledgements are over before the next round is timed."""
    window = 0.3
    allowed = max(1, round(window * os.sysconf("SC_CLK_TCK") / 10))
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        before = cpu_ticks(pid)
        await asyncio.sleep(window)
        if cpu_ticks(pid) - before <= allowed:
            return


async def run_rounds(
    http: Http,
    server: ServerProcess,
    sender: Account,
    groups: list[tuple[str, list[str]]],
    deliveries: Deliveries,
    rounds: int,
    recipients: int,
) -> tuple[int, list[float]]:
    """Send one message per group per round; returns (missing deliveries, POST round trips)."""
    posts: list[float] = []
    missing = 0
    for r in range(rounds):
        deliveries.expected = len(deliveries.latencies) + recipients
        deliveries.arrived.clear()

        async def send(conversation_id: str, body: str) -> None:
            start = time.perf_counter()
            deliveries.sent_at[body] = start
            await http.call(
                "POST",
                f"/api/conversations/{conversation_id}/messages",
                sender.token,
                {"body": body, "client_msg_id": body},
            )
            posts.append(time.perf_counter() - start)

        await asyncio.gather(
            *(
                send(cid, f"bench-{r}-{g}-{uuid.uuid4().hex[:8]}")
                for g, (cid, _) in enumerate(groups)
            )
        )
        try:
            await asyncio.wait_for(deliveries.arrived.wait(), DELIVERY_TIMEOUT_SECS)
        except TimeoutError:
            missing += deliveries.expected - len(deliveries.latencies)
        await wait_idle(server.pid)
    return missing, posts


# -- WebSocket clients ------------------------------------------------------------------------


class WsClient:
    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn

    async def read_forever(self, deliveries: Deliveries) -> None:
        unacked = 0
        while True:
            raw = await self.conn.read_message()
            if raw is None:
                return
            frame = json.loads(raw)
            if frame.get("type") != "event":
                continue
            deliveries.on_event(frame["event"])
            unacked += 1
            if unacked >= ACK_EVERY:
                unacked = 0
                await self.conn.write_message(
                    json.dumps({"type": "ack", "last_event_id": frame["id"]})
                )


async def connect_ws(server: ServerProcess, account: Account) -> WsClient:
    conn = await tornado.websocket.websocket_connect(
        server.ws_url, connect_timeout=CONNECT_TIMEOUT_SECS
    )
    await conn.write_message(json.dumps({"type": "auth", "token": account.token}))
    while True:
        raw = await asyncio.wait_for(conn.read_message(), CONNECT_TIMEOUT_SECS)
        if raw is None:
            raise ConnectionError(f"closed during auth: {conn.close_code}")
        if json.loads(raw).get("type") == "hello":
            return WsClient(conn)


# -- long-polling clients ---------------------------------------------------------------------


class PollClient:
    def __init__(self, http: Http, account: Account, queue_id: str) -> None:
        self.http = http
        self.account = account
        self.queue_id = queue_id
        self.cursor = 0

    async def poll_forever(self, deliveries: Deliveries, stop: asyncio.Event) -> None:
        while not stop.is_set():
            path = f"/api/events?queue_id={self.queue_id}&last_event_id={self.cursor}&timeout=25"
            try:
                reply = await self.http.call("GET", path, self.account.token, timeout=40)
            except (OSError, tornado.httpclient.HTTPClientError):
                if stop.is_set():
                    return  # the server went away at the end of the phase
                raise
            for item in reply["events"]:
                deliveries.on_event(item["event"])
                self.cursor = item["id"]


async def connect_poll(http: Http, account: Account) -> PollClient:
    reply = await http.call("GET", "/api/events", account.token, timeout=CONNECT_TIMEOUT_SECS)
    assert reply["events"][0]["event"]["type"] == "hello"
    return PollClient(http, account, reply["queue_id"])


# -- phases -----------------------------------------------------------------------------------


async def phase(
    transport: str,
    args: argparse.Namespace,
    uri: str,
    db_name: str,
    sender: Account,
    clients: list[Account],
    groups: list[tuple[str, list[str]]],
) -> list[tuple[str, str]]:
    server = ServerProcess(uri, db_name)
    http = Http(server.base_url, max_clients=len(clients) + 20)
    deliveries = Deliveries()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    ws_clients: list[WsClient] = []
    try:
        await wait_idle(server.pid)  # start-up done
        rss_before = server.rss_bytes()
        overflows_before = listen_overflows()
        start = time.perf_counter()
        if transport == "websocket":

            def ws_factory(a: Account) -> Callable[[], Awaitable[WsClient]]:
                return lambda: connect_ws(server, a)

            ws_clients = await gather_limited(
                [ws_factory(a) for a in clients], args.concurrency, return_exceptions=False
            )
            connect_secs = time.perf_counter() - start
            tasks = [asyncio.create_task(c.read_forever(deliveries)) for c in ws_clients]
        else:

            def poll_factory(a: Account) -> Callable[[], Awaitable[PollClient]]:
                return lambda: connect_poll(http, a)

            pollers = await gather_limited(
                [poll_factory(a) for a in clients], args.concurrency, return_exceptions=False
            )
            connect_secs = time.perf_counter() - start
            tasks = [asyncio.create_task(p.poll_forever(deliveries, stop)) for p in pollers]
        await wait_idle(server.pid)  # every client attached: a held poll or a waiting writer
        rss_after = server.rss_bytes()
        missing, posts = await run_rounds(
            http, server, sender, groups, deliveries, args.rounds, len(clients)
        )
        lat_ms = [x * 1000 for x in deliveries.latencies]
        post_ms = [x * 1000 for x in posts]
        n = len(clients)
        name = "WebSocket" if transport == "websocket" else "long-poll"
        return [
            (f"{name}: clients", f"{n}"),
            (f"{name}: connect rate", f"{n / connect_secs:,.0f} /s ({connect_secs:.1f} s)"),
            (f"{name}: server RSS per client", f"{(rss_after - rss_before) / n / 1024:.1f} KiB"),
            (f"{name}: server RSS with clients", f"{rss_after / 2**20:.0f} MiB"),
            (f"{name}: deliveries", f"{len(lat_ms):,} of {n * args.rounds:,} ({missing} lost)"),
            (f"{name}: latency p50", f"{percentile(lat_ms, 50):.1f} ms"),
            (f"{name}: latency p99", f"{percentile(lat_ms, 99):.1f} ms"),
            (f"{name}: latency max", f"{max(lat_ms, default=0):.1f} ms"),
            (f"{name}: POST message p50", f"{percentile(post_ms, 50):.1f} ms"),
            # Connections refused by a full accept queue are retried by the client's kernel
            # after 1 s, 3 s, ...: the usual cause of a long tail (counted machine-wide).
            (f"{name}: accept-queue overflows", f"{listen_overflows() - overflows_before:,}"),
        ]
    finally:
        # Wind down in order, so that no request is left dangling: clients stop, the server
        # answers what it holds and exits, then whatever is left is cancelled.
        stop.set()
        for client in ws_clients:
            client.conn.close()
        server.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        http.close()


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Seed accounts and groups, then measure each transport; the table's rows."""
    # Every client holds a socket here and one in the server (which inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, args.clients * 3 + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    rows: list[tuple[str, str]] = []
    with database(args.mongo_uri) as uri:
        db_name = f"bench_realtime_{uuid.uuid4().hex[:8]}"
        setup = ServerProcess(uri, db_name)  # creates the indexes
        try:
            t0 = time.perf_counter()
            sender, *clients = await seed_accounts(uri, db_name, args.clients + 1)
            http = Http(setup.base_url, max_clients=10)
            groups = await create_groups(http, sender, clients, args.group_size)
            http.close()
            rows.append(
                (
                    "setup (accounts, groups)",
                    f"{len(groups)} groups, {time.perf_counter() - t0:.1f} s",
                )
            )
        finally:
            setup.stop()
        try:
            for transport in args.transports:
                rows += await phase(transport, args, uri, db_name, sender, clients, groups)
        finally:
            store = Store(uri, db_name, timeout_ms=10_000)
            await store.drop_database()
            await store.close()
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.realtime",
        description="Connect rate, memory per connection and publish-to-receive latency "
        "for WebSocket and long-polling clients.",
    )
    parser.add_argument("--clients", type=int, default=2000, help="clients (default %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="messages per group (default %(default)s)"
    )
    parser.add_argument(
        "--group-size",
        type=int,
        default=1000,
        help="members per group including the sender; at most the server's maximum "
        "(default %(default)s, the contract's default maximum)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=100, help="connects in flight (default %(default)s)"
    )
    parser.add_argument(
        "--transports",
        type=lambda s: [t.strip() for t in s.split(",") if t.strip()],
        default=["websocket", "longpoll"],
        help="comma-separated: websocket,longpoll (default both)",
    )
    parser.add_argument(
        "--mongo-uri", default=None, help="use this MongoDB instead of an embedded one"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 20_000:
        parser.error("--clients must be between 1 and 20000")
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    if args.group_size < 2:
        parser.error("--group-size must be at least 2")
    if not set(args.transports) <= {"websocket", "longpoll"} or not args.transports:
        parser.error("--transports takes websocket and/or longpoll")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    print_table(
        f"Real-time fan-out: {args.clients} clients, {args.rounds} messages per group", rows
    )


if __name__ == "__main__":
    main()
