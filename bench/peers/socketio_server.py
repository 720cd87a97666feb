"""What a user would otherwise pick: python-socketio on Tornado, with equivalent rooms.

    python -m bench.peers.socketio_server --port 9001

`socketio.AsyncServer(async_mode="tornado")` served by `socketio.get_tornado_handler` at
/socket.io/. A client connects the default namespace with the auth payload `{"id": "<id>"}`
and is put in the rooms "u<id>" (its own: the equivalent of the chat server routing by user)
and "all". Events: `dm` `{"to": "<id>", ...}` is emitted as `msg` to room "u<id>"; `all`
`{...}` is emitted as `msg` to room "all" (the broadcast). No auth, no storage.

With `--redis-url redis://HOST:PORT/DB` (compare's `socketio-redis`) several such processes
share their rooms through python-socketio's own AsyncRedisManager (Redis pub/sub), as its
documentation has it for more than one server; a load balancer in front must be sticky for its
long-polling transport, not for WebSocket-only clients like the benchmark's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import socketio
import tornado.web

from bench.peers import Health, peer_main


def make_server(redis_url: str | None = None) -> socketio.AsyncServer:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="tornado", cors_allowed_origins="*", client_manager=manager
    )

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, "all")
        client_id = auth.get("id") if isinstance(auth, dict) else None
        if client_id is not None:
            await sio.enter_room(sid, f"u{client_id}")

    @sio.on("dm")  # type: ignore[untyped-decorator]
    async def dm(sid: str, data: Any) -> None:
        if isinstance(data, dict) and "to" in data:
            await sio.emit("msg", data, to=f"u{data['to']}")

    @sio.on("all")  # type: ignore[untyped-decorator]
    async def to_all(sid: str, data: Any) -> None:
        await sio.emit("msg", data, to="all")

    return sio


def make_app(redis_url: str | None = None) -> tornado.web.Application:
    handler = socketio.get_tornado_handler(make_server(redis_url))
    return tornado.web.Application([(r"/socket.io/", handler), (r"/healthz", Health)])


def main(argv: Sequence[str] | None = None) -> None:
    peer_main("bench.peers.socketio_server", __doc__, make_app, argv)


if __name__ == "__main__":
    main()
