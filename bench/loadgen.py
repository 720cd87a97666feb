"""The lean load generator shared by bench.compare and bench.soak.

Thousands of clients per process need clients that cost little per frame, or the generator,
not the server, sets the figures. So instead of a WebSocket library this module speaks the
protocols directly on asyncio transports: RFC 6455 frames (client side: masked text frames,
pong, close) and HTTP/1.1 keep-alive requests with Content-Length or chunked bodies. Each
client is one `asyncio.Protocol`; a frame costs a few microseconds to parse.

`GeneratorPool` runs the clients in several processes (multiprocessing, spawn) so that one
core is not the ceiling; each process answers commands from the coordinator and reports its
own CPU time, so that a saturated generator shows in the results.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

try:  # the C helper Tornado builds for itself; a pure-Python fallback otherwise
    from tornado.speedups import websocket_mask as _websocket_mask
except ImportError:  # pragma: no cover

    def _websocket_mask(mask: bytes, data: bytes) -> bytes:
        key = int.from_bytes(mask * (len(data) // 4 + 1), "big") >> (8 * (-len(data) % 4))
        return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


CONNECT_TIMEOUT_SECS = 30.0
REQUEST_TIMEOUT_SECS = 90.0
MAX_HEADER_BYTES = 64 * 1024


def raise_fd_limit(wanted: int = 1 << 20) -> int:
    """Raise this process's open-file limit towards `wanted`, up to the hard limit; the result.

    Children inherit it: raise it before starting servers and generator processes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted)) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- WebSocket ---------------------------------------------------------------------------------


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (clients must mask; RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = random.getrandbits(32).to_bytes(4, "big")
    return head + mask + _websocket_mask(mask, payload)


TextCallback = Callable[["WsClient", str, float], None]


class WsClient(asyncio.Protocol):
    """A minimal WebSocket client: text frames in and out, pings answered, close handled.

    `on_text(client, text, arrived)` runs for every text message, with the time
    (time.perf_counter) at which the bytes carrying it were read.
    """

    def __init__(
        self,
        on_text: TextCallback,
        on_close: Callable[[WsClient], None] | None = None,
    ) -> None:
        self.on_text = on_text
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_code: int | None = None
        self._handshaken = False
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._close_sent = False
        self._key = ""
        self.context: Any = None  # whatever the owner wants to hang on the connection

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str,
        on_text: TextCallback,
        on_close: Callable[[WsClient], None] | None = None,
        timeout: float = CONNECT_TIMEOUT_SECS,
    ) -> WsClient:
        """Open the TCP connection and complete the upgrade; ConnectionError if refused."""
        loop = asyncio.get_running_loop()
        client = cls(on_text, on_close)
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: client, host, port)
            client._key = base64.b64encode(os.urandom(16)).decode()
            assert client.transport is not None
            client.transport.write(
                (
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {client._key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            await client.opened
        return client

    # asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        buf = self._buffer
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    self._fail(ConnectionError("handshake response too long"))
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if b" 101 " not in status + b" ":
                self._fail(ConnectionError(f"upgrade refused: {status.decode(errors='replace')}"))
                return
            self._handshaken = True
            if not self.opened.done():
                self.opened.set_result(None)
        self._parse(arrived)

    def _parse(self, arrived: float) -> None:
        buf = self._buffer
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if b1 & 0x80:  # a server must not mask; tolerate it anyway
                head += 4
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            if b1 & 0x80:
                payload = _websocket_mask(bytes(buf[pos + head - 4 : pos + head]), payload)
            pos += head + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload, arrived)
            if self.closed:
                break
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes, arrived: float) -> None:
        if opcode == 0x0:  # continuation
            self._fragments.append(payload)
            if fin:
                text = b"".join(self._fragments)
                self._fragments = []
                self.on_text(self, text.decode(), arrived)
        elif opcode == 0x1:
            if fin:
                self.on_text(self, payload.decode(), arrived)
            else:
                self._fragments = [payload]
        elif opcode == 0x9:  # ping: answer with the same payload
            self._write(0xA, payload)
        elif opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self._close_sent:
                self._write(0x8, payload[:2])
                self._close_sent = True
            if self.transport is not None:
                self.transport.close()
            self._closed()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection closed during the upgrade"))
        if self.close_code is None:
            self.close_code = 1006
        self._closed()

    def _closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.on_close is not None:
            self.on_close(self)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _write(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(opcode, payload))

    # API --------------------------------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """Queue one text message; False when the connection is closed or closing."""
        if self.closed or self._close_sent or self.transport is None:
            return False
        if self.transport.is_closing():
            return False
        self.transport.write(_client_frame(0x1, text.encode()))
        return True

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake (the server answers and closes the TCP connection)."""
        if self.closed or self.transport is None:
            return
        if not self._close_sent:
            self._write(0x8, code.to_bytes(2, "big"))
            self._close_sent = True
        # Do not wait forever for the peer's close frame.
        asyncio.get_running_loop().call_later(2.0, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake (a network failure)."""
        if self.transport is not None:
            self.transport.abort()


# -- HTTP/1.1 ----------------------------------------------------------------------------------


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._response: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        self._length: int | None = None  # body length, -1 chunked, None: headers not yet read
        self._keep_alive = True
        self.arrived = 0.0  # perf_counter when the last response began to arrive

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = CONNECT_TIMEOUT_SECS) -> HttpConn:
        """A connected keep-alive connection."""
        loop = asyncio.get_running_loop()
        conn = cls(host, port)
        async with asyncio.timeout(timeout):
            await loop.create_connection(lambda: conn, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self._response
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionError("connection closed before the response"))

    def data_received(self, data: bytes) -> None:
        if not self._buffer and self._length is None:
            self.arrived = time.perf_counter()
        self._buffer += data
        self._try_complete()

    def _try_complete(self) -> None:
        buf = self._buffer
        if self._length is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            self._status = int(lines[0].split(" ", 2)[1])
            self._length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    self._length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self._length = -1
                elif name == "connection" and value.strip().lower() == "close":
                    self._keep_alive = False
        if self._length >= 0:
            if len(buf) < self._length:
                return
            body = bytes(buf[: self._length])
            del buf[: self._length]
        else:
            body_or_none = self._dechunk()
            if body_or_none is None:
                return
            body = body_or_none
        status = self._status
        self._length = None
        fut, self._response = self._response, None
        if not self._keep_alive and self.transport is not None:
            self.transport.close()
        if fut is not None and not fut.done():
            fut.set_result((status, body))

    def _dechunk(self) -> bytes | None:
        buf = self._buffer
        pos = 0
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            start = eol + 2
            if size == 0:
                end = buf.find(b"\r\n", start)  # no trailers expected: the final CRLF
                if end < 0:
                    return None
                del buf[: end + 2]
                return b"".join(parts)
            if len(buf) < start + size + 2:
                return None
            parts.append(bytes(buf[start : start + size]))
            pos = start + size + 2

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = REQUEST_TIMEOUT_SECS,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; ConnectionError if the connection drops first."""
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection closed")
        if self._response is not None:
            raise RuntimeError("one request at a time per connection")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._response = fut
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the connection at once (a pending request fails with ConnectionError)."""
        if self.transport is not None:
            self.transport.abort()


class HttpPool:
    """A few keep-alive connections shared by many callers (requests wait for a free one)."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self._idle: asyncio.LifoQueue[HttpConn | None] = asyncio.LifoQueue()
        for _ in range(size):
            self._idle.put_nowait(None)  # opened on first use
        self._all: list[HttpConn] = []

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        timeout: float = REQUEST_TIMEOUT_SECS,
    ) -> tuple[int, bytes]:
        """(status, body); the connection goes back to the pool unless it broke."""
        conn = await self._idle.get()
        try:
            if conn is None or conn.closed:
                conn = await HttpConn.open(self.host, self.port)
                self._all.append(conn)
            result = await conn.request(method, path, headers, body, timeout)
        except BaseException:
            if conn is not None:
                conn.abort()
            self._idle.put_nowait(None)
            raise
        self._idle.put_nowait(conn)
        return result

    def close(self) -> None:
        """Close every connection the pool opened."""
        for conn in self._all:
            conn.abort()
        self._all.clear()


# -- helpers -----------------------------------------------------------------------------------


async def gather_limited(
    factories: Sequence[Callable[[], Awaitable[Any]]], limit: int, *, return_exceptions: bool = True
) -> list[Any]:
    """Run the coroutines with at most `limit` in flight; results in order, with exceptions
    among them (or, with return_exceptions=False, raising the first)."""
    gate = asyncio.Semaphore(limit)

    async def run(factory: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await factory()

    runs = (run(f) for f in factories)
    return list(await asyncio.gather(*runs, return_exceptions=return_exceptions))


@dataclasses.dataclass
class ClosedLoop:
    """What one closed-loop sender did: the reply latency of each send that succeeded (seconds),
    the sends that failed, when its last reply came (time.perf_counter), and what stopped it
    before the end, if anything."""

    latencies: list[float]
    errors: int
    ended: float
    stopped_by: str | None = None


async def closed_loop(
    send: Callable[[], Awaitable[float | None]], until: float, min_interval: float = 0.0
) -> ClosedLoop:
    """Call `send` again as soon as the previous call returned, until `until` (perf_counter),
    starting calls at most every `min_interval` seconds. `send` returns its reply latency, or
    None for a refused send; a ConnectionError ends the loop (the rest would fail as well)."""
    latencies: list[float] = []
    errors = 0
    stopped_by = None
    while (started := time.perf_counter()) < until:
        try:
            latency = await send()
        except (ConnectionError, TimeoutError) as exc:
            errors += 1
            stopped_by = type(exc).__name__
            break
        if latency is None:
            errors += 1
        else:
            latencies.append(latency)
        wait = started + min_interval - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
    return ClosedLoop(latencies, errors, time.perf_counter(), stopped_by)


def summarize_cpu(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]]
) -> list[float]:
    """Each process's CPU use between two (cpu seconds, wall seconds) samples, as a fraction of
    one core."""
    return [
        (c1 - c0) / (w1 - w0) if w1 > w0 else 0.0
        for (c0, w0), (c1, w1) in zip(before, after, strict=True)
    ]


# -- generator processes -----------------------------------------------------------------------


class CommandTarget:
    """What runs inside a generator process: every `async def cmd_<name>(**kwargs)` is a
    command the coordinator can call; commands run concurrently, each as its own task."""

    async def cmd_cpu(self) -> tuple[float, float]:
        """(CPU seconds, wall clock) of this process, for utilisation over an interval."""
        return cpu_seconds(), time.monotonic()

    async def cmd_ping(self) -> bool:
        return True


def _process_main(
    conn: multiprocessing.connection.Connection,
    factory: Callable[[Any], CommandTarget],
    spec: Any,
) -> None:
    raise_fd_limit()
    asyncio.run(_serve(conn, factory, spec))


async def _serve(
    conn: multiprocessing.connection.Connection,
    factory: Callable[[Any], CommandTarget],
    spec: Any,
) -> None:
    loop = asyncio.get_running_loop()
    target = factory(spec)
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def reader() -> None:  # a thread: Connection.recv blocks
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = None
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message is None or message[1] == "exit":
                return

    threading.Thread(target=reader, daemon=True).start()
    send_lock = threading.Lock()
    tasks: set[asyncio.Task[None]] = set()

    def reply(call_id: int, ok: bool, value: Any) -> None:
        with send_lock:
            conn.send((call_id, ok, value))

    async def run(call_id: int, name: str, kwargs: dict[str, Any]) -> None:
        try:
            value = await getattr(target, f"cmd_{name}")(**kwargs)
        except Exception:
            reply(call_id, False, traceback.format_exc())
        else:
            reply(call_id, True, value)

    while True:
        message = await inbox.get()
        if message is None:
            break
        call_id, name, kwargs = message
        if name == "exit":
            reply(call_id, True, None)
            break
        task = asyncio.create_task(run(call_id, name, kwargs))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class GeneratorError(RuntimeError):
    """A command failed inside a generator process (its traceback is the message)."""


class GeneratorPool:
    """Generator processes, one per spec, each running factory(spec) as a CommandTarget."""

    def __init__(self, factory: Callable[[Any], CommandTarget], specs: Sequence[Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for spec in specs:
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_process_main, args=(child, factory, spec), daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self.processes.append(process)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._loop = asyncio.get_running_loop()
        self._readers = [
            threading.Thread(target=self._read, args=(c,), daemon=True) for c in self._conns
        ]
        for thread in self._readers:
            thread.start()

    def __len__(self) -> int:
        return len(self._conns)

    @property
    def pids(self) -> list[int]:
        return [p.pid or 0 for p in self.processes]

    def _read(self, conn: multiprocessing.connection.Connection) -> None:
        while True:
            try:
                call_id, ok, value = conn.recv()
            except (EOFError, OSError):
                return
            self._loop.call_soon_threadsafe(self._settle, call_id, ok, value)

    def _settle(self, call_id: int, ok: bool, value: Any) -> None:
        fut = self._pending.pop(call_id, None)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(GeneratorError(value))

    async def call(self, index: int, name: str, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run one command in process `index`; its result."""
        call_id = next(self._ids)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[call_id] = fut
        self._conns[index].send((call_id, name, kwargs))
        async with asyncio.timeout(timeout):
            return await fut

    async def call_all(
        self,
        name: str,
        timeout: float | None = None,
        per_process: Sequence[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Run the command in every process at once (per_process[i] adds arguments of its own)."""
        return list(
            await asyncio.gather(
                *(
                    self.call(i, name, timeout, **kwargs, **(per_process[i] if per_process else {}))
                    for i in range(len(self))
                )
            )
        )

    async def cpu(self) -> list[tuple[float, float]]:
        """(CPU seconds, wall clock) of each process."""
        return [(float(c), float(w)) for c, w in await self.call_all("cpu", timeout=30)]

    async def close(self) -> None:
        """Ask every process to exit, then make sure it did."""
        for index in range(len(self)):
            with contextlib.suppress(Exception):
                await self.call(index, "exit", timeout=10)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()
