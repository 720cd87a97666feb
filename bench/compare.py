"""This server beside the alternatives, on the same machine in one run.

    .venv/bin/python -m bench.compare                 # 5,000 clients, about 10 minutes
    .venv/bin/python -m bench.compare --quick         # 1,000 clients, about 4 minutes
    .venv/bin/python -m bench.compare --help

Starts, one after another on loopback, and drives with the same load generator (bench.loadgen,
in --workers processes):

1. this server over WebSocket (`chat-ws`) and over long-polling (`chat-lp`): server.py in a
   child process, with an embedded database (or --mongo-uri);
2. `bare`: a bare Tornado WebSocket relay (bench/peers/bare_tornado.py): no auth, no storage,
   the ceiling of this stack;
3. `socketio` and `socketio-lp`: python-socketio in its Tornado mode
   (bench/peers/socketio_server.py) with equivalent rooms, spoken to as Engine.IO v4 over a
   raw WebSocket, and over its long-polling transport.

Workloads, for each:

(a) connect N idle clients: connect rate, and the server's resident memory per connection;
(b) fan-out: one message to all N clients, --rounds times: p50/p99 delivery latency. This
    server caps a group at 1,000 members (the contract's default), so its N clients sit in
    ceil(N/999) groups and the message is sent to each group at the same moment, one socket
    (or REST request) per group;
(c) 1:1 traffic among N/2 pairs at a fixed offered rate (open loop: each message carries the
    time it was due), stepping the rate up: the highest rate whose delivery latency p99 stayed
    within 100 ms. Stepping goes on past a step over 100 ms as long as the server keeps up
    (nothing lost or refused, median within 100 ms), so a single stall does not end it; the
    highest rate kept up with is reported too. This server stores every message before it
    delivers it; the raw insert rate of the same database, measured in the same run, is
    printed beside it. Before the steps each pair's DM gets one message (200/s, timed on a
    row of its own): the steps time the steady state, not a conversation's first message
    since the server started;
(d) group sends, this server only: --group-senders senders (60), each closed-loop (the next
    send once the reply came) in a group of its own for --group-secs (10 s), first in groups of
    2 members, then in groups of 1,000: sends per second, reply latency, and the ratio of the
    two. The other members never connect (a member with no queue costs nothing to deliver
    to), so the ratio shows whether the database work of a send grows with the group.
    chat-ws sends as WebSocket frames, each sender paced below the per-socket command limit;
    chat-lp sends over REST.

Each generator process reports its CPU use per workload, as do the server and the database: a
generator near 100 % of a core would be the ceiling, not the server. The table and the same
figures as JSON (--json) come out at the end; ratios are this server's figure divided by the
peer's. --profile DIR attaches py-spy to the server (and to this server's embedded database)
during each workload (python -m
bench.profsummary DIR summarizes the stacks). --workloads and --servers choose a part, e.g.
`--servers chat-ws,bare --workloads fanout --quick` takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import functools
import itertools
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import tornado.httpclient

from bench.cluster import SOCKETIO_LOCATION, Cluster, bench_log, running_cluster
from bench.common import ROOT, ChildServer, ServerProcess, database_and_pid, percentile
from bench.loadgen import (
    CommandTarget,
    GeneratorPool,
    HttpConn,
    HttpPool,
    WsClient,
    closed_loop,
    gather_limited,
    raise_fd_limit,
    summarize_cpu,
)
from bench.messaging import bench_raw_inserts, bench_raw_paced
from bench.peers import PeerProcess
from bench.realtime import Account, Http, cpu_ticks, create_groups, seed_accounts, wait_idle
from chat.config import FRAMES_PER_SEC
from chat.models import utcnow
from chat.presence import PRESENCE_GRACE_SECS
from chat.store import Store
from chat.store.conversations import Member

HOST = "127.0.0.1"
SERVERS = ("chat-ws", "chat-lp", "bare", "bare-lp", "socketio", "socketio-lp", "chat-ws-2p",
           "socketio-redis")  # fmt: skip
LABELS = {
    "chat-ws": "this server, WebSocket",
    "chat-lp": "this server, long-polling",
    "bare": "bare Tornado WebSocket",
    "bare-lp": "bare Tornado long-polling",
    "socketio": "python-socketio (Tornado), WebSocket",
    "socketio-lp": "python-socketio (Tornado), long-polling",
    "chat-ws-2p": "this server, WebSocket, 2 processes with Redis behind nginx",
    "socketio-redis": "python-socketio, AsyncRedisManager, 2 processes behind nginx",
}
# Two processes sharing one Redis behind the nginx sample (bench/cluster.py): the clients they
# use, and the peer module; (a)-(c) only.
CLUSTERS = {"chat-ws-2p": "chat-ws", "socketio-redis": "socketio"}
CLUSTER_PROCESSES = 2
DEFAULT_RATES = (50, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000, 4000, 6000,
                 8000, 12000, 16000, 24000)  # fmt: skip
QUICK_RATES = (50, 100, 200, 400, 800, 1500, 3000, 6000, 12000)
P99_LIMIT_MS = 100.0  # the bar for "sustained"
# Stepping goes on while the server keeps up -- every message delivered, the median within
# this -- so that one stall (a garbage collection of the whole heap) does not end it; the
# figure reported is the highest step whose p99 stayed within P99_LIMIT_MS.
P50_LIMIT_MS = 100.0
GROUP_SIZE = 1000  # the contract's default maximum group size, the sender included
ACK_EVERY = 50  # events between acks (the contract asks for at least every 100)
ACK_FLUSH_SECS = 2.0  # and at least this often when fewer arrived
ACK_FLUSH_SLICES = 20  # the clients' flushes spread over that time in this many slices
SEND_TICK_SECS = 0.005  # the open-loop sender's granularity
WARM_RATE = 200  # msg/s of (c)'s first message in each DM, before the timed steps
LP_SEND_POOL = 32  # keep-alive connections per generator process for REST sends
FANOUT_TIMEOUT_SECS = 30.0
STEP_DRAIN_SECS = 5.0  # after a step, wait this long at most for the last deliveries
GC_LINE = re.compile(r"gc pauses: (.*)")  # this server's log line on SIGUSR2 (server.py)
TICK = os.sysconf("SC_CLK_TCK")
PADDING = "x" * 40  # message bodies of a realistic size
# Workload (d): senders each closed-loop in a group of their own, first of 2 members, then of
# GROUP_SIZE. A WebSocket sender is paced below the per-socket command limit, so the senders
# can offer GROUP_SENDERS x WS_SENDS_PER_SEC at most (1,140/s): with 20 (380/s), a server
# that stores a send with one write reached that ceiling at both sizes. Far more make a slow
# server keep each send waiting behind the others past its database timeout (3 s): the
# rewrite of the group document per send before issue 13 (24 sends/s at 1,000 members with
# 20 senders) made 60 senders' sends time out: 152 errors in 10 s, 7 sends/s answered.
GROUP_SENDERS = 60
GROUP_SIZES = (2, GROUP_SIZE)
GROUP_SECS = 10.0  # per group size (--quick: 5)
WS_SENDS_PER_SEC = FRAMES_PER_SEC * 0.95  # a WebSocket sender's pace at most
REPLY_TIMEOUT_SECS = 60.0
SEED_READ_SLICE = 500  # users read at once while setting up
SETUP_ATTEMPTS = 5  # a (d) sender's sign-in and first sends, tried this often
SETUP_RETRY_SECS = 3.0
WORKLOADS = ("connect", "fanout", "one2one", "group")
CLIENT_WORKLOADS = frozenset({"connect", "fanout", "one2one"})  # those that connect N clients


# -- what each generator process runs ----------------------------------------------------------


@dataclasses.dataclass
class ClientSpec:
    """One simulated client: its id at the peer servers, or its account at this server."""

    cid: str  # the peer-server id ("c17"), or the user id for this server
    token: str = ""
    peer: str = ""  # the other side of its pair (peer-server id)
    dm: str = ""  # the pair's DM conversation id (this server)


@dataclasses.dataclass
class GroupSenderSpec:
    """A sender of workload (d): its account, and the conversation it sends to per group size."""

    account: ClientSpec
    groups: dict[int, str]  # members -> that group's id


@dataclasses.dataclass
class WorkerSpec:
    kind: str
    port: int
    workers: int
    clients: list[ClientSpec]
    sender: ClientSpec | None = None  # the fan-out sender (first process only)
    groups: list[str] = dataclasses.field(default_factory=list)  # this server's fan-out groups
    group_senders: list[GroupSenderSpec] = dataclasses.field(default_factory=list)  # (d)


class Recorder:
    """Latencies by tag, and the waits for an expected number of them."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.closed: set[str] = set()
        self.waits: dict[str, tuple[int, asyncio.Event]] = {}
        self.errors: dict[str, int] = defaultdict(int)

    def record(self, tag: str, sent: float, arrived: float) -> None:
        if tag in self.closed:
            return
        found = self.latencies[tag]
        found.append(arrived - sent)
        wait = self.waits.get(tag)
        if wait is not None and len(found) >= wait[0]:
            wait[1].set()

    async def wait_for(self, tag: str, count: int, timeout: float) -> list[float]:
        """The tag's latencies once `count` arrived, or what arrived by the timeout."""
        event = asyncio.Event()
        self.waits[tag] = (count, event)
        if len(self.latencies[tag]) >= count:
            event.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        self.waits.pop(tag, None)
        self.closed.add(tag)
        return self.latencies.pop(tag, [])


class Client:
    """The common face of a simulated client, whatever the server."""

    def __init__(self, spec: ClientSpec, rec: Recorder) -> None:
        self.spec = spec
        self.rec = rec

    async def connect(self) -> None:
        raise NotImplementedError

    def send_dm(self, tag: str, sent: float) -> None:
        raise NotImplementedError

    def send_all(self, tag: str, sent: float) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Periodic housekeeping (acks)."""

    def record_event(self, event: dict[str, Any], arrived: float) -> None:
        """Time a chat server's message.new that someone else sent (its body carries the tag
        and the moment it was due)."""
        if event.get("type") == "message.new":
            message = event["message"]
            if message["sender_id"] != self.spec.cid:
                tag, sent, _ = message["body"].split("|", 2)
                self.rec.record(tag, float(sent), arrived)

    def close(self) -> None:
        raise NotImplementedError


def _tagged(tag: str, sent: float) -> str:
    return f"{tag}|{sent:.6f}|{PADDING}"


class ChatWs(Client):
    """This server over WebSocket: auth frame, hello, events acked, commands as frames."""

    refs = itertools.count(1)

    def __init__(
        self, spec: ClientSpec, rec: Recorder, port: int, groups: Sequence[str] = ()
    ) -> None:
        super().__init__(spec, rec)
        self.port = port
        self.ws: WsClient | None = None
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.unacked = 0
        self.last_id = 0
        self.groups = groups
        self.replies: dict[int, asyncio.Future[tuple[bool, float]]] = {}  # by ref: (ok, arrived)

    async def connect(self) -> None:
        self.ws = await WsClient.connect(HOST, self.port, "/ws", self.on_text, self.on_closed)
        self.ws.send_text(json.dumps({"type": "auth", "token": self.spec.token}))
        await asyncio.wait_for(self.hello, 60)

    def on_closed(self, ws: WsClient) -> None:
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"closed: {ws.close_code}"))
        for waiter in self.replies.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"closed: {ws.close_code}"))
        self.replies.clear()

    def on_text(self, ws: WsClient, text: str, arrived: float) -> None:
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "event":
            self.last_id = frame["id"]
            self.unacked += 1
            self.record_event(frame["event"], arrived)
            if self.unacked >= ACK_EVERY:
                self.flush()
        elif kind == "reply":
            ok = bool(frame.get("ok"))
            if not ok:
                self.rec.errors[frame["error"]["code"]] += 1
            waiter = self.replies.pop(frame.get("ref"), None)
            if waiter is not None and not waiter.done():
                waiter.set_result((ok, arrived))
        elif kind == "hello" and not self.hello.done():
            self.hello.set_result(None)

    def flush(self) -> None:
        if self.unacked and self.ws is not None:
            self.unacked = 0
            self.ws.send_text(f'{{"type":"ack","last_event_id":{self.last_id}}}')

    def _send(self, conversation_id: str, tag: str, sent: float) -> int:
        """Send one message; its ref (0 when the socket is closed)."""
        assert self.ws is not None
        ref = next(self.refs)
        frame = {
            "type": "messages.send",
            "ref": ref,
            "conversation_id": conversation_id,
            "body": _tagged(tag, sent),
            "client_msg_id": f"{tag}-{os.getpid()}-{ref}",
        }
        if not self.ws.send_text(json.dumps(frame)):
            self.rec.errors["send on a closed socket"] += 1
            return 0
        return ref

    async def send_and_wait(self, conversation_id: str, tag: str) -> float | None:
        """Send one message and wait for its reply: the reply latency, None when refused."""
        sent = time.perf_counter()
        ref = self._send(conversation_id, tag, sent)
        if not ref:
            raise ConnectionError("socket closed")
        waiter = self.replies[ref] = asyncio.get_running_loop().create_future()
        ok, arrived = await asyncio.wait_for(waiter, REPLY_TIMEOUT_SECS)
        return arrived - sent if ok else None

    def send_dm(self, tag: str, sent: float) -> None:
        self._send(self.spec.dm, tag, sent)

    def send_all(self, tag: str, sent: float) -> None:
        for group in self.groups:  # one group per socket would be fairer; see ChatWsSender
            self._send(group, tag, sent)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


class ChatWsSender(Client):
    """The fan-out sender over WebSocket: one socket per group, so that no group's send
    waits behind another's on one socket (a socket's frames are handled one at a time)."""

    def __init__(self, spec: ClientSpec, rec: Recorder, port: int, groups: Sequence[str]) -> None:
        super().__init__(spec, rec)
        self.sockets = [ChatWs(spec, rec, port, (group,)) for group in groups]

    async def connect(self) -> None:
        await asyncio.gather(*(s.connect() for s in self.sockets))

    def send_all(self, tag: str, sent: float) -> None:
        for socket in self.sockets:
            socket.send_all(tag, sent)

    def flush(self) -> None:
        for socket in self.sockets:
            socket.flush()

    def close(self) -> None:
        for socket in self.sockets:
            socket.close()


class ChatLp(Client):
    """This server over long-polling: hello, then polls back to back; sends over REST."""

    def __init__(
        self, spec: ClientSpec, rec: Recorder, port: int, pool: HttpPool, groups: Sequence[str] = ()
    ) -> None:
        super().__init__(spec, rec)
        self.port = port
        self.pool = pool
        self.groups = groups
        self.headers = {"Authorization": f"Bearer {spec.token}"}
        self.conn: HttpConn | None = None
        self.queue_id = ""
        self.cursor = 0
        self.task: asyncio.Task[None] | None = None
        self.running = True
        self.refs = itertools.count(1)
        self.sends: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        self.conn = await HttpConn.open(HOST, self.port)
        status, body = await self.conn.request("GET", "/api/events", self.headers)
        if status != 200:
            raise ConnectionError(f"hello: HTTP {status}")
        reply = json.loads(body)
        self.queue_id = reply["queue_id"]
        self.task = asyncio.create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        assert self.conn is not None
        while self.running:
            path = f"/api/events?queue_id={self.queue_id}&last_event_id={self.cursor}&timeout=25"
            try:
                status, body = await self.conn.request("GET", path, self.headers, timeout=40)
            except (ConnectionError, TimeoutError, RuntimeError):
                return
            arrived = self.conn.arrived
            if status != 200:
                self.rec.errors[f"poll HTTP {status}"] += 1
                await asyncio.sleep(1)
                continue
            for item in json.loads(body)["events"]:
                self.cursor = item["id"]
                self.record_event(item["event"], arrived)

    async def _post(self, conversation_id: str, tag: str, sent: float) -> None:
        key = f"{tag}-{os.getpid()}-{self.spec.cid}-{next(self.refs)}"
        try:
            status = await rest_send(self.pool, self.spec.token, conversation_id, tag, sent, key)
        except (ConnectionError, TimeoutError):
            self.rec.errors["send failed"] += 1
            return
        if status != 201:
            self.rec.errors[f"send HTTP {status}"] += 1

    def _spawn(self, conversation_id: str, tag: str, sent: float) -> None:
        task = asyncio.create_task(self._post(conversation_id, tag, sent))
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    def send_dm(self, tag: str, sent: float) -> None:
        self._spawn(self.spec.dm, tag, sent)

    def send_all(self, tag: str, sent: float) -> None:
        for group in self.groups:
            self._spawn(group, tag, sent)

    def close(self) -> None:
        self.running = False
        if self.conn is not None:
            self.conn.abort()


async def rest_send(
    http: HttpPool | HttpConn, token: str, conversation_id: str, tag: str, sent: float, key: str
) -> int:
    """POST one message to this server (REST); the HTTP status."""
    status, _ = await http.request(
        "POST",
        f"/api/conversations/{conversation_id}/messages",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        json.dumps({"body": _tagged(tag, sent), "client_msg_id": key}).encode(),
    )
    return status


class ChatRestSender:
    """A group sender over REST (the long-polling transport's sends), on a keep-alive
    connection of its own; it holds no queue, so nothing is delivered to it."""

    def __init__(self, spec: ClientSpec, rec: Recorder, port: int) -> None:
        self.spec = spec
        self.rec = rec
        self.port = port
        self.conn: HttpConn | None = None
        self.refs = itertools.count(1)

    async def connect(self) -> None:
        self.conn = await HttpConn.open(HOST, self.port)

    async def send_and_wait(self, conversation_id: str, tag: str) -> float | None:
        """POST one message: the reply latency, None when refused."""
        if self.conn is None or self.conn.closed:  # the server may close after an error
            self.conn = await HttpConn.open(HOST, self.port)
        sent = time.perf_counter()
        key = f"{tag}-{os.getpid()}-{self.spec.cid}-{next(self.refs)}"
        status = await rest_send(self.conn, self.spec.token, conversation_id, tag, sent, key)
        if status != 201:
            self.rec.errors[f"send HTTP {status}"] += 1
            return None
        return self.conn.arrived - sent

    def flush(self) -> None:
        """Nothing to acknowledge."""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.abort()


class PeerClient(Client):
    """Common to the two peers: JSON payloads {to, k (tag), t (sent), body}."""

    def __init__(self, spec: ClientSpec, rec: Recorder, port: int) -> None:
        super().__init__(spec, rec)
        self.port = port
        self.ws: WsClient | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.receives = True

    def on_closed(self, ws: WsClient) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed: {ws.close_code}"))

    def _payload(self, tag: str, sent: float, to: str | None) -> dict[str, Any]:
        payload: dict[str, Any] = {"k": tag, "t": sent, "body": PADDING}
        if to is not None:
            payload["to"] = to
        return payload

    def _received(self, payload: dict[str, Any], arrived: float) -> None:
        if self.receives:
            self.rec.record(payload["k"], payload["t"], arrived)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


class BareWs(PeerClient):
    async def connect(self) -> None:
        self.ws = await WsClient.connect(
            HOST, self.port, f"/ws?id={self.spec.cid}", self.on_text, self.on_closed
        )
        await asyncio.wait_for(self.ready, 60)

    def on_text(self, ws: WsClient, text: str, arrived: float) -> None:
        frame = json.loads(text)
        if "k" in frame:
            self._received(frame, arrived)
        elif frame.get("type") == "welcome" and not self.ready.done():
            self.ready.set_result(None)

    def send_dm(self, tag: str, sent: float) -> None:
        assert self.ws is not None
        self.ws.send_text(json.dumps(self._payload(tag, sent, self.spec.peer)))

    def send_all(self, tag: str, sent: float) -> None:
        assert self.ws is not None
        self.ws.send_text(json.dumps(self._payload(tag, sent, None)))


class LpPeerClient(PeerClient):
    """A peer over long-polling: its poll loop is its own; sends are POSTed on the pool."""

    post_headers: dict[str, str] = {}

    def __init__(self, spec: ClientSpec, rec: Recorder, port: int, pool: HttpPool) -> None:
        super().__init__(spec, rec, port)
        self.pool = pool
        self.conn: HttpConn | None = None
        self.task: asyncio.Task[None] | None = None
        self.running = True
        self.posts: set[asyncio.Task[None]] = set()
        self.post_path = ""

    async def _post(self, text: str) -> None:
        try:
            status, _ = await self.pool.request(
                "POST", self.post_path, self.post_headers, text.encode()
            )
        except (ConnectionError, TimeoutError):
            self.rec.errors["post failed"] += 1
            return
        if status != 200:
            self.rec.errors[f"post HTTP {status}"] += 1

    def _spawn(self, text: str) -> None:
        task = asyncio.create_task(self._post(text))
        self.posts.add(task)
        task.add_done_callback(self.posts.discard)

    def close(self) -> None:
        self.running = False
        if self.conn is not None:
            self.conn.abort()


class BareLp(LpPeerClient):
    """The bare relay over long-polling: GET /poll back to back, frames POSTed to /send."""

    async def connect(self) -> None:
        self.post_path = "/send"
        self.conn = await HttpConn.open(HOST, self.port)
        status, body = await self.conn.request("GET", f"/poll?id={self.spec.cid}")
        if status != 200 or "welcome" not in body.decode():
            raise ConnectionError(f"open: HTTP {status} {body[:100]!r}")
        self.task = asyncio.create_task(self._poll_forever())

    async def _poll_forever(self) -> None:
        assert self.conn is not None
        while self.running:
            try:
                status, body = await self.conn.request(
                    "GET", f"/poll?id={self.spec.cid}", timeout=40
                )
            except (ConnectionError, TimeoutError, RuntimeError):
                return
            arrived = self.conn.arrived
            if status != 200:
                self.rec.errors[f"poll HTTP {status}"] += 1
                await asyncio.sleep(1)
                continue
            for frame in json.loads(body):
                payload = json.loads(frame)
                if "k" in payload:
                    self._received(payload, arrived)

    def send_dm(self, tag: str, sent: float) -> None:
        self._spawn(json.dumps(self._payload(tag, sent, self.spec.peer)))

    def send_all(self, tag: str, sent: float) -> None:
        self._spawn(json.dumps(self._payload(tag, sent, None)))


class SocketIoWs(PeerClient):
    """Engine.IO v4 over WebSocket: open packet 0{..}, namespace connect 40, events 42[...],
    server pings 2 answered with 3."""

    async def connect(self) -> None:
        self.ws = await WsClient.connect(
            HOST, self.port, "/socket.io/?EIO=4&transport=websocket", self.on_text, self.on_closed
        )
        await asyncio.wait_for(self.ready, 60)

    def on_text(self, ws: WsClient, text: str, arrived: float) -> None:
        if text.startswith("42"):
            name, payload = json.loads(text[2:])[:2]
            if name == "msg":
                self._received(payload, arrived)
        elif text == "2":
            ws.send_text("3")
        elif text.startswith("0{"):
            ws.send_text("40" + json.dumps({"id": self.spec.cid}))
        elif text.startswith("40") and not self.ready.done():
            self.ready.set_result(None)
        elif text.startswith("44") and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connect refused: {text}"))

    def send_dm(self, tag: str, sent: float) -> None:
        assert self.ws is not None
        self.ws.send_text("42" + json.dumps(["dm", self._payload(tag, sent, self.spec.peer)]))

    def send_all(self, tag: str, sent: float) -> None:
        assert self.ws is not None
        self.ws.send_text("42" + json.dumps(["all", self._payload(tag, sent, None)]))


class SocketIoLp(LpPeerClient):
    """Engine.IO v4 long-polling: GET opens (0{sid}), POST 40 connects the namespace, then GETs
    return packets separated by \\x1e; pings (2) are answered by POSTing 3; events are POSTed."""

    post_headers = {"Content-Type": "text/plain;charset=UTF-8"}

    def __init__(self, spec: ClientSpec, rec: Recorder, port: int, pool: HttpPool) -> None:
        super().__init__(spec, rec, port, pool)
        self.path = ""

    async def connect(self) -> None:
        self.conn = await HttpConn.open(HOST, self.port)
        status, body = await self.conn.request("GET", "/socket.io/?EIO=4&transport=polling")
        text = body.decode()
        if status != 200 or not text.startswith("0"):
            raise ConnectionError(f"open: HTTP {status} {text[:100]}")
        self.path = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(text[1:])['sid']}"
        self.post_path = self.path
        await self._post("40" + json.dumps({"id": self.spec.cid}))
        while not self.ready.done():
            self._packets(*await self.conn.request("GET", self.path))
        self.task = asyncio.create_task(self._poll_forever())

    def _packets(self, status: int, body: bytes) -> None:
        if status != 200:
            raise ConnectionError(f"poll: HTTP {status} {body[:100]!r}")
        arrived = self.conn.arrived if self.conn is not None else time.perf_counter()
        for packet in body.decode().split("\x1e"):
            if packet.startswith("42"):
                name, payload = json.loads(packet[2:])[:2]
                if name == "msg":
                    self._received(payload, arrived)
            elif packet == "2":
                self._spawn("3")
            elif packet.startswith("40") and not self.ready.done():
                self.ready.set_result(None)
            elif packet.startswith("44") and not self.ready.done():
                self.ready.set_exception(ConnectionError(f"connect refused: {packet}"))

    async def _poll_forever(self) -> None:
        assert self.conn is not None
        while self.running:
            try:
                self._packets(*await self.conn.request("GET", self.path, timeout=70))
            except (ConnectionError, TimeoutError, RuntimeError):
                return

    def send_dm(self, tag: str, sent: float) -> None:
        self._spawn("42" + json.dumps(["dm", self._payload(tag, sent, self.spec.peer)]))

    def send_all(self, tag: str, sent: float) -> None:
        self._spawn("42" + json.dumps(["all", self._payload(tag, sent, None)]))


class Generator(CommandTarget):
    """One generator process: its share of the clients, and the fan-out sender in the first."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.rec = Recorder()
        self.clients: list[Client] = []
        self.sender: Client | None = None
        self.pool: HttpPool | None = None
        self.flusher: asyncio.Task[None] | None = None
        self.group_senders: list[tuple[GroupSenderSpec, ChatWs | ChatRestSender]] = []

    def _make(self, spec: ClientSpec, sender: bool = False) -> Client:
        kind, port, rec = self.spec.kind, self.spec.port, self.rec
        if kind == "chat-ws":
            if sender:
                return ChatWsSender(spec, rec, port, self.spec.groups)
            return ChatWs(spec, rec, port)
        if kind.endswith("-lp") and self.pool is None:
            self.pool = HttpPool(HOST, port, LP_SEND_POOL)
        if kind == "chat-lp":
            assert self.pool is not None
            return ChatLp(spec, rec, port, self.pool, self.spec.groups if sender else ())
        client: PeerClient
        if kind == "bare":
            client = BareWs(spec, rec, port)
        elif kind == "bare-lp":
            assert self.pool is not None
            client = BareLp(spec, rec, port, self.pool)
        elif kind == "socketio":
            client = SocketIoWs(spec, rec, port)
        else:
            assert self.pool is not None
            client = SocketIoLp(spec, rec, port, self.pool)
        client.receives = not sender
        return client

    async def _flush_forever(self) -> None:
        """Each client's acks every ACK_FLUSH_SECS, on a phase of its own, as real clients do
        (the browser client's timer starts at its connect). One pass over all of them at once
        sent 2,500 acks in the same millisecond every 2 s, and the server took 100-180 ms to
        read them: the 1:1 messages that came meanwhile waited behind the burst, and that was
        most of (c)'s p99 over WebSocket (sampled in the server: docs/performance.md)."""
        for tick in itertools.count():
            await asyncio.sleep(ACK_FLUSH_SECS / ACK_FLUSH_SLICES)
            phase = tick % ACK_FLUSH_SLICES
            for client in self.clients[phase::ACK_FLUSH_SLICES]:
                client.flush()
            if phase == 0:
                if self.sender is not None:
                    self.sender.flush()
                for _, sender in self.group_senders:
                    sender.flush()

    async def cmd_connect(self, start_at: float, concurrency: int) -> dict[str, Any]:
        """Connect the sender (untimed), then every client from start_at: (start, end, failures)."""
        if self.spec.sender is not None:
            self.sender = self._make(self.spec.sender, sender=True)
            await self.sender.connect()
        self.clients = [self._make(spec) for spec in self.spec.clients]
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        start = time.perf_counter()
        results = await gather_limited([c.connect for c in self.clients], concurrency)
        end = time.perf_counter()
        failures = [r for r in results if isinstance(r, BaseException)]
        self.flusher = asyncio.create_task(self._flush_forever())
        return {
            "start": start,
            "end": end,
            "connected": len(results) - len(failures),
            "failed": len(failures),
            "first_error": repr(failures[0]) if failures else None,
        }

    async def cmd_fanout(self, tag: str) -> list[float]:
        """Send one message to everyone (the sender's process only); returns nothing."""
        assert self.sender is not None
        self.sender.send_all(tag, time.perf_counter())
        return []

    async def cmd_collect(self, tag: str, wait: float) -> list[float]:
        """Latencies of this process's clients for tag, once each got it (or after `wait`)."""
        return await self.rec.wait_for(tag, len(self.clients), wait)

    async def cmd_step(
        self, tag: str, rate: float, start_at: float, duration: float, drain: float
    ) -> dict[str, Any]:
        """Send 1:1 messages among this process's pairs at `rate` per second (open loop: each
        message carries the time it was due, so a late send counts as latency)."""
        pairs = [(self.clients[i], self.clients[i + 1]) for i in range(0, len(self.clients) - 1, 2)]
        errors_before = sum(self.rec.errors.values())
        total = int(duration * rate)
        sent = 0
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        late = 0.0
        while sent < total:
            now = time.perf_counter()
            due = min(total, int((now - start_at) * rate) + 1)
            while sent < due:
                when = start_at + sent / rate
                late = max(late, now - when)
                a, b = pairs[sent % len(pairs)]
                (a if (sent // len(pairs)) % 2 == 0 else b).send_dm(tag, when)
                sent += 1
            await asyncio.sleep(SEND_TICK_SECS)
        latencies = await self.rec.wait_for(tag, sent, drain)
        return {
            "sent": sent,
            "received": len(latencies),
            "latencies": latencies,
            "errors": sum(self.rec.errors.values()) - errors_before,
            "error_kinds": dict(self.rec.errors),
            "max_send_lag": late,
        }

    async def cmd_connect_group_senders(self, concurrency: int) -> int:
        """Connect the (d) senders (WebSocket, or a REST connection each for chat-lp) and send
        one untimed message to each of their groups, so that what is timed is the steady
        state; the number of senders."""
        specs = self.spec.group_senders
        senders = await gather_limited(
            [functools.partial(self._group_sender, spec) for spec in specs],
            concurrency,
            return_exceptions=False,
        )
        self.group_senders = list(zip(specs, senders, strict=True))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush_forever())
        return len(self.group_senders)

    async def _group_sender(self, spec: GroupSenderSpec) -> ChatWs | ChatRestSender:
        """A (d) sender, connected, whose first send to each of its groups was answered; tried
        again while the server is still catching up with earlier workloads (a sign-in or a
        send refused because the database did not answer in time)."""
        for _ in range(SETUP_ATTEMPTS - 1):
            try:
                return await self._try_group_sender(spec)
            except (ConnectionError, TimeoutError):
                await asyncio.sleep(SETUP_RETRY_SECS)
        return await self._try_group_sender(spec)

    async def _try_group_sender(self, spec: GroupSenderSpec) -> ChatWs | ChatRestSender:
        sender: ChatWs | ChatRestSender
        if self.spec.kind == "chat-ws":
            sender = ChatWs(spec.account, self.rec, self.spec.port)
        else:
            sender = ChatRestSender(spec.account, self.rec, self.spec.port)
        try:
            await sender.connect()
            for conversation_id in spec.groups.values():
                if await sender.send_and_wait(conversation_id, "warm") is None:
                    raise ConnectionError(f"warm-up send refused: {dict(self.rec.errors)}")
        except BaseException:
            sender.close()
            raise
        return sender

    async def cmd_group_sends(
        self, tag: str, members: int, start_at: float, duration: float
    ) -> dict[str, Any]:
        """Every (d) sender sends closed-loop to its group of `members` from start_at for
        `duration` seconds: reply latencies, errors, and when the last reply came."""
        # A socket's commands are limited to FRAMES_PER_SEC (a refusal would count as an error
        # and cost the server less than a send): pace each WebSocket sender just below it.
        interval = 1 / WS_SENDS_PER_SEC if self.spec.kind == "chat-ws" else 0.0
        errors_before = dict(self.rec.errors)
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
        until = start_at + duration

        loops = await asyncio.gather(
            *(
                closed_loop(
                    functools.partial(sender.send_and_wait, spec.groups[members], tag),
                    until,
                    interval,
                )
                for spec, sender in self.group_senders
            )
        )
        kinds = collections.Counter(
            {k: v - errors_before.get(k, 0) for k, v in self.rec.errors.items()}
        )
        kinds.update(f"sender stopped: {loop.stopped_by}" for loop in loops if loop.stopped_by)
        return {
            "latencies": [x for loop in loops for x in loop.latencies],
            "errors": sum(loop.errors for loop in loops),
            "error_kinds": {k: v for k, v in kinds.items() if v > 0},
            "ended": max((loop.ended for loop in loops), default=until),
        }

    async def cmd_close(self) -> None:
        """Close every connection (the server sees ordinary disconnects)."""
        if self.flusher is not None:
            self.flusher.cancel()
        for client in self.clients:
            client.close()
        if self.sender is not None:
            self.sender.close()
        for _, sender in self.group_senders:
            sender.close()
        await asyncio.sleep(1.0)
        if self.pool is not None:
            self.pool.close()


def make_generator(spec: WorkerSpec) -> Generator:
    return Generator(spec)


# -- the coordinator ---------------------------------------------------------------------------


class Profiler:
    """py-spy attached to processes for one workload (--profile): collapsed stacks, one file
    per process named by `targets` (`--format raw`; flamegraph.pl or speedscope draw them)."""

    def __init__(
        self, directory: Path | None, targets: dict[str, int], timeline: bool = False
    ) -> None:
        """targets: file name (without .txt) -> the pid to sample. With timeline, each sample
        keeps its time and idle ones are kept (`--format chrometrace --idle`, a .json file per
        process, for python -m bench.stalls) instead of being collapsed."""
        self.procs: list[subprocess.Popen[bytes]] = []
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).parent / "py-spy"
        for name, pid in targets.items():
            argv = [str(exe), "record", "--pid", str(pid), "--rate", "200", "--nonblocking"]
            if timeline:
                argv += ["--idle", "--format", "chrometrace"]
                argv += ["--output", str(directory / f"{name}.json")]
            else:
                argv += ["--format", "raw", "--output", str(directory / f"{name}.txt")]
            self.procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        time.sleep(0.5)  # attached before the workload starts

    def stop(self) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


Server = ServerProcess | PeerProcess | Cluster


@dataclasses.dataclass
class Setup:
    """Who the clients are for one server: per-process specs and the pair/fan-out plan."""

    specs: list[WorkerSpec]
    receivers: int
    group_specs: list[WorkerSpec] = dataclasses.field(default_factory=list)  # (d), this server


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """Contiguous, even-sized (pair-aligned) slices."""
    pairs = [list(items[i : i + 2]) for i in range(0, len(items), 2)]
    out: list[list[Any]] = [[] for _ in range(parts)]
    for i, pair in enumerate(pairs):
        out[i * parts // len(pairs)].extend(pair)
    return out


def peer_setup(kind: str, port: int, clients: int, workers: int) -> Setup:
    specs = [
        ClientSpec(cid=f"c{i}", peer=f"c{i + 1 if i % 2 == 0 else i - 1}") for i in range(clients)
    ]
    shares = split(specs, workers)
    return Setup(
        [
            WorkerSpec(kind, port, workers, share, ClientSpec(cid="sender") if w == 0 else None)
            for w, share in enumerate(shares)
        ],
        clients,
    )


@dataclasses.dataclass
class ChatWorld:
    """Accounts, DMs and groups of this server, made once for both transports."""

    uri: str
    db_name: str
    sender: Account
    clients: list[Account]
    dms: list[str]  # dms[i] is the DM of pair i (clients 2i and 2i+1)
    groups: list[str]
    group_senders: list[tuple[Account, dict[int, str]]]  # (d): sender, members -> group id


async def build_chat_world(
    uri: str, workloads: Sequence[str], clients: int, group_senders: int, say: Callable[[str], None]
) -> ChatWorld:
    """Accounts written straight to the database (bcrypt for 5,000 sign-ups would take minutes),
    then DMs and groups created through the API of a server started for the purpose; only what
    the chosen workloads use."""
    db_name = f"bench_compare_{uuid.uuid4().hex[:8]}"
    server = ServerProcess(uri, db_name)  # creates the indexes
    if not CLIENT_WORKLOADS & set(workloads):
        clients = 0
    try:
        started = time.perf_counter()
        sender, *accounts = await seed_accounts(uri, db_name, clients + 1)
        say(f"  {clients + 1} accounts in {time.perf_counter() - started:.1f} s")
        http = Http(server.base_url, max_clients=50)
        try:
            started = time.perf_counter()
            groups: list[str] = []
            if "fanout" in workloads:
                per_group = math.ceil(clients / math.ceil(clients / (GROUP_SIZE - 1))) + 1
                groups = [gid for gid, _ in await create_groups(http, sender, accounts, per_group)]
            dms = await open_dms(uri, db_name, accounts) if "one2one" in workloads else []
            say(
                f"  {len(groups)} groups and {len(dms)} DMs in "
                f"{time.perf_counter() - started:.1f} s"
            )
            senders = []
            if "group" in workloads:
                started = time.perf_counter()
                senders = await create_sender_groups(uri, db_name, http, group_senders)
                say(
                    f"  (d) {group_senders} senders, each in a group of "
                    f"{' and of '.join(map(str, GROUP_SIZES))} in "
                    f"{time.perf_counter() - started:.1f} s"
                )
        finally:
            http.close()
    finally:
        server.stop()
    return ChatWorld(uri, db_name, sender, accounts, dms, groups, senders)


async def create_sender_groups(
    uri: str, db_name: str, http: Http, senders: int
) -> list[tuple[Account, dict[int, str]]]:
    """The (d) senders, each the owner of one group per size in GROUP_SIZES. The other members
    are accounts of their own that never connect (the same ones in every group): a member
    with no queue costs nothing to deliver to, so the groups differ only in what is stored."""
    accounts = await seed_accounts(uri, db_name, senders + max(GROUP_SIZES) - 1)
    owners, members = accounts[:senders], accounts[senders:]

    async def create(owner: Account, size: int) -> str:
        body = {"name": f"d{size}", "member_ids": [m.user_id for m in members[: size - 1]]}
        attempts = itertools.count(1)
        while True:
            try:
                reply = await http.call("POST", "/api/groups", owner.token, body)
                return str(reply["conversation"]["id"])
            except tornado.httpclient.HTTPClientError as exc:
                # 503: the database did not answer in time (a loaded machine). A group that
                # was created anyway is never used.
                if exc.code != 503 or next(attempts) == SETUP_ATTEMPTS:
                    raise
            await asyncio.sleep(SETUP_RETRY_SECS)

    # One owner at a time: a 1,000-member group is a large write, and four owners' at once
    # outlasted the database timeout on a loaded machine even when retried.
    found = []
    for owner in owners:
        ids = await asyncio.gather(*(create(owner, size) for size in GROUP_SIZES))
        found.append((owner, dict(zip(GROUP_SIZES, ids, strict=True))))
    return found


async def open_dms(uri: str, db_name: str, accounts: list[Account]) -> list[str]:
    """The DM of each pair (accounts 2i and 2i+1), written through the store as
    conversations.open_dm would (set-up, not what is measured). The pair are friends, as
    people who chat all day are: between strangers the first message of each DM is a
    message request (chat/privacy.py), a one-off per pair that (c) would otherwise measure
    2,500 times in its first steps."""
    store = Store(uri, db_name, timeout_ms=10_000)
    try:
        # In slices: one read of 5,000 users outlasts the timeout on a loaded machine.
        users = {}
        for start in range(0, len(accounts), SEED_READ_SLICE):
            ids = [a.user_id for a in accounts[start : start + SEED_READ_SLICE]]
            users.update(await store.users.get_many(ids))
        now = utcnow()

        def member(account: Account) -> Member:
            return Member(account.user_id, users[account.user_id].username, "member", now)

        def open_dm(a: Account, b: Account) -> Callable[[], Any]:
            async def make() -> Any:
                await store.social.add_friendship(a.user_id, b.user_id)
                return await store.conversations.open_dm(member(a), member(b))

            return make

        made = await gather_limited(
            [open_dm(accounts[i], accounts[i + 1]) for i in range(0, len(accounts) - 1, 2)], 100
        )
    finally:
        await store.close()
    failed = [m for m in made if isinstance(m, BaseException)]
    if failed:
        raise RuntimeError(f"opening DMs failed: {failed[0]!r}")
    return [m.id for m in made]


def chat_setup(kind: str, port: int, world: ChatWorld, workers: int) -> Setup:
    specs = []
    for i, account in enumerate(world.clients):
        pair = i // 2
        specs.append(
            ClientSpec(
                cid=account.user_id,
                token=account.token,
                dm=world.dms[pair] if pair < len(world.dms) else "",
            )
        )
    shares = split(specs, workers)
    sender = ClientSpec(cid=world.sender.user_id, token=world.sender.token)
    group_senders = [
        GroupSenderSpec(ClientSpec(cid=account.user_id, token=account.token), groups)
        for account, groups in world.group_senders
    ]
    return Setup(
        [
            WorkerSpec(kind, port, workers, share, sender if w == 0 else None, world.groups)
            for w, share in enumerate(shares)
        ],
        len(specs),
        [
            WorkerSpec(kind, port, workers, [], group_senders=group_senders[w::workers])
            for w in range(min(workers, len(group_senders)))
        ],
    )


def cpu_pct(values: Sequence[float]) -> list[int]:
    return [round(v * 100) for v in values]


def cpu_note(cpu: dict[str, Any]) -> str:
    """CPU use during a workload, in % of one core: generator processes, server, database."""
    note = f"CPU % generator {cpu['generator_cpu_pct']}, server {cpu['server_cpu_pct']}"
    if "database_cpu_pct" in cpu:
        note += f", database {cpu['database_cpu_pct']}"
    return note


class Phase:
    """One server under the chosen workloads."""

    def __init__(
        self, args: argparse.Namespace, kind: str, server: Server, setup: Setup, db_pid: int | None
    ) -> None:
        self.args = args
        self.db_pid = db_pid
        self.kind = kind
        self.server = server
        self.setup = setup
        self.result: dict[str, Any] = {"label": LABELS[kind]}

    def profiler(self, workload: str) -> Profiler:
        """The server's profile for the workload, and for this server the embedded database's
        (SecantusDB is a Python process too: where the database work of a send shows)."""
        name = f"{self.kind}-{workload}"
        targets = {name: self.server.pid}
        if self.kind.startswith("chat") and self.db_pid:
            targets[f"{name}-database"] = self.db_pid
        return Profiler(self.args.profile, targets, self.args.profile_timeline)

    async def gc_mark(self) -> int | None:
        """Start counting this server's garbage-collector pauses (it logs and resets them on
        SIGUSR2, with no collection of its own): where its log stands; None for peers."""
        log = getattr(self.server, "log", None)
        if not self.kind.startswith("chat") or log is None:
            return None
        os.kill(self.server.pid, signal.SIGUSR2)
        await asyncio.sleep(0.2)  # its line (the pauses before) is written meanwhile
        return int(log.stat().st_size)

    async def gc_since(self, mark: int | None) -> str | None:
        """The pauses since gc_mark, as the server logs them."""
        log = getattr(self.server, "log", None)
        if mark is None or log is None:
            return None
        os.kill(self.server.pid, signal.SIGUSR2)
        for _ in range(50):
            await asyncio.sleep(0.1)
            found = GC_LINE.findall(log.read_bytes()[mark:].decode(errors="replace"))
            if found:
                return str(found[-1])
        return None

    def server_ticks(self) -> int:
        """The server's CPU time so far: of every process, for the clusters."""
        pids = self.server.pids if isinstance(self.server, Cluster) else [self.server.pid]
        return sum(cpu_ticks(pid) for pid in pids)

    async def measure(
        self, pool: GeneratorPool, body: Callable[[], Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Run body; the generator processes' and the server's CPU use meanwhile."""
        db = self.db_pid if self.kind.startswith("chat") else None
        gen_before = await pool.cpu()
        srv_before, wall_before = self.server_ticks(), time.monotonic()
        db_before = cpu_ticks(db) if db else 0
        value = await body()
        srv_after, wall_after = self.server_ticks(), time.monotonic()
        db_after = cpu_ticks(db) if db else 0
        gen_after = await pool.cpu()
        wall = max(1e-9, wall_after - wall_before)
        cpu: dict[str, Any] = {
            "generator_cpu_pct": cpu_pct(summarize_cpu(gen_before, gen_after)),
            "server_cpu_pct": round((srv_after - srv_before) / TICK / wall * 100),
        }
        if db:
            cpu["database_cpu_pct"] = round((db_after - db_before) / TICK / wall * 100)
        return value, cpu

    async def run(self, say: Callable[[str], None]) -> dict[str, Any]:
        """The chosen workloads: (a) first whenever (b) or (c) is chosen, as they need its
        clients; (d) last, for this server only, once those clients are gone."""
        workloads = self.args.workloads
        await wait_idle(self.server.pid)
        if CLIENT_WORKLOADS & set(workloads):
            rss_before = self.server.rss_bytes()
            pool = GeneratorPool(make_generator, self.setup.specs)
            try:
                await pool.call_all("ping", timeout=60)
                await self.connect(pool, rss_before, say)
                if "fanout" in workloads:
                    await self.fanout(pool, say)
                if "one2one" in workloads:
                    await self.pairs(pool, say)
            finally:
                with contextlib.suppress(Exception):
                    await pool.call_all("close", timeout=30)
                await pool.close()
            # Their offline announcements (a read of each one's audience) come this much
            # later: they must not fall into the timed part of (d).
            if "group" in workloads:
                await asyncio.sleep(PRESENCE_GRACE_SECS + 1)
        if "group" in workloads and self.setup.group_specs:
            try:
                await self.group_sends(say)
            except Exception as exc:  # (a)-(c) stand; (d) shows "-" and the error
                say(f"  (d) failed: {exc!r}")
                self.result["groups"] = {"error": repr(exc)}
        return self.result

    async def group_sends(self, say: Callable[[str], None]) -> None:
        """(d): the senders' send rate to groups of 2, then of 1,000 members; their ratio."""
        # The disconnects of (a)-(c) are over, and what (c) left queued for the database.
        await wait_idle(self.server.pid)
        if self.db_pid:
            await wait_idle(self.db_pid)
        pool = GeneratorPool(make_generator, self.setup.group_specs)
        try:
            senders = sum(await pool.call_all("connect_group_senders", timeout=300, concurrency=50))
            ws = self.kind == "chat-ws"
            self.result["groups"] = section = {
                "senders": senders,
                "secs": self.args.group_secs,
                "sends_over": "WebSocket frames" if ws else "REST (POST, no queue held)",
                # What the senders can offer at most: the per-socket command limit.
                "ceiling_per_sec": senders * WS_SENDS_PER_SEC if ws else None,
            }
            for members in GROUP_SIZES:
                await wait_idle(self.server.pid)
                section[f"members_{members}"] = await self.group_round(pool, members, say)
            small, large = (section[f"members_{m}"]["per_sec"] for m in GROUP_SIZES)
            section["ratio"] = large / small if small else None
            say(
                f"  (d) {max(GROUP_SIZES):,} members / {min(GROUP_SIZES)}: "
                + ("-" if section["ratio"] is None else f"{section['ratio']:.2f}")
            )
        finally:
            with contextlib.suppress(Exception):
                await pool.call_all("close", timeout=30)
            await pool.close()

    async def group_round(
        self, pool: GeneratorPool, members: int, say: Callable[[str], None]
    ) -> dict[str, Any]:
        profiler = self.profiler(f"group-{members}")
        start_at = time.perf_counter() + 0.5
        secs = self.args.group_secs

        async def body() -> list[dict[str, Any]]:
            return await pool.call_all(
                "group_sends",
                timeout=secs + REPLY_TIMEOUT_SECS + 30,
                tag=f"d{members}",
                members=members,
                start_at=start_at,
                duration=secs,
            )

        parts, cpu = await self.measure(pool, body)
        profiler.stop()
        ms = [x * 1000 for p in parts for x in p["latencies"]]
        wall = max(p["ended"] for p in parts) - start_at
        result = {
            "members": members,
            "sends": len(ms),
            "errors": sum(p["errors"] for p in parts),
            "error_kinds": {k: v for p in parts for k, v in p["error_kinds"].items()},
            "seconds": wall,
            "per_sec": len(ms) / wall if wall > 0 else 0.0,
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms, default=0.0),
            **cpu,
        }
        ceiling = self.result["groups"]["ceiling_per_sec"]
        at_ceiling = ceiling is not None and result["per_sec"] >= 0.9 * ceiling
        result["at_senders_ceiling"] = at_ceiling
        say(
            f"  (d) {members:>5,} members: {result['per_sec']:,.0f} sends/s, reply p50 "
            f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors "
            f"{result['errors']}; {cpu_note(cpu)}"
            + ("  <- at the senders' ceiling: raise --group-senders" if at_ceiling else "")
        )
        return result

    async def connect(
        self, pool: GeneratorPool, rss_before: int, say: Callable[[str], None]
    ) -> None:
        profiler = self.profiler("connect")
        start_at = time.perf_counter() + 1.0

        async def body() -> list[dict[str, Any]]:
            return await pool.call_all(
                "connect", start_at=start_at, concurrency=self.args.concurrency
            )

        parts, cpu = await self.measure(pool, body)
        profiler.stop()
        connected = sum(p["connected"] for p in parts)
        failed = sum(p["failed"] for p in parts)
        secs = max(p["end"] for p in parts) - min(p["start"] for p in parts)
        await wait_idle(self.server.pid)
        rss_after = self.server.rss_bytes()
        n = self.setup.receivers
        self.result["connect"] = {
            "clients": n,
            "connected": connected,
            "failed": failed,
            "first_error": next((p["first_error"] for p in parts if p["first_error"]), None),
            "seconds": secs,
            "rate_per_sec": connected / secs if secs else 0.0,
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "bytes_per_connection": (rss_after - rss_before) / max(1, connected),
            **cpu,
        }
        say(
            f"  (a) {connected:,} connected ({failed} failed) in {secs:.1f} s: "
            f"{connected / secs:,.0f}/s; {(rss_after - rss_before) / max(1, connected) / 1024:.1f} "
            f"KiB each; {cpu_note(cpu)}"
        )
        if failed:
            raise RuntimeError(
                f"{failed} clients failed to connect: {self.result['connect']['first_error']}"
            )

    async def fanout(self, pool: GeneratorPool, say: Callable[[str], None]) -> None:
        latencies: list[float] = []
        lasts: list[float] = []
        missing = 0
        profiler = self.profiler("fanout")

        async def body() -> None:
            nonlocal missing
            for r in range(self.args.rounds):
                tag = f"f{r}"
                collect = pool.call_all(
                    "collect", timeout=FANOUT_TIMEOUT_SECS + 30, tag=tag, wait=FANOUT_TIMEOUT_SECS
                )
                send = pool.call(0, "fanout", timeout=30, tag=tag)
                parts, _ = await asyncio.gather(collect, send)
                got = [x for part in parts for x in part]
                missing += self.setup.receivers - len(got)
                latencies.extend(got)
                if got:
                    lasts.append(max(got))
                await wait_idle(self.server.pid)

        gc_mark = await self.gc_mark()
        _, cpu = await self.measure(pool, body)
        profiler.stop()
        gc_note = await self.gc_since(gc_mark)
        ms = [x * 1000 for x in latencies]
        self.result["fanout"] = {
            "rounds": self.args.rounds,
            "deliveries": len(ms),
            "missing": missing,
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms, default=0.0),
            "last_client_median_ms": percentile([x * 1000 for x in lasts], 50),
            **cpu,
        }
        if gc_note:
            self.result["fanout"]["gc_pauses"] = gc_note
        say(
            f"  (b) fan-out {self.args.rounds} x {self.setup.receivers:,}: p50 "
            f"{percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms ({missing} missing); "
            f"{cpu_note(cpu)}" + (f"\n        server's collector: {gc_note}" if gc_note else "")
        )

    async def first_messages(self, pool: GeneratorPool, say: Callable[[str], None]) -> None:
        """One message in each pair's DM before (c)'s steps, paced at WARM_RATE and timed
        apart. The steps send to the pairs in turn from the first at every step, so without
        it 25 to 100 % of every step's messages were their conversation's first since the
        server started (this server then reads the conversation and its newest message):
        (c) is the steady state, as (d)'s senders are warmed up too. The peers get the same
        warm-up (they keep nothing to warm)."""
        workers = len(pool)
        pairs = self.setup.receivers // 2
        duration = (pairs + 0.5) / WARM_RATE  # each process sends its pairs' share once

        async def body() -> list[dict[str, Any]]:
            return await pool.call_all(
                "step",
                tag="first",
                rate=WARM_RATE / workers,
                start_at=time.perf_counter() + 0.5,
                duration=duration,
                drain=STEP_DRAIN_SECS,
            )

        profiler = self.profiler("pairs-first")
        parts, cpu = await self.measure(pool, body)
        profiler.stop()
        ms = [x * 1000 for p in parts for x in p["latencies"]]
        sent = sum(p["sent"] for p in parts)
        first = {
            "offered_per_sec": WARM_RATE,
            "sent": sent,
            "delivered": len(ms),
            "errors": sum(p["errors"] for p in parts),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            **cpu,
        }
        self.result["first_messages"] = first
        say(
            f"  (c) first message of each of {sent:,} DMs, {WARM_RATE}/s: p50 "
            f"{first['p50_ms']:.1f} ms, p99 {first['p99_ms']:.1f} ms, lost {sent - len(ms)}, "
            f"errors {first['errors']}; {cpu_note(cpu)}"
        )
        await wait_idle(self.server.pid)

    async def pairs(self, pool: GeneratorPool, say: Callable[[str], None]) -> None:
        await self.first_messages(pool, say)
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None  # the highest step with p99 within the limit
        capacity: dict[str, Any] | None = None  # the highest step kept up with
        deadline = time.monotonic() + self.args.pairs_budget
        workers = len(pool)
        for index, rate in enumerate(self.args.rates):
            if time.monotonic() > deadline:
                say("  (c) time budget spent; stopping")
                break
            tag = f"s{index}"
            start_at = time.perf_counter() + 0.5
            profiler = self.profiler(f"pairs-{rate}")

            async def body(
                tag: str = tag, rate: float = rate, start_at: float = start_at
            ) -> list[dict[str, Any]]:
                return await pool.call_all(
                    "step",
                    tag=tag,
                    rate=rate / workers,
                    start_at=start_at,
                    duration=self.args.step_secs,
                    drain=STEP_DRAIN_SECS,
                )

            gc_mark = await self.gc_mark()
            parts, cpu = await self.measure(pool, body)
            profiler.stop()
            gc_note = await self.gc_since(gc_mark)
            sent = sum(p["sent"] for p in parts)
            received = sum(p["received"] for p in parts)
            errors = sum(p["errors"] for p in parts)
            ms = [x * 1000 for p in parts for x in p["latencies"]]
            step = {
                "offered_per_sec": rate,
                "sent": sent,
                "delivered": received,
                "lost": sent - received,
                "errors": errors,
                "error_kinds": {k: v for p in parts for k, v in p["error_kinds"].items()},
                "p50_ms": percentile(ms, 50),
                "p99_ms": percentile(ms, 99),
                "max_ms": max(ms, default=0.0),
                "max_send_lag_ms": max(p["max_send_lag"] for p in parts) * 1000,
                **cpu,
            }
            if gc_note:
                step["gc_pauses"] = gc_note
            step["kept_up"] = step["p50_ms"] <= P50_LIMIT_MS and step["lost"] == 0 and errors == 0
            step["sustained"] = step["kept_up"] and step["p99_ms"] <= P99_LIMIT_MS
            steps.append(step)
            say(
                f"  (c) {rate:>6,}/s offered: p50 {step['p50_ms']:.1f} ms, p99 "
                f"{step['p99_ms']:.1f} ms, lost {step['lost']}, errors {errors}; {cpu_note(cpu)}"
                + ("" if step["sustained"] else "  <- p99 over 100 ms")
                + ("" if step["kept_up"] else ", not kept up")
                + (f"\n        server's collector: {gc_note}" if gc_note else "")
            )
            if not step["kept_up"]:
                break
            if step["sustained"]:
                best = step
            capacity = step
            await wait_idle(self.server.pid)
        self.result["pairs"] = {
            "pairs": self.setup.receivers // 2,
            "step_secs": self.args.step_secs,
            "steps": steps,
            "sustained_per_sec": best["offered_per_sec"] if best else 0,
            "at_sustained": best,
            "kept_up_per_sec": capacity["offered_per_sec"] if capacity else 0,
            "at_kept_up": capacity,
            "note": "this server stores every message (seq allocated and inserted) first"
            if self.kind.startswith("chat")
            else "relayed from memory, nothing stored",
            "stopped_by": "the next step was not kept up with"
            if steps and not steps[-1]["kept_up"]
            else "the highest rate tried, or the time budget",
        }


# -- the table ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    get: Callable[[dict[str, Any]], float | None]
    fmt: str = "{:,.0f}"


def _get(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def get(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if not isinstance(value, dict) or key not in value or value[key] is None:
                return None
            value = value[key]
        return float(value)

    return get


def _scaled(path: tuple[str, ...], divisor: float) -> Callable[[dict[str, Any]], float | None]:
    get = _get(*path)

    def scaled(result: dict[str, Any]) -> float | None:
        value = get(result)
        return None if value is None else value / divisor

    return scaled


def _max_gen_cpu(result: dict[str, Any]) -> float | None:
    found = [
        max(section.get("generator_cpu_pct") or [0])
        for section in (result.get("connect"), result.get("fanout"))
        if isinstance(section, dict)
    ]
    at = (result.get("pairs") or {}).get("steps") or []
    found += [max(step["generator_cpu_pct"]) for step in at]
    groups = result.get("groups") or {}
    found += [
        max(groups[f"members_{m}"]["generator_cpu_pct"])
        for m in GROUP_SIZES
        if f"members_{m}" in groups
    ]
    return float(max(found)) if found else None


METRICS = (
    Metric("(a) connect rate", "clients/s", True, _get("connect", "rate_per_sec")),
    Metric(
        "(a) server memory per connection",
        "KiB",
        False,
        _scaled(("connect", "bytes_per_connection"), 1024),
        "{:,.1f}",
    ),
    Metric(
        "(a) server RSS, all connected",
        "MiB",
        False,
        _scaled(("connect", "rss_after_bytes"), 2**20),
    ),
    Metric("(b) fan-out latency p50", "ms", False, _get("fanout", "p50_ms"), "{:,.1f}"),
    Metric("(b) fan-out latency p99", "ms", False, _get("fanout", "p99_ms"), "{:,.1f}"),
    Metric("(c) 1:1 rate with p99 <= 100 ms", "msg/s", True, _get("pairs", "sustained_per_sec")),
    Metric(
        "(c)   p99 at that rate", "ms", False, _get("pairs", "at_sustained", "p99_ms"), "{:,.1f}"
    ),
    Metric(
        "(c)   server CPU at that rate", "%", False, _get("pairs", "at_sustained", "server_cpu_pct")
    ),
    Metric(
        "(c)   database CPU at that rate",
        "%",
        False,
        _get("pairs", "at_sustained", "database_cpu_pct"),
    ),
    Metric(
        "(c) 1:1 rate kept up with, p50 <= 100 ms", "msg/s", True, _get("pairs", "kept_up_per_sec")
    ),
    Metric(
        f"(c) first message of each DM, {WARM_RATE}/s: p99",
        "ms",
        False,
        _get("first_messages", "p99_ms"),
        "{:,.1f}",
    ),
    Metric("(c) raw database inserts, same run", "ins/s", True, _get("raw_db_inserts_per_sec")),
    Metric(
        "(c) raw inserts paced: rate with p99 <= 100 ms",
        "ins/s",
        True,
        _get("raw_db_paced_per_sec"),
    ),
    *(
        metric
        for members in GROUP_SIZES
        for metric in (
            Metric(
                f"(d) sends to a {members:,}-member group",
                "msg/s",
                True,
                _get("groups", f"members_{members}", "per_sec"),
            ),
            Metric(
                "(d)   reply p50",
                "ms",
                False,
                _get("groups", f"members_{members}", "p50_ms"),
                "{:,.1f}",
            ),
            Metric(
                "(d)   reply p99",
                "ms",
                False,
                _get("groups", f"members_{members}", "p99_ms"),
                "{:,.1f}",
            ),
        )
    ),
    Metric(
        f"(d) {max(GROUP_SIZES):,}-member / {min(GROUP_SIZES)}-member rate",
        "ratio",
        True,
        _get("groups", "ratio"),
        "{:.2f}",
    ),
    Metric("generator CPU, busiest process, any step", "%", False, _max_gen_cpu),
)

RATIOS = (
    ("chat-ws", "bare"),
    ("chat-ws", "socketio"),
    ("chat-lp", "bare-lp"),
    ("chat-lp", "socketio-lp"),
    ("chat-ws-2p", "socketio-redis"),
)


def build_table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for metric in METRICS:
        values = {kind: metric.get(result) for kind, result in results.items()}
        ratios = {}
        for ours, peer in RATIOS:
            a, b = values.get(ours), values.get(peer)
            if a is not None and b:
                ratios[f"{ours}/{peer}"] = a / b
        rows.append(
            {
                "metric": metric.name,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "values": values,
                "ratios": ratios,
                "fmt": metric.fmt,
            }
        )
    return rows


def render_table(rows: list[dict[str, Any]], kinds: Sequence[str]) -> str:
    ratio_keys = [f"{a}/{b}" for a, b in RATIOS if a in kinds and b in kinds]
    head = ["metric", "unit", *kinds, *ratio_keys]
    lines = []
    for row in rows:
        if all(row["values"].get(kind) is None for kind in kinds):
            continue  # a workload that was not run
        cells = [row["metric"] + (" ↑" if row["higher_is_better"] else " ↓"), row["unit"]]
        for kind in kinds:
            value = row["values"].get(kind)
            cells.append("-" if value is None else row["fmt"].format(value))
        for key in ratio_keys:
            ratio = row["ratios"].get(key)
            cells.append("-" if ratio is None else f"{ratio:.2f}x")
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    out = [
        fmt(head),
        "|"
        + "|".join("-" * (w + 2) if i < 2 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|",
    ]
    out += [fmt(cells) for cells in lines]
    return "\n".join(out)


# -- the run -----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("tornado", "pymongo", "python-socketio", "python-engineio", "SecantusDB"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every server in turn under the chosen workloads; the results (also written as JSON)."""
    limit = raise_fd_limit()
    need = args.clients + 1000
    if limit < need:
        raise SystemExit(f"open-file limit {limit} is below the {need} this run needs")
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    chat_kinds = [k for k in args.servers if k.startswith("chat")]
    # The peers take part in (a)-(c) only.
    kinds = [k for k in args.servers if k in chat_kinds or CLIENT_WORKLOADS & set(args.workloads)]
    if kinds != args.servers:
        say(f"skipped (no workload of theirs chosen): {', '.join(set(args.servers) - set(kinds))}")
    with database_and_pid(args.mongo_uri) as (uri, db_pid):
        world: ChatWorld | None = None
        try:
            if chat_kinds:
                say("this server: seeding accounts, DMs and groups")
                world = await build_chat_world(
                    uri, args.workloads, args.clients, args.group_senders, say
                )
            for kind in kinds:
                say(f"{kind}: {LABELS[kind]}")
                try:
                    with server_for(kind, uri, world, args) as (server, setup):
                        results[kind] = await Phase(args, kind, server, setup, db_pid).run(say)
                except Exception as exc:
                    say(f"  {kind} failed: {exc!r}")
                    results[kind] = {"label": LABELS[kind], "error": repr(exc)}
            if world is not None and {"one2one", "group"} & set(args.workloads):
                say("raw database inserts (the same database, no server running)")
                store = Store(uri, world.db_name, timeout_ms=10_000)
                try:
                    writers = min(100, max(1, args.clients // 2))
                    rate, total = await bench_raw_inserts(
                        store, writers, args.raw_inserts // writers
                    )
                finally:
                    await store.close()
                extra["raw_db_inserts"] = {
                    "per_sec": rate,
                    "inserts": total,
                    "concurrent_writers": writers,
                    "note": "insert_one of a message-shaped document with the messages "
                    "collection's two unique indexes, one sequential writer per pair",
                }
                say(f"  {rate:,.0f} inserts/s ({total:,} inserts, {writers} writers)")
                if "one2one" in args.workloads:
                    say("raw database inserts paced at (c)'s rates (the database alone)")
                    store = Store(uri, world.db_name, timeout_ms=10_000)
                    try:
                        paced = await bench_raw_paced(
                            store, args.rates, args.step_secs, P99_LIMIT_MS
                        )
                    finally:
                        await store.close()
                    for step in paced:
                        say(
                            f"  {step['offered_per_sec']:>6,}/s: p50 {step['p50_ms']:.1f} ms, "
                            f"p99 {step['p99_ms']:.1f} ms, max {step['max_ms']:.0f} ms"
                        )
                    within = [s["offered_per_sec"] for s in paced if s["p99_ms"] <= P99_LIMIT_MS]
                    extra["raw_db_paced"] = {
                        "steps": paced,
                        "sustained_per_sec": max(within, default=0),
                        "note": "insert_one at an even pace, each timed; the highest rate "
                        "whose p99 is within the limit",
                    }
        finally:
            if world is not None:
                store = Store(uri, world.db_name, timeout_ms=10_000)
                with contextlib.suppress(Exception):
                    await store.drop_database()
                await store.close()
    if "raw_db_inserts" in extra:
        for kind, result in results.items():
            if kind.startswith("chat"):  # beside this server's figures: it stores each message
                result["raw_db_inserts_per_sec"] = extra["raw_db_inserts"]["per_sec"]
                if "raw_db_paced" in extra:
                    result["raw_db_paced_per_sec"] = extra["raw_db_paced"]["sustained_per_sec"]
    rows = build_table(results)
    return {
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **versions()},
        "arguments": {
            "clients": args.clients,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "step_secs": args.step_secs,
            "rates": list(args.rates),
            "workloads": list(args.workloads),
            "group_senders": args.group_senders,
            "group_secs": args.group_secs,
            "database": "given --mongo-uri"
            if args.mongo_uri
            else "embedded (SecantusDB, in memory)",
        },
        "wall_secs": round(time.monotonic() - started),
        "servers": results,
        **extra,
        "table": [{k: v for k, v in row.items() if k != "fmt"} for row in rows],
        "_rows": rows,
    }


@contextlib.contextmanager
def server_for(
    kind: str, uri: str, world: ChatWorld | None, args: argparse.Namespace
) -> Iterator[tuple[Server, Setup]]:
    """The kind's server, started, and who its clients are; stopped after the block."""
    server: Server
    client_kind = CLUSTERS.get(kind, kind)
    if kind in CLUSTERS:

        def start(redis_url: str) -> ChildServer:
            if kind == "chat-ws-2p":
                assert world is not None
                extra = ["--redis-url", redis_url, "--trusted-proxy", "127.0.0.1"]
                return ServerProcess(uri, world.db_name, extra, log=bench_log(kind))
            return PeerProcess("bench.peers.socketio_server", ["--redis-url", redis_url])

        location = SOCKETIO_LOCATION if kind == "socketio-redis" else ""
        connections = 3 * args.clients + 1000  # the client's and the process's side, and REST
        with running_cluster(
            start, CLUSTER_PROCESSES, connections=connections, location=location
        ) as cluster:
            if world is not None and kind == "chat-ws-2p":
                setup = chat_setup(client_kind, cluster.port, world, args.workers)
                setup.group_specs = []  # (d) is the one-process figure
            else:
                setup = peer_setup(client_kind, cluster.port, args.clients, args.workers)
            yield cluster, setup
        return
    if kind.startswith("chat"):
        assert world is not None
        server = ServerProcess(uri, world.db_name, log=bench_log(kind))
        setup = chat_setup(kind, server.port, world, args.workers)
    else:
        bare = kind in ("bare", "bare-lp")
        server = PeerProcess("bench.peers.bare_tornado" if bare else "bench.peers.socketio_server")
        setup = peer_setup(kind, server.port, args.clients, args.workers)
    try:
        yield server, setup
    finally:
        server.stop()


def print_report(report: dict[str, Any], kinds: Sequence[str]) -> None:
    args = report["arguments"]
    print(
        f"\nComparison: {args['clients']:,} clients, {args['workers']} generator processes "
        f"({args['concurrency']} connects in flight each), "
        f"{report['machine']['cpus']} CPUs, {report['wall_secs']} s"
    )
    print(render_table(report["_rows"], kinds))
    raw = report.get("raw_db_inserts")
    if raw:
        print(
            f"\nThis server stores every message before delivering it: one insert per message, "
            f"sends that arrive together sharing one insert_many. "
            f"Raw inserts into the same database in the same run: {raw['per_sec']:,.0f}/s "
            f"({raw['concurrent_writers']} concurrent writers)."
        )
    paced = report.get("raw_db_paced")
    if paced:
        steps = ", ".join(
            f"{s['offered_per_sec']:,}/s {s['p99_ms']:.0f} ms" for s in paced["steps"]
        )
        print(
            "The database alone, insert_one paced at (c)'s rates, p99 per rate: "
            f"{steps}. (c)'s p99 cannot be below the database's own."
        )
    for kind in kinds:
        groups = report["servers"].get(kind, {}).get("groups")
        if groups and "error" in groups:
            print(f"(d) {kind} failed: {groups['error']}")
        elif groups:
            ceiling = groups["ceiling_per_sec"]
            print(
                f"(d) {kind}: {groups['senders']} senders over {groups['sends_over']}, each "
                f"closed-loop in its own group for {groups['secs']:g} s; only the senders are "
                "connected."
                + (
                    f" Their ceiling (the per-socket command limit): {ceiling:,.0f}/s."
                    if ceiling
                    else ""
                )
            )
    print("Ratios: this server's figure divided by the peer's (↑ higher is better, ↓ lower).")
    for kind in kinds:
        error = report["servers"].get(kind, {}).get("error")
        if error:
            print(f"{kind} failed: {error}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="This server beside a bare Tornado relay and python-socketio (WebSocket and "
        "long-polling): connect rate, memory per connection, fan-out latency, sustained 1:1 rate, "
        "and this server's send rate to 1,000-member vs 2-member groups. For a quick look at one "
        "figure: --servers chat-ws,bare --workloads fanout --quick.",
    )
    add = parser.add_argument
    add("--clients", type=int, default=None, help="N idle clients (default 5000; --quick 1000)")
    add("--quick", action="store_true", help="1,000 clients, shorter steps: about 4 minutes")
    add("--workers", type=int, default=2, help="generator processes (default %(default)s)")
    add("--rounds", type=int, default=None, help="fan-out messages (default 10; --quick 5)")
    add(
        "--step-secs", type=float, default=None, help="seconds per rate step (default 6; --quick 3)"
    )
    add(
        "--rates",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=None,
        help="offered 1:1 rates to step through, msg/s, comma-separated",
    )
    add(
        "--pairs-budget",
        type=float,
        default=150.0,
        help="seconds of rate steps per server at most (%(default)s)",
    )
    add("--concurrency", type=int, default=100, help="connects in flight per process (%(default)s)")
    add(
        "--servers",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(SERVERS),
        help="comma-separated subset of " + ",".join(SERVERS),
    )
    add(
        "--workloads",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=list(WORKLOADS),
        help="comma-separated subset of " + ",".join(WORKLOADS) + " (fanout and one2one connect "
        "the clients first, so connect is measured with them; group is this server's only)",
    )
    add(
        "--group-senders",
        type=int,
        default=GROUP_SENDERS,
        help="(d): senders, each in a group of its own (%(default)s)",
    )
    add(
        "--group-secs",
        type=float,
        default=None,
        help=f"(d): seconds of sending per group size (default {GROUP_SECS:g}; --quick half)",
    )
    add("--raw-inserts", type=int, default=5000, help="raw database inserts to time (%(default)s)")
    add(
        "--json",
        type=Path,
        default=None,
        help="where to write the JSON (default bench/results/compare-<time>.json)",
    )
    add(
        "--profile",
        type=Path,
        default=None,
        help="attach py-spy to each server per workload; write stacks here "
        "(python -m bench.profsummary DIR summarizes them)",
    )
    add(
        "--profile-timeline",
        action="store_true",
        help="with --profile: keep each sample's time, idle ones too (python -m bench.stalls DIR "
        "lists the longest turns of the event loop and what ran in them)",
    )
    add("--mongo-uri", default=None, help="use this MongoDB instead of an embedded one")
    args = parser.parse_args(argv)
    args.clients = args.clients or (1000 if args.quick else 5000)
    args.rounds = args.rounds or (5 if args.quick else 10)
    args.step_secs = args.step_secs or (3.0 if args.quick else 6.0)
    args.rates = args.rates or list(QUICK_RATES if args.quick else DEFAULT_RATES)
    args.group_secs = args.group_secs or (GROUP_SECS / 2 if args.quick else GROUP_SECS)
    if not 2 <= args.clients <= 20_000 or args.clients % 2:
        parser.error("--clients must be an even number between 2 and 20000")
    if not 1 <= args.workers <= 16 or args.clients < 2 * args.workers:
        parser.error("--workers must be between 1 and 16, with at least one pair each")
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers:
        parser.error(f"--servers takes {', '.join(SERVERS)}")
    if set(args.workloads) - set(WORKLOADS) or not args.workloads:
        parser.error(f"--workloads takes {', '.join(WORKLOADS)}")
    args.workloads = [w for w in WORKLOADS if w in args.workloads]
    if not 1 <= args.group_senders <= 1000:
        parser.error("--group-senders must be between 1 and 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    kinds = [k for k in SERVERS if k in report["servers"]]
    print_report(report, kinds)
    path = args.json or ROOT / "bench" / "results" / (
        "compare-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in report.items() if k != "_rows"}
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nJSON: {path}")
    failed = any("error" in r for r in report["servers"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
