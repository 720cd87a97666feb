"""The ceiling of this stack: a bare Tornado WebSocket relay, no auth, no storage, no queues.

    python -m bench.peers.bare_tornado --port 9000

Clients connect to /ws?id=<client id> and get a `{"type":"welcome"}` frame once registered.
A text frame `{"to": "<id>", ...}` is relayed as it is to every socket of that id; a frame
without "to" is relayed to every connected socket (the broadcast). Nothing else: what a
chat server costs beyond this is the price of its guarantees.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import tornado.web
import tornado.websocket

from bench.peers import Health, peer_main

PING_SECS = 25.0  # the same keep-alive pings as the chat server


class Hub:
    """Every open socket, by client id and all together."""

    def __init__(self) -> None:
        self.by_id: dict[str, set[RelaySocket]] = {}
        self.everyone: set[RelaySocket] = set()


class RelaySocket(tornado.websocket.WebSocketHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.client_id = ""

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)  # as the chat server: small frames must not wait for Nagle
        self.client_id = self.get_query_argument("id", "")
        self.hub.by_id.setdefault(self.client_id, set()).add(self)
        self.hub.everyone.add(self)
        self.write_message('{"type":"welcome"}')

    def on_message(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
        except ValueError:
            return
        to = frame.get("to") if isinstance(frame, dict) else None
        targets = self.hub.everyone if to is None else self.hub.by_id.get(str(to), set())
        for socket in list(targets):
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                socket.write_message(message)

    def on_close(self) -> None:
        sockets = self.hub.by_id.get(self.client_id)
        if sockets is not None:
            sockets.discard(self)
            if not sockets:
                del self.hub.by_id[self.client_id]
        self.hub.everyone.discard(self)


def make_app() -> tornado.web.Application:
    hub = Hub()
    routes: list[Any] = [(r"/ws", RelaySocket, {"hub": hub}), (r"/healthz", Health)]
    return tornado.web.Application(routes, websocket_ping_interval=PING_SECS)


def main(argv: Sequence[str] | None = None) -> None:
    peer_main("bench.peers.bare_tornado", __doc__, make_app, argv)


if __name__ == "__main__":
    main()
