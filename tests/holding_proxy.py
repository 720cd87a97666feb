"""A TCP proxy in front of the database that can hold one write: the bytes of the next
message insert are kept back for a while, then delivered, even after the client gave up and
closed its connection (as a congested network or a paused database would)."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class HoldingProxy:
    """Forwards loopback connections to the database; `hold_next(marker, secs)` keeps back the
    next client-to-database chunk containing every marker for secs seconds."""

    def __init__(self, database_uri: str) -> None:
        parts = urlsplit(database_uri)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 27017)
        self._parts = parts
        self._server: asyncio.Server | None = None
        self._hold: tuple[tuple[bytes, ...], float] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.held = asyncio.Event()  # set once a held chunk has been delivered
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def uri(self, db_path: str = "/") -> str:
        """The database URI, through the proxy."""
        netloc = self._parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(
            self._parts._replace(
                netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host, path=db_path
            )
        )

    def hold_next(self, markers: tuple[bytes, ...], secs: float) -> None:
        self.held.clear()
        self._hold = (markers, secs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            db_r, db_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        self._spawn(self._pump(db_r, client_w, upstream=False))
        self._spawn(self._pump(client_r, db_w, upstream=True))

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                hold = self._hold
                if upstream and hold is not None and all(m in chunk for m in hold[0]):
                    self._hold = None
                    await asyncio.sleep(hold[1])  # the client times out and closes meanwhile
                    writer.write(chunk)
                    await writer.drain()
                    # Let the database answer into the void before this side closes.
                    await asyncio.sleep(0.5)
                    self.held.set()
                    continue
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
