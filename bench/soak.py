"""Soak test: many clients chatting over both transports through disconnects, resumes and
transport switches; then every acknowledged message is checked at every member.

    .venv/bin/python -m bench.soak                        # 500 clients, 1 + 5 minutes (+ ~4 min)
    .venv/bin/python -m bench.soak --clients 50 --duration 20 --warmup 0 --leave-wait 0  # a look
    .venv/bin/python -m bench.soak --help

One server process (server.py) with its own embedded database. M accounts, each in two DMs
(a ring: i with i+1 and i with i+7) and one group of --group-size; clients run in
--workers generator processes (bench.loadgen). Each client:

- starts on WebSocket or long-polling at random, and sends a message to one of its
  conversations every --send-interval seconds on average (a WebSocket frame or a REST POST,
  with a client_msg_id; a send whose answer was lost is retried with the same key until it is
  acknowledged);
- every --chaos-interval seconds on average, drops its connection (TCP reset, no closing
  handshake), closes it cleanly, or opens a new one while the old is still open (a takeover),
  and resumes its queue with its cursor, switching transport half of the time. (A poll the
  old connection had already sent can reach the server after the new connection's auth and
  take the queue back, as a newer attach does; the new WebSocket is then closed with 4409 and
  the client resumes again. That is counted, not a problem.)

Every event is checked on arrival: ids must follow each other (no gap, no repeat), and a
resume must say `resumed: true` (the queue grace is never exceeded here). After --duration,
sending stops, every client waits until it holds every acknowledged message of its
conversations, and the checks run: each acknowledged message reached every member exactly
once, and each member saw each conversation's seqs in increasing order. Then the clients
leave for good.

That is one round. The soak runs two: a --warmup round (1 minute), then the measured round
(--duration), each checked as above, with new clients and so new queues. After each, once
--leave-wait seconds have let the queues expire (the server runs with --queue-grace 60 s
here), the server's memory is read: its RSS, and Python's allocated block count after a full
collection (SIGUSR1 makes the server log it). After the measured round both must be back
near where they were after the warm-up. Memory is compared with the warmed-up server, not the
cold one, because CPython's allocator keeps the 1 MiB arenas that the first burst of
connections spread its long-lived objects over (sessions remembered, conversation
sequencers, database connections); see docs/performance.md. A leak grows with traffic and
still shows, in the block count above all: the measured round carries five times the
warm-up's.

Prints a verdict; exits 1 on any loss, duplicate, reordering, lost queue, unexpected error,
ERROR line in the server's log (kept in bench/results/soak-<time>-server.log), or memory
that did not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import functools
import itertools
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.cluster import Cluster, running_cluster
from bench.common import ROOT, ChildServer, ServerProcess, database, print_table
from bench.loadgen import (
    CommandTarget,
    GeneratorPool,
    HttpConn,
    HttpPool,
    WsClient,
    gather_limited,
    raise_fd_limit,
    summarize_cpu,
)
from bench.realtime import Account, Http, seed_accounts, wait_idle

HOST = "127.0.0.1"
POLL_SECS = 10  # long-poll hold: short enough that polls cycle often during the soak
ACK_EVERY = 20  # events between acks over WebSocket
ACK_FLUSH_SECS = 1.0
RETRY_SECS = 1.0  # an unacknowledged send is retried this often while connected
RECONNECT_PAUSE_SECS = 2.0  # at most this long between losing a connection and resuming
SEND_POOL = 16  # keep-alive connections per process for REST sends
DRAIN_TIMEOUT_SECS = 90.0
CLOSE_REPLACED = 4409  # the server's close code for a connection whose queue was taken over
KEPT_SECS = 10.0  # how long a connection left open for a takeover may still take it back
# RSS "near its start" (the warmed-up server): within this, or within a share of the growth
# at the peak. RSS also moves with what the allocator keeps (6-7 MiB in a measured round
# with no live growth), so the sharper leak check is the block count below.
MEMORY_SLACK_BYTES = 16 * 2**20
MEMORY_SLACK_FRACTION = 0.25
# Python's allocated blocks after a full collection (the server logs them on SIGUSR1): back
# within this many of the start. A leak of one object per message sent (about 31,000 in
# the measured round) exceeds it three times over.
BLOCKS_SLACK = 10_000
MEMORY_LINE = re.compile(r"memory: rss .*?, python blocks (\d+)")
MEMORY_LINE_WAIT_SECS = 30.0
Server = ServerProcess | Cluster  # one process, or --processes N behind nginx


# -- the checks (pure; tested in tests/test_soak_verdict.py) -----------------------------------


@dataclasses.dataclass
class Verdict:
    """What the delivery checks found; ok when nothing."""

    messages: int = 0  # acknowledged messages checked
    deliveries: int = 0  # (message, member) pairs checked
    losses: list[str] = dataclasses.field(default_factory=list)
    duplicates: list[str] = dataclasses.field(default_factory=list)
    reorders: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.losses or self.duplicates or self.reorders)

    def add(self, other: Verdict) -> None:
        """Fold another check's findings into this one."""
        self.messages += other.messages
        self.deliveries += other.deliveries
        self.losses += other.losses
        self.duplicates += other.duplicates
        self.reorders += other.reorders


def check_deliveries(
    members: Mapping[str, Sequence[str]],
    acknowledged: Iterable[tuple[str, int]],
    received: Mapping[str, Mapping[str, Sequence[int]]],
) -> Verdict:
    """Every acknowledged (conversation, seq) exactly once at every member of the conversation,
    and every member's arrivals per conversation in increasing seq order.

    members: conversation -> member user ids; received: user -> conversation -> seqs in the
    order the user's client processed them (message.new events)."""
    verdict = Verdict()
    counts: dict[tuple[str, str], Counter[int]] = {}
    for user, conversations in received.items():
        for conversation, seqs in conversations.items():
            counts[user, conversation] = Counter(seqs)
            seen: set[int] = set()
            highest = 0
            for seq in seqs:
                if seq in seen:
                    continue  # a repeat: counted as a duplicate below, not twice
                if seq < highest:
                    verdict.reorders.append(
                        f"{user} got seq {seq} of {conversation} after seq {highest}"
                    )
                seen.add(seq)
                highest = max(highest, seq)
    for conversation, seq in sorted(set(acknowledged)):
        verdict.messages += 1
        for user in members.get(conversation, ()):
            verdict.deliveries += 1
            times = counts.get((user, conversation), Counter())[seq]
            if times == 0:
                verdict.losses.append(f"{user} never got seq {seq} of {conversation}")
            elif times > 1:
                verdict.duplicates.append(f"{user} got seq {seq} of {conversation} {times} times")
    return verdict


def memory_returned(start: int, peak: int, end: int, processes: int = 1) -> bool:
    """True when the resident memory after the clients left is near its start: within
    MEMORY_SLACK_BYTES (per process, the figures being their sums), or within
    MEMORY_SLACK_FRACTION of the growth at the peak."""
    slack = MEMORY_SLACK_BYTES * processes
    allowed = max(slack, MEMORY_SLACK_FRACTION * max(0, peak - start))
    return end - start <= allowed


def blocks_returned(start: int, end: int, processes: int = 1) -> bool:
    """True when the server's live Python objects after the clients left are back near their
    start: at most BLOCKS_SLACK allocated blocks more (per process, the figures being sums)."""
    return end - start <= BLOCKS_SLACK * processes


class Memory(NamedTuple):
    rss: int  # bytes
    blocks: int  # Python's allocated blocks after a full collection


def memory_lines(log: Path, offset: int) -> list[str]:
    """The block counts of the memory lines logged past `offset` (a quick local read)."""
    with log.open("rb") as f:
        f.seek(offset)
        return MEMORY_LINE.findall(f.read().decode(errors="replace"))


async def read_memory(server: Server) -> Memory:
    """The server's RSS, then its block count (of every process, summed, with --processes)."""
    processes = server.processes if isinstance(server, Cluster) else [server]
    found = [await read_process_memory(process) for process in processes]
    return Memory(sum(m.rss for m in found), sum(m.blocks for m in found))


async def read_process_memory(server: ChildServer) -> Memory:
    """One process's RSS, then its block count: SIGUSR1 makes it log a memory line."""
    log = server.log
    assert log is not None
    rss = server.rss_bytes()
    offset = log.stat().st_size  # a local stat, not worth a thread
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + MEMORY_LINE_WAIT_SECS
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = memory_lines(log, offset)
        if found:
            return Memory(rss, int(found[-1]))
    raise RuntimeError(f"the server logged no memory line within {MEMORY_LINE_WAIT_SECS:.0f} s")


# -- one simulated client ----------------------------------------------------------------------


@dataclasses.dataclass
class SoakSpec:
    user_id: str
    token: str
    conversations: list[str]


@dataclasses.dataclass
class Settings:
    port: int
    seed: int
    send_interval: float
    chaos_interval: float


class SoakClient:
    """A client that keeps its queue across connections, like the browser client does."""

    refs = itertools.count(1)

    def __init__(
        self, spec: SoakSpec, settings: Settings, pool: HttpPool, rng: random.Random
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.pool = pool
        self.rng = rng
        self.headers = {"Authorization": f"Bearer {spec.token}"}
        self.transport = "ws" if rng.random() < 0.5 else "lp"
        self.queue_id: str | None = None
        self.epoch: str | None = None
        self.cursor = 0  # the id of the last event processed
        self.unacked = 0
        self.generation = 0  # bumped at every (re)connect: older connections are ignored
        self.ws: WsClient | None = None
        self.poll: HttpConn | None = None
        self.poll_task: asyncio.Task[None] | None = None
        self.hello: asyncio.Future[dict[str, Any]] | None = None
        self.connected = asyncio.Event()
        self.reconnecting = False
        self.kept_at = -1e9  # when a connection was last left open for a takeover
        # Sends: client_msg_id -> (conversation, body) until acknowledged; in flight by ref.
        self.unconfirmed: dict[str, tuple[str, str]] = {}
        self.in_flight: dict[str, float] = {}
        self.attempts: Counter[str] = Counter()
        self.ws_refs: dict[int, str] = {}
        self.acked: dict[str, tuple[str, int]] = {}
        self.received: dict[str, list[int]] = defaultdict(list)
        self.problems: list[str] = []
        self.stats: Counter[str] = Counter()
        self.sent_count = 0

    # connections --------------------------------------------------------------------------

    async def connect(self, resume: bool) -> None:
        """Open the current transport; resume the queue when we have one."""
        self.generation += 1
        generation = self.generation
        if self.transport == "ws":
            await self._connect_ws(generation, resume)
        else:
            await self._connect_lp(generation, resume)
        self.connected.set()

    def _resumed(self, hello: dict[str, Any], resume: bool) -> None:
        if resume and not hello.get("resumed"):
            self.problems.append(
                f"queue lost: resume of {self.queue_id} at {self.cursor} said resumed false"
            )
            self.cursor = 0  # a new queue starts at 1 (its events are checked from there)
        self.queue_id, self.epoch = hello["queue_id"], hello["epoch"]

    async def _connect_ws(self, generation: int, resume: bool) -> None:
        self.hello = asyncio.get_running_loop().create_future()
        ws = await WsClient.connect(
            HOST,
            self.settings.port,
            "/ws",
            lambda w, text, arrived: self._on_ws_text(generation, w, text),
            lambda w: self._on_ws_close(generation, w),
        )
        frame: dict[str, Any] = {"type": "auth", "token": self.spec.token}
        if resume and self.queue_id:
            frame.update(queue_id=self.queue_id, epoch=self.epoch, last_event_id=self.cursor)
        self.ws = ws
        self.unacked = 0
        ws.send_text(json.dumps(frame))
        hello = await asyncio.wait_for(self.hello, 30)
        self._resumed(hello, resume)

    async def _connect_lp(self, generation: int, resume: bool) -> None:
        conn = await HttpConn.open(HOST, self.settings.port)
        self.poll = conn
        first = "/api/events?timeout=0"
        if resume and self.queue_id:
            first += f"&queue_id={self.queue_id}&epoch={self.epoch}&last_event_id={self.cursor}"
        status, body = await conn.request("GET", first, self.headers)
        if status != 200:
            raise ConnectionError(f"poll HTTP {status}: {body[:200]!r}")
        reply = json.loads(body)
        events = reply["events"]
        if events and events[0]["id"] == 0:  # a hello: a new queue
            self._resumed(events[0]["event"], resume)
            events = events[1:]
        elif resume:
            self.stats["resumed"] += 1
        self._process(events)
        self.poll_task = asyncio.create_task(self._poll_forever(generation, conn))

    async def _poll_forever(self, generation: int, conn: HttpConn) -> None:
        while generation == self.generation:
            path = (
                f"/api/events?queue_id={self.queue_id}&epoch={self.epoch}"
                f"&last_event_id={self.cursor}&timeout={POLL_SECS}"
            )
            try:
                status, body = await conn.request("GET", path, self.headers, timeout=POLL_SECS + 30)
            except (ConnectionError, TimeoutError, RuntimeError) as exc:
                if generation == self.generation:
                    self.problems.append(f"poll failed: {exc!r}")
                    self._lost(generation)
                return
            if generation != self.generation:
                return  # superseded: the new connection resumes from our cursor
            if status != 200:
                self.problems.append(f"poll HTTP {status}: {body[:200]!r}")
                self._lost(generation)
                return
            reply = json.loads(body)
            events = reply["events"]
            if events and events[0]["id"] == 0:
                self._resumed(events[0]["event"], True)
                events = events[1:]
            self._process(events)

    def _on_ws_text(self, generation: int, ws: WsClient, text: str) -> None:
        if generation != self.generation:
            return  # an abandoned connection: its frames are not ours any more
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "event":
            self._process([frame])
            self.unacked += 1
            if self.unacked >= ACK_EVERY:
                self.flush()
        elif kind == "reply":
            key = self.ws_refs.pop(frame.get("ref"), None)
            if key is not None:
                if frame.get("ok"):
                    self._confirmed(key, frame["data"]["message"])
                else:
                    self.in_flight.pop(key, None)
                    if frame["error"]["code"] != "rate_limited":
                        self.problems.append(f"send refused: {frame['error']}")
                        self.unconfirmed.pop(key, None)
        elif kind == "hello" and self.hello is not None and not self.hello.done():
            self.hello.set_result(frame)

    def _on_ws_close(self, generation: int, ws: WsClient) -> None:
        if self.hello is not None and not self.hello.done():
            self.hello.set_exception(ConnectionError(f"closed during auth: {ws.close_code}"))
        if generation != self.generation:
            return
        if ws.close_code == CLOSE_REPLACED and time.monotonic() - self.kept_at < KEPT_SECS:
            # The connection we left open for a takeover had a request on its way (a poll
            # sent just before we switched): arriving after this connection's auth, it took
            # the queue back, as the protocol says a newer attach does. Take it back again.
            self.stats["taken back"] += 1
        else:
            self.problems.append(f"unexpected close {ws.close_code}")
        self._lost(generation)

    def _lost(self, generation: int) -> None:
        """The current connection failed by itself: reconnect (and resume)."""
        if generation != self.generation or self.reconnecting:
            return
        self.connected.clear()
        asyncio.get_running_loop().create_task(self.reconnect(self.transport, "recover"))

    def _process(self, items: Iterable[dict[str, Any]]) -> None:
        for item in items:
            event_id = item["id"]
            if event_id != self.cursor + 1:
                if event_id <= self.cursor:
                    self.problems.append(f"event {event_id} again (cursor {self.cursor})")
                    continue
                self.problems.append(f"event ids jump from {self.cursor} to {event_id}")
            self.cursor = event_id
            self.stats["events"] += 1
            event = item["event"]
            if event.get("type") == "message.new":
                message = event["message"]
                self.received[message["conversation_id"]].append(message["seq"])

    def flush(self) -> None:
        """Acknowledge what was processed (WebSocket; a poll's cursor acknowledges by itself)."""
        if self.unacked and self.ws is not None and self.transport == "ws":
            self.unacked = 0
            self.ws.send_text(f'{{"type":"ack","last_event_id":{self.cursor}}}')

    def _drop_current(self, how: str) -> None:
        """End the current connection: 'abort' (reset), 'close' (cleanly) or 'keep' (leave
        it open for the next connection to take over)."""
        self.generation += 1  # from now on nothing from it counts
        self.connected.clear()
        # Answers that were on their way over it will never be read: resend at once.
        self.in_flight.clear()
        self.ws_refs.clear()
        ws, self.ws = self.ws, None
        poll, self.poll = self.poll, None
        if how == "keep":
            self.kept_at = time.monotonic()
            # The next connection takes the queue over (the server closes an old WebSocket
            # with 4409 and answers an old poll with []); an idle poll connection is closed
            # a little later, as a browser would.
            if poll is not None:
                asyncio.get_running_loop().call_later(5.0, poll.abort)
            return
        if ws is not None:
            ws.abort() if how == "abort" else ws.close()
        if poll is not None:
            poll.abort()  # a poll has no clean close short of finishing it

    async def reconnect(self, transport: str, how: str) -> None:
        """Drop the connection as `how` says and resume on `transport`, retrying until it works."""
        if self.reconnecting:
            return
        self.reconnecting = True
        try:
            self.flush()
            self._drop_current("abort" if how == "recover" else how)
            if how != "keep":
                await asyncio.sleep(self.rng.uniform(0, RECONNECT_PAUSE_SECS))
            self.stats[f"reconnect {how}"] += 1
            if transport != self.transport:
                self.stats["switch"] += 1
            self.transport = transport
            for attempt in range(20):
                try:
                    await self.connect(resume=True)
                    break
                except (ConnectionError, OSError, TimeoutError) as exc:
                    self.stats["connect retries"] += 1
                    if attempt == 19:
                        self.problems.append(f"could not reconnect: {exc!r}")
                    self._drop_current("abort")
                    await asyncio.sleep(0.5)
        finally:
            self.reconnecting = False

    # sending ------------------------------------------------------------------------------

    def new_message(self) -> None:
        conversation = self.rng.choice(self.spec.conversations)
        # Unique per round too (the seed differs): a key is bound to its first message for good.
        key = f"{self.spec.user_id[-8:]}-{self.settings.seed}-{next(self.refs)}"
        self.unconfirmed[key] = (conversation, f"soak {key}")
        self.sent_count += 1

    def _confirmed(self, key: str, message: dict[str, Any]) -> None:
        self.in_flight.pop(key, None)
        self.unconfirmed.pop(key, None)
        stored = (message["conversation_id"], message["seq"])
        previous = self.acked.get(key)
        if previous is not None and previous != stored:
            # An idempotent retry must return the message already stored, never a second one.
            self.problems.append(f"retry of {key} stored twice: {previous} and {stored}")
        self.acked[key] = stored

    def push_sends(self) -> None:
        """(Re)send every unconfirmed message not in flight, on the current transport."""
        if not self.connected.is_set():
            return
        now = time.monotonic()
        for key, (conversation, body) in list(self.unconfirmed.items()):
            if now - self.in_flight.get(key, -1e9) < RETRY_SECS * 5:
                continue
            self.in_flight[key] = now
            if self.attempts[key]:
                self.stats["retries"] += 1
            self.attempts[key] += 1
            if self.transport == "ws" and self.ws is not None:
                ref = next(self.refs)
                self.ws_refs[ref] = key
                self.ws.send_text(
                    json.dumps(
                        {"type": "messages.send", "ref": ref, "conversation_id": conversation,
                         "body": body, "client_msg_id": key}
                    )
                )  # fmt: skip
                self.stats["sent ws"] += 1
            else:
                asyncio.get_running_loop().create_task(self._post(key, conversation, body))
                self.stats["sent rest"] += 1

    async def _post(self, key: str, conversation: str, body: str) -> None:
        try:
            status, reply = await self.pool.request(
                "POST",
                f"/api/conversations/{conversation}/messages",
                {**self.headers, "Content-Type": "application/json"},
                json.dumps({"body": body, "client_msg_id": key}).encode(),
                timeout=30,
            )
        except (ConnectionError, TimeoutError):
            self.in_flight.pop(key, None)
            return
        if status == 201:
            self._confirmed(key, json.loads(reply)["message"])
        else:
            self.in_flight.pop(key, None)
            self.problems.append(f"send HTTP {status}: {reply[:200]!r}")
            self.unconfirmed.pop(key, None)

    async def live(self, until: float) -> None:
        """Chat and misbehave until `until` (time.monotonic)."""
        next_send = time.monotonic() + self.rng.expovariate(1 / self.settings.send_interval)
        next_chaos = time.monotonic() + self.rng.expovariate(1 / self.settings.chaos_interval)
        while True:
            now = time.monotonic()
            if now >= until:
                return
            if now >= next_send:
                self.new_message()
                next_send = now + self.rng.expovariate(1 / self.settings.send_interval)
            if now >= next_chaos and not self.reconnecting:
                how = self.rng.choice(("abort", "close", "keep"))
                if how == "abort" and self.rng.random() < 0.5:
                    # Drop the connection right after a send: its answer is most likely lost,
                    # so the send is retried with the same client_msg_id after the resume.
                    self.new_message()
                    self.push_sends()
                other = "lp" if self.transport == "ws" else "ws"
                transport = other if self.rng.random() < 0.5 else self.transport
                await self.reconnect(transport, how)
                next_chaos = time.monotonic() + self.rng.expovariate(
                    1 / self.settings.chaos_interval
                )
                continue
            self.push_sends()
            await asyncio.sleep(min(0.5, max(0.01, min(next_send, next_chaos, until) - now)))

    def leave(self) -> None:
        """Go away for good (a closed tab): nothing resumes this queue."""
        self._drop_current("close")

    def report(self) -> dict[str, Any]:
        return {
            "user_id": self.spec.user_id,
            "received": dict(self.received),
            "acked": list(self.acked.values()),
            "unconfirmed": len(self.unconfirmed),
            "problems": self.problems,
            "stats": dict(self.stats),
            "created": self.sent_count,
        }


class Soaker(CommandTarget):
    """One generator process of the soak."""

    def __init__(self, spec: tuple[Settings, list[SoakSpec]]) -> None:
        self.settings, specs = spec
        self.rng = random.Random(self.settings.seed)
        self.pool: HttpPool | None = None
        self.specs = specs
        self.clients: list[SoakClient] = []
        self.flusher: asyncio.Task[None] | None = None

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(ACK_FLUSH_SECS)
            for client in self.clients:
                client.flush()
                client.push_sends()

    async def cmd_connect(self) -> int:
        self.pool = HttpPool(HOST, self.settings.port, SEND_POOL)
        self.clients = [
            SoakClient(s, self.settings, self.pool, random.Random(self.rng.random()))
            for s in self.specs
        ]
        results = await gather_limited(
            [functools.partial(c.connect, False) for c in self.clients], 50
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} clients could not connect: {failed[0]!r}")
        self.flusher = asyncio.create_task(self._flush_forever())
        return len(self.clients)

    async def cmd_run(self, until: float) -> int:
        """Chat until `until` (time.monotonic); then deliver what is still unconfirmed."""
        await asyncio.gather(*(c.live(until) for c in self.clients))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(c.unconfirmed for c in self.clients):
            for client in self.clients:
                client.push_sends()
            await asyncio.sleep(0.5)
        return sum(len(c.unconfirmed) for c in self.clients)

    async def cmd_acked(self) -> list[tuple[str, int]]:
        """Every (conversation, seq) this process's clients got acknowledged."""
        return [m for c in self.clients for m in c.acked.values()]

    async def cmd_drain(
        self, expected: dict[str, dict[str, int]], wait: float
    ) -> list[dict[str, Any]]:
        """Wait (at most `wait` s) until each client holds as many distinct seqs per conversation
        as were acknowledged there; then every client's report."""
        deadline = time.monotonic() + wait

        def done(client: SoakClient) -> bool:
            want = expected.get(client.spec.user_id, {})
            return all(len(set(client.received.get(c, ()))) >= n for c, n in want.items())

        # A poll of many clients' state: simpler than an event per client and conversation.
        while time.monotonic() < deadline and not all(done(c) for c in self.clients):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        return [{**c.report(), "complete": done(c)} for c in self.clients]

    async def cmd_leave(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
        for client in self.clients:
            client.leave()
        await asyncio.sleep(2.5)  # let the closing handshakes finish
        if self.pool is not None:
            self.pool.close()


def make_soaker(spec: tuple[Settings, list[SoakSpec]]) -> Soaker:
    return Soaker(spec)


# -- the coordinator ---------------------------------------------------------------------------


async def create_conversations(
    http: Http, accounts: list[Account], group_size: int
) -> dict[str, list[str]]:
    """Two DMs per account (a ring with offsets 1 and 7) and groups of group_size;
    conversation id -> member user ids."""
    members: dict[str, list[str]] = {}
    n = len(accounts)
    pairs = {tuple(sorted((i, (i + k) % n))) for i in range(n) for k in (1, 7) if (i + k) % n != i}

    def dm(i: int, j: int) -> Callable[[], Any]:
        async def open_dm() -> None:
            reply = await http.call(
                "POST", "/api/conversations/dm", accounts[i].token, {"user_id": accounts[j].user_id}
            )
            members[reply["conversation"]["id"]] = [accounts[i].user_id, accounts[j].user_id]

        return open_dm

    results = await gather_limited([dm(i, j) for i, j in sorted(pairs)], 50)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"opening DMs failed: {failed[0]!r}")
    for start in range(0, n, group_size):
        chunk = accounts[start : start + group_size]
        if len(chunk) < 2:
            continue
        reply = await http.call(
            "POST",
            "/api/groups",
            chunk[0].token,
            {"name": f"soak {start // group_size}", "member_ids": [a.user_id for a in chunk[1:]]},
        )
        members[reply["conversation"]["id"]] = [a.user_id for a in chunk]
    return members


@dataclasses.dataclass
class Round:
    """What one round of chatting left: every client's report and the counts around them."""

    reports: list[dict[str, Any]]
    unconfirmed: int  # sends never acknowledged
    cpu: list[float]  # generator CPU per process, as fractions of a core
    peak: int  # server RSS at its highest, bytes


async def chat_round(
    server: Server,
    specs: list[SoakSpec],
    by_user: Mapping[str, Sequence[str]],
    args: argparse.Namespace,
    seed: int,
    duration: float,
    say: Callable[[str], None],
) -> Round:
    """Every client connects, chats (and misbehaves) for `duration`, waits until it holds every
    acknowledged message of its conversations, and leaves for good."""
    shares = [specs[w :: args.workers] for w in range(args.workers)]
    pool = GeneratorPool(
        make_soaker,
        [
            (Settings(server.port, seed * 1000 + w, args.send_interval, args.chaos_interval), share)
            for w, share in enumerate(shares)
        ],
    )
    try:
        await pool.call_all("connect", timeout=300)
        say(f"{len(specs)} clients connected; chatting for {duration:.0f} s")
        cpu_before = await pool.cpu()
        until = time.monotonic() + duration
        run_task = asyncio.ensure_future(pool.call_all("run", timeout=duration + 300, until=until))
        peak = server.rss_bytes()
        while not run_task.done():
            await asyncio.wait([run_task], timeout=5)
            peak = max(peak, server.rss_bytes())
        unconfirmed = sum(run_task.result())
        cpu_after = await pool.cpu()
        say(f"sending stopped ({unconfirmed} sends never acknowledged); draining")
        # Every client must end up with every acknowledged message of its conversations.
        parts = await pool.call_all("acked", timeout=120)
        per_conversation: Counter[str] = Counter(
            c for c, _ in {(c, q) for p in parts for c, q in p}
        )
        expected = {
            user: {c: per_conversation[c] for c in convs} for user, convs in by_user.items()
        }
        report_parts = await pool.call_all(
            "drain", timeout=DRAIN_TIMEOUT_SECS + 60, expected=expected, wait=DRAIN_TIMEOUT_SECS
        )
        peak = max(peak, server.rss_bytes())
        await pool.call_all("leave", timeout=60)
    finally:
        await pool.close()
    reports = [report for part in report_parts for report in part]
    cpu = summarize_cpu(cpu_before, cpu_after)
    return Round(reports, unconfirmed, cpu, peak)


async def run(args: argparse.Namespace) -> tuple[bool, list[tuple[str, str]]]:
    """The soak; (passed, table rows)."""
    raise_fd_limit()
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)

    async def let_queues_expire() -> Memory:
        """Wait out the queue grace; the server's memory once it is idle again."""
        say(f"clients left; waiting {args.leave_wait:.0f} s for their queues to expire")
        await asyncio.sleep(args.leave_wait)
        await idle(server)
        return await read_memory(server)

    rows: list[tuple[str, str]] = []
    rounds: list[Round] = []
    with database(args.mongo_uri) as uri:
        db_name = f"bench_soak_{uuid.uuid4().hex[:8]}"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        server_log = ROOT / "bench" / "results" / f"soak-{stamp}-server.log"
        with soak_server(args, uri, db_name, server_log) as server:
            accounts = await seed_accounts(uri, db_name, args.clients)
            http = Http(server.base_url, max_clients=50)
            try:
                members = await create_conversations(http, accounts, args.group_size)
            finally:
                http.close()
            say(f"{len(accounts)} accounts, {len(members)} conversations")
            by_user: dict[str, list[str]] = defaultdict(list)
            for conversation, users in members.items():
                for user in users:
                    by_user[user].append(conversation)
            specs = [SoakSpec(a.user_id, a.token, by_user[a.user_id]) for a in accounts]
            await idle(server)
            cold = start = await read_memory(server)
            if args.warmup > 0:
                say("warm-up round")
                rounds.append(
                    await chat_round(server, specs, by_user, args, args.seed + 1, args.warmup, say)
                )
                start = await let_queues_expire()
                say("measured round")
            rounds.append(
                await chat_round(server, specs, by_user, args, args.seed, args.duration, say)
            )
            end = await let_queues_expire()
            server_errors = server.logged_errors()

    main = rounds[-1]
    rss_peak = max(main.peak, end.rss)  # the leave itself can be the highest point
    verdict = Verdict()
    reports = [report for r in rounds for report in r.reports]
    for r in rounds:
        # Each round's clients are new: they start with new queues and see that round's
        # messages only, so each round is checked on its own.
        acked_in_round = {(c, q) for report in r.reports for c, q in report["acked"]}
        received = {x["user_id"]: x["received"] for x in r.reports}
        verdict.add(check_deliveries(members, acked_in_round, received))
    unconfirmed = sum(r.unconfirmed for r in rounds)
    late = sum(1 for report in reports if not report["complete"])
    problems = [p for r in reports for p in r["problems"]]
    stats: Counter[str] = Counter()
    for report in reports:
        stats.update(report["stats"])
    rss_ok = memory_returned(start.rss, rss_peak, end.rss, args.processes)
    blocks_ok = blocks_returned(start.blocks, end.blocks, args.processes)
    memory_ok = rss_ok and blocks_ok
    queue_problems = [p for p in problems if p.startswith(("queue lost", "event"))]
    other_problems = [p for p in problems if p not in queue_problems]
    passed = verdict.ok and not problems and not server_errors and memory_ok and unconfirmed == 0
    cpu = [round(x * 100) for x in main.cpu]
    mib = 2**20
    warm = f"{args.warmup:.0f} s warm-up + " if args.warmup > 0 else ""
    rows = [
        ("clients x duration", f"{args.clients} x ({warm}{args.duration:.0f} s)"),
        (
            "server processes",
            "1" if args.processes == 1 else f"{args.processes}, Redis, behind nginx (sums below)",
        ),
        ("conversations (DMs + groups)", f"{len(members)}"),
        ("messages acknowledged", f"{verdict.messages:,}"),
        ("deliveries checked (message x member)", f"{verdict.deliveries:,}"),
        ("events processed", f"{stats['events']:,}"),
        ("sends over WebSocket / REST", f"{stats['sent ws']:,} / {stats['sent rest']:,}"),
        ("sends retried after a lost answer", f"{stats['retries']:,}"),
        (
            "reconnects: reset / clean close / takeover",
            " / ".join(f"{stats[f'reconnect {how}']:,}" for how in ("abort", "close", "keep")),
        ),
        ("  of which switched transport", f"{stats['switch']:,}"),
        ("  recovered from unexpected drops", f"{stats['reconnect recover']:,}"),
        (
            "  taken back by a connection left open",
            f"{stats['taken back']:,}",
        ),
        ("lost messages", f"{len(verdict.losses)}"),
        ("duplicates", f"{len(verdict.duplicates)}"),
        ("out of order", f"{len(verdict.reorders)}"),
        ("event id gaps/repeats, lost queues", f"{len(queue_problems)}"),
        ("other problems", f"{len(other_problems)}"),
        ("errors in the server's log", f"{len(server_errors)}"),
        ("sends never acknowledged", f"{unconfirmed}"),
        ("clients still short when the drain ended", f"{late}"),
        ("generator CPU per process (measured round)", " / ".join(f"{c} %" for c in cpu)),
        ("server RSS before any client", f"{cold.rss / mib:.0f} MiB"),
        (
            "server RSS start / peak / end (measured round)",
            f"{start.rss / mib:.0f} / {rss_peak / mib:.0f} / {end.rss / mib:.0f} MiB",
        ),
        ("RSS back near start", "yes" if rss_ok else "NO"),
        (
            "Python blocks before any client / start / end",
            f"{cold.blocks:,} / {start.blocks:,} / {end.blocks:,}",
        ),
        ("live objects back near start", "yes" if blocks_ok else "NO"),
        ("verdict", "PASS" if passed else "FAIL"),
    ]
    for label, found in (
        ("lost", verdict.losses),
        ("duplicate", verdict.duplicates),
        ("out of order", verdict.reorders),
        ("problem", problems),
        ("server error", server_errors),
    ):
        for line in found[:10]:
            print(f"{label}: {line}")
    print(f"server log: {server_log}" + (" (-p1, -p2, ...)" if args.processes > 1 else ""))
    return passed, rows


@contextlib.contextmanager
def soak_server(args: argparse.Namespace, uri: str, db_name: str, log: Path) -> Iterator[Server]:
    """server.py with the soak's grace; with --processes N, N of them on one Redis behind the
    nginx sample (logs: log with -p1, -p2, ... before its suffix)."""
    options = ["--queue-grace", f"{args.queue_grace:g}"]
    if args.processes == 1:
        server = ServerProcess(uri, db_name, options, log=log)
        try:
            yield server
        finally:
            server.stop()
        return
    logs = iter(log.with_name(f"{log.stem}-p{n}{log.suffix}") for n in itertools.count(1))

    def start(redis_url: str) -> ChildServer:
        extra = [*options, "--redis-url", redis_url, "--trusted-proxy", "127.0.0.1"]
        return ServerProcess(uri, db_name, extra, log=next(logs))

    connections = 4 * args.clients + 1000  # two per connection, takeovers, REST sends
    with running_cluster(start, args.processes, connections=connections) as cluster:
        yield cluster


async def idle(server: Server) -> None:
    """Every process of the server uses under a tenth of a core."""
    for process in server.processes if isinstance(server, Cluster) else [server]:
        await wait_idle(process.pid)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Clients over both transports through disconnects, resumes and transport "
        "switches; then every acknowledged message is checked at every member.",
    )
    add = parser.add_argument
    add("--clients", type=int, default=500, help="M clients (default %(default)s)")
    add("--duration", type=float, default=300.0, help="seconds of chatting (default %(default)s)")
    add("--workers", type=int, default=2, help="generator processes (default %(default)s)")
    add("--group-size", type=int, default=25, help="members per group (default %(default)s)")
    add(
        "--send-interval",
        type=float,
        default=5.0,
        help="mean seconds between a client's messages (%(default)s)",
    )
    add(
        "--chaos-interval",
        type=float,
        default=20.0,
        help="mean seconds between a client's reconnects (%(default)s)",
    )
    add(
        "--warmup",
        type=float,
        default=60.0,
        help="seconds of a first round, checked like the measured one, after which the server's "
        "memory is taken as its start (0: none; default %(default)s)",
    )
    add(
        "--queue-grace",
        type=float,
        default=60.0,
        help="the server's --queue-grace, seconds (default %(default)s; clients resume within "
        "a few seconds, so any grace above the drain's reconnects is as good)",
    )
    add(
        "--leave-wait",
        type=float,
        default=None,
        help="seconds after the clients left before memory is read (default: the queue grace "
        "plus 20 s for the sweep and the presence grace)",
    )
    add("--seed", type=int, default=1, help="random seed (default %(default)s)")
    add(
        "--processes",
        type=int,
        default=1,
        help="server processes (default %(default)s); 2 or more share one Redis behind the "
        "nginx sample (deploy/nginx-processes.conf), round robin",
    )
    add("--mongo-uri", default=None, help="use this MongoDB instead of an embedded one")
    args = parser.parse_args(argv)
    if not 2 <= args.clients <= 10_000:
        parser.error("--clients must be between 2 and 10000")
    if not 1 <= args.workers <= 16 or args.workers > args.clients:
        parser.error("--workers must be between 1 and 16, at most --clients")
    if not 1 <= args.duration <= 24 * 3600:
        parser.error("--duration must be between 1 s and a day")
    if args.group_size < 2:
        parser.error("--group-size must be at least 2")
    if not 0 <= args.warmup <= 24 * 3600:
        parser.error("--warmup must be between 0 and a day")
    if not 10 <= args.queue_grace <= 24 * 3600:
        parser.error("--queue-grace must be between 10 s and a day")
    if not 1 <= args.processes <= 8:
        parser.error("--processes must be between 1 and 8")
    if args.leave_wait is None:
        args.leave_wait = args.queue_grace + 20
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    passed, rows = asyncio.run(run(args))
    print_table("Soak", rows)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
