"""Peer servers the comparison runs beside this one, each in its own process on loopback."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence

import tornado.web

from bench.common import ChildServer
from bench.loadgen import raise_fd_limit
from chat.dbserver import free_port

LISTEN_BACKLOG = 4096  # the same accept queue as server.py's, so connect storms compare


class PeerProcess(ChildServer):
    """`python -m <module> --port N` in a child process, ready once /healthz answers."""

    def __init__(self, module: str, extra_args: Sequence[str] = ()) -> None:
        port = free_port()
        super().__init__([sys.executable, "-m", module, "--port", str(port), *extra_args], port)


class Health(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"status": "ok"})


async def serve(app: tornado.web.Application, port: int) -> None:
    """Serve app on 127.0.0.1:port until SIGINT or SIGTERM."""
    server = app.listen(port, address="127.0.0.1", backlog=LISTEN_BACKLOG)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
    await server.close_all_connections()


def peer_main(
    module: str,
    doc: str | None,
    make_app: Callable[..., tornado.web.Application],
    argv: Sequence[str] | None = None,
) -> None:
    """`python -m <module> --port N [--redis-url URL]`: serve the peer's app until told to stop
    (make_app(redis_url=URL) when given: a peer that shares through Redis)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default=None, help="several processes share this Redis")
    args = parser.parse_args(argv)
    raise_fd_limit()
    options = {"redis_url": args.redis_url} if args.redis_url else {}

    async def run() -> None:  # the app is made inside the loop it will run on
        await serve(make_app(**options), args.port)

    asyncio.run(run())
