"""Messaging benchmark: 1:1 send/deliver throughput beside the raw database insert rate,
fan-out latency to a large group with every member online, and history page time in a long
conversation.

    .venv/bin/python -m bench.messaging            # small defaults, about a minute or two
    .venv/bin/python -m bench.messaging --help

The server runs in its own process (bench.common.ServerProcess); this process generates the
load over real WebSockets and HTTP. Users, sessions and the long history are written straight
into the database first (through chat.store), since they are set-up, not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import bcrypt
import tornado.httpclient
import tornado.websocket
from bson import ObjectId

from bench.common import BENCH_SECRET, ServerProcess, database, percentile, print_table
from chat.auth import TokenCodec
from chat.store import Store

CONNECT_BATCH = 50  # sockets opened at once (a login storm, not a thundering herd)
ACK_EVERY = 100  # events between acks, as the contract asks of clients
SEED_BATCH = 100  # users created at once while seeding
TOKEN_TTL_SECS = 3600


class Socket:
    """A minimal WebSocket client: replies matched by ref, events counted and timestamped."""

    def __init__(self, on_event: Callable[[dict[str, Any], float], None] | None = None) -> None:
        self.on_event = on_event
        self.conn: tornado.websocket.WebSocketClientConnection | None = None
        self.hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.refs = itertools.count(1)
        self.last_event_id = 0
        self.unacked = 0

    @classmethod
    async def open(
        cls,
        url: str,
        token: str,
        on_event: Callable[[dict[str, Any], float], None] | None = None,
    ) -> Socket:
        sock = cls(on_event)
        sock.conn = await tornado.websocket.websocket_connect(
            url, on_message_callback=sock._on_message
        )
        await sock.conn.write_message(json.dumps({"type": "auth", "token": token}))
        await asyncio.wait_for(sock.hello, 30)
        return sock

    def _on_message(self, raw: str | bytes | None) -> None:
        now = time.perf_counter()
        if raw is None:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("socket closed"))
            return
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "event":
            self.last_event_id = frame["id"]
            if self.on_event is not None:
                self.on_event(frame["event"], now)
            self.unacked += 1
            if self.unacked >= ACK_EVERY and self.conn is not None:
                self.unacked = 0
                self.conn.write_message(json.dumps({"type": "ack", "last_event_id": frame["id"]}))
        elif kind == "reply":
            ref = frame.get("ref")
            waiter = self.pending.pop(ref) if ref in self.pending else None
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)
        elif kind == "hello" and not self.hello.done():
            self.hello.set_result(frame)

    async def command(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Send a command frame and wait for its reply; retries when rate limited."""
        assert self.conn is not None
        while True:
            ref = f"r{next(self.refs)}"
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.pending[ref] = fut
            await self.conn.write_message(json.dumps({"type": kind, "ref": ref, **fields}))
            reply = await asyncio.wait_for(fut, 60)
            if reply["ok"] or reply["error"]["code"] != "rate_limited":
                return reply
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


async def open_sockets(
    url: str,
    tokens: Sequence[str],
    on_event: Callable[[int], Callable[[dict[str, Any], float], None] | None],
) -> list[Socket]:
    """One socket per token, CONNECT_BATCH at a time; on_event(i) is socket i's callback."""
    sockets: list[Socket] = []
    for start in range(0, len(tokens), CONNECT_BATCH):
        batch = range(start, min(len(tokens), start + CONNECT_BATCH))
        sockets += await asyncio.gather(*(Socket.open(url, tokens[i], on_event(i)) for i in batch))
    return sockets


async def seed_users(store: Store, count: int) -> list[tuple[str, str]]:
    """(user_id, token) for `count` new users with live sessions, written straight to the db."""
    password_hash = bcrypt.hashpw(b"bench password", bcrypt.gensalt(4)).decode()
    codec = TokenCodec(BENCH_SECRET, TOKEN_TTL_SECS)
    prefix = secrets.token_hex(3)

    async def one(i: int) -> tuple[str, str]:
        user = await store.users.create(
            f"b{prefix}u{i}", f"b{prefix}u{i}@bench.test", password_hash
        )
        expires = codec.expiry()
        session = await store.sessions.create(user.id, expires)
        return user.id, codec.issue(user.id, session.id, expires)

    users: list[tuple[str, str]] = []
    for start in range(0, count, SEED_BATCH):
        users += await asyncio.gather(
            *(one(i) for i in range(start, min(count, start + SEED_BATCH)))
        )
    return users


class Http:
    """JSON over HTTP to the server under test."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)

    async def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        response = await self.client.fetch(
            self.base_url + path,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=120,
        )
        return json.loads(response.body)

    def close(self) -> None:
        self.client.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def p50_p99(values: Sequence[float]) -> str:
    return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"


async def bench_pairs(
    server: ServerProcess, http: Http, users: list[tuple[str, str]], pairs: int, per_pair: int
) -> tuple[list[tuple[str, str]], float]:
    """N pairs over WebSocket: every send stored and acknowledged, every message delivered."""
    convs = []
    for i in range(pairs):
        a_token, (b, _) = users[2 * i][1], users[2 * i + 1]
        reply = await http.call("POST", "/api/conversations/dm", a_token, {"user_id": b})
        convs.append(reply["conversation"]["id"])
    total = pairs * per_pair
    delivered = 0
    all_delivered = asyncio.Event()
    delivery_latency: list[float] = []
    sent_at: dict[str, float] = {}

    def receiver(i: int) -> Callable[[dict[str, Any], float], None] | None:
        if i % 2 == 0:
            return None  # senders: their own copies are not counted

        def on_event(event: dict[str, Any], now: float) -> None:
            nonlocal delivered
            if event["type"] != "message.new":
                return
            started = sent_at.get(event["message"]["client_msg_id"])
            if started is not None:
                delivery_latency.append(now - started)
            delivered += 1
            if delivered == total:
                all_delivered.set()

        return on_event

    sockets = await open_sockets(server.ws_url, [t for _, t in users[: 2 * pairs]], receiver)
    ack_latency: list[float] = []

    async def sender(i: int) -> None:
        sock = sockets[2 * i]
        for k in range(per_pair):
            key = f"p{i}-{k}"
            started = sent_at[key] = time.perf_counter()
            reply = await sock.command(
                "messages.send", conversation_id=convs[i], body=f"hello {k}", client_msg_id=key
            )
            assert reply["ok"], reply
            ack_latency.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(sender(i) for i in range(pairs)))
    acked = time.perf_counter() - started
    await asyncio.wait_for(all_delivered.wait(), 120)
    done = time.perf_counter() - started
    for sock in sockets:
        sock.close()
    rows = [
        ("1:1 pairs x messages each", f"{pairs} x {per_pair}"),
        ("1:1 sent+acked (stored) msg/s", f"{total / acked:.0f}"),
        ("1:1 delivered msg/s", f"{total / done:.0f}"),
        ("1:1 ack latency p50 / p99", p50_p99(ack_latency)),
        ("1:1 delivery latency p50 / p99", p50_p99(delivery_latency)),
    ]
    return rows, total / acked


async def bench_raw_inserts(store: Store, pairs: int, per_pair: int) -> tuple[float, int]:
    """The database alone: message-shaped inserts with the same unique indexes and the same
    concurrency (one sequential writer per pair); inserts per second."""
    scratch = store.db["bench_raw_messages"]
    await scratch.create_index([("conversation_id", 1), ("seq", 1)], unique=True)
    await scratch.create_index([("sender_id", 1), ("client_msg_id", 1)], unique=True)

    async def writer(i: int) -> None:
        conversation_id = str(ObjectId())
        for k in range(per_pair):
            await scratch.insert_one(
                {
                    "conversation_id": conversation_id,
                    "seq": k + 1,
                    "sender_id": f"raw{i}",
                    "body": f"hello {k}",
                    "client_msg_id": f"p{i}-{k}",
                    "created_at": time.time(),
                }
            )

    started = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(pairs)))
    elapsed = time.perf_counter() - started
    await scratch.drop()
    total = pairs * per_pair
    return total / elapsed, total


async def bench_raw_paced(
    store: Store, rates: Sequence[int], secs: float, limit_ms: float
) -> list[dict[str, Any]]:
    """The database alone at the 1:1 benchmark's rates: message-shaped insert_ones started
    at an even pace (open loop, as the benchmark's senders), each's latency; steps stop after
    the first whose p99 is over limit_ms. What the database gives a server that stores every
    message before answering: no p99 of the server's can be below the database's own."""
    scratch = store.db["bench_raw_paced"]
    await scratch.create_index([("conversation_id", 1), ("seq", 1)], unique=True)
    await scratch.create_index([("sender_id", 1), ("client_msg_id", 1)], unique=True)
    steps: list[dict[str, Any]] = []
    counter = itertools.count()
    try:
        for rate in rates:
            latencies: list[float] = []

            async def one(k: int, latencies: list[float] = latencies) -> None:
                started = time.perf_counter()
                await scratch.insert_one(
                    {
                        "conversation_id": f"paced{k % 2500}",
                        "seq": k,
                        "sender_id": "paced",
                        "body": f"hello {k}",
                        "client_msg_id": f"paced-{k}",
                        "created_at": time.time(),
                    }
                )
                latencies.append((time.perf_counter() - started) * 1000)

            tasks = []
            start = time.perf_counter()
            for i in range(int(rate * secs)):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(next(counter))))
            await asyncio.gather(*tasks)
            step = {
                "offered_per_sec": rate,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies, default=0.0),
            }
            steps.append(step)
            if step["p99_ms"] > limit_ms:
                break
    finally:
        await scratch.drop()
    return steps


async def bench_fanout(
    server: ServerProcess, http: Http, users: list[tuple[str, str]], size: int, messages: int
) -> list[tuple[str, str]]:
    """One message at a time to a group of `size` with every member online: the time from
    sending to each member's receipt."""
    owner_token = users[0][1]
    member_ids = [uid for uid, _ in users[1:size]]
    reply = await http.call(
        "POST", "/api/groups", owner_token, {"name": "fan-out", "member_ids": member_ids}
    )
    gid = reply["conversation"]["id"]
    waiting: dict[str, tuple[float, int, asyncio.Event]] = {}
    latencies: list[float] = []
    last_arrivals: list[float] = []

    def receiver(i: int) -> Callable[[dict[str, Any], float], None] | None:
        if i == 0:
            return None

        def on_event(event: dict[str, Any], now: float) -> None:
            if event["type"] != "message.new":
                return
            entry = waiting.get(event["message"]["client_msg_id"])
            if entry is None:
                return
            started, remaining, done = entry
            latencies.append(now - started)
            remaining -= 1
            waiting[event["message"]["client_msg_id"]] = (started, remaining, done)
            if remaining == 0:
                last_arrivals.append(now - started)
                done.set()

        return on_event

    connect_started = time.perf_counter()
    sockets = await open_sockets(server.ws_url, [t for _, t in users[:size]], receiver)
    connected = time.perf_counter() - connect_started
    ack_latency: list[float] = []
    for k in range(messages):
        key = f"fan-{k}"
        done = asyncio.Event()
        started = time.perf_counter()
        waiting[key] = (started, size - 1, done)
        reply = await sockets[0].command(
            "messages.send", conversation_id=gid, body=f"to all {k}", client_msg_id=key
        )
        assert reply["ok"], reply
        ack_latency.append(time.perf_counter() - started)
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0.05)  # let the sockets go quiet between messages
    for sock in sockets:
        sock.close()
    return [
        ("fan-out group size, all online", f"{size}"),
        ("fan-out sockets connected in", f"{connected:.1f} s"),
        ("fan-out sender ack p50", ms(statistics.median(ack_latency))),
        ("fan-out per-member latency p50 / p99", p50_p99(latencies)),
        ("fan-out last member reached, median", ms(statistics.median(last_arrivals))),
    ]


async def bench_history(
    server: ServerProcess,
    http: Http,
    store: Store,
    users: list[tuple[str, str]],
    size: int,
    samples: int,
) -> list[tuple[str, str]]:
    """Page time (50 messages) at the newest end, the middle and the oldest end of a long
    conversation, beside the same pages of a short one."""
    (a, a_token), (b, _) = users[-1], users[-2]
    (c, _) = users[-3]
    rows: list[tuple[str, str]] = []
    for label, other, count in (("short", c, 1_000), ("long", b, size)):
        reply = await http.call("POST", "/api/conversations/dm", a_token, {"user_id": other})
        cid = reply["conversation"]["id"]
        started = time.perf_counter()
        bodies = [f"history message {i} " + "x" * 80 for i in range(count)]
        await store.conversations.import_messages(cid, a, bodies, f"hist-{label}-")
        imported = time.perf_counter() - started
        if label == "long":
            rows.append((f"history: {count:,} messages bulk-inserted in", f"{imported:.1f} s"))
        for where, query in (
            ("newest page", "limit=50"),
            ("middle page", f"limit=50&before_seq={count // 2}"),
            ("oldest page", "limit=50&before_seq=51"),
            ("catch-up page", f"limit=50&after_seq={count - 100}"),
        ):
            times = []
            for _ in range(samples):
                t0 = time.perf_counter()
                page = await http.call("GET", f"/api/conversations/{cid}/messages?{query}", a_token)
                times.append(time.perf_counter() - t0)
                assert len(page["messages"]) == 50, page
            rows.append((f"history {label} ({count:,}) {where} p50", ms(statistics.median(times))))
    return rows


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Run every measurement once; the table rows."""
    rows: list[tuple[str, str]] = []
    with database(args.mongo_uri) as uri:
        db_name = f"bench_messaging_{secrets.token_hex(4)}"
        store = Store(uri, db_name, timeout_ms=10_000)
        await store.ensure_indexes()
        try:
            count = max(2 * args.pairs, args.group_size) + 3
            started = time.perf_counter()
            users = await seed_users(store, count)
            seeded = time.perf_counter() - started
            rows.append(("users seeded (with sessions)", f"{count} in {seeded:.1f} s"))
            server = ServerProcess(uri, db_name)
            http = Http(server.base_url)
            try:
                pair_rows, served = await bench_pairs(
                    server, http, users, args.pairs, args.per_pair
                )
                rows += pair_rows
                raw_rate, _ = await bench_raw_inserts(store, args.pairs, args.per_pair)
                rows.append(("raw db insert_one/s, same concurrency", f"{raw_rate:.0f}"))
                rows.append(("server stored rate / raw insert rate", f"{served / raw_rate:.2f}"))
                rows += await bench_fanout(
                    server, http, users, args.group_size, args.fanout_messages
                )
                rows += await bench_history(
                    server, http, store, users, args.history_size, args.samples
                )
                rows.append(("server RSS at the end", f"{server.rss_bytes() / 2**20:.0f} MiB"))
            finally:
                http.close()
                server.stop()
        finally:
            with contextlib.suppress(Exception):
                await store.drop_database()
            await store.close()
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.messaging", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mongo-uri", help="an existing MongoDB (default: embedded, in memory)")
    parser.add_argument("--pairs", type=int, default=50, help="concurrent 1:1 pairs (%(default)s)")
    add = parser.add_argument
    add(
        "--per-pair",
        type=int,
        default=40,
        help="messages each pair sends (%(default)s; past 60 the 20 frames/s socket limit paces)",
    )
    add("--group-size", type=int, default=1000, help="fan-out group size (%(default)s)")
    add("--fanout-messages", type=int, default=10, help="messages to the group (%(default)s)")
    add("--history-size", type=int, default=100_000, help="long conversation (%(default)s)")
    add("--samples", type=int, default=20, help="timed requests per page kind (%(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    rows = asyncio.run(run(args))
    rows.append(("benchmark wall time", f"{time.perf_counter() - started:.0f} s"))
    print_table("Messaging", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
