"""The ceiling of this stack: a bare Tornado relay, no auth, no storage, no queues.

    python -m bench.peers.bare_tornado --port 9000

WebSocket: clients connect to /ws?id=<client id> and get a `{"type":"welcome"}` frame once
registered. A text frame `{"to": "<id>", ...}` is relayed as it is to every socket of that id;
a frame without "to" is relayed to every connected socket (the broadcast).

Long-polling, the same relay over plain HTTP: `GET /poll?id=<client id>` answers
`["{\"type\":\"welcome\"}"]` the first time, then is held until something is relayed to that
id (or 25 s) and answers a JSON list of the frames, as text. `POST /send` with a frame as its
body relays it as a WebSocket frame would be. Frames that arrive while no poll is held wait for
the next one. Nothing else: what a chat server costs beyond this is the price of its
guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import tornado.web
import tornado.websocket

from bench.peers import Health, peer_main

PING_SECS = 25.0  # the same keep-alive pings as the chat server


POLL_HOLD_SECS = 25.0  # as the chat server's long-poll timeout


class Mailbox:
    """A long-polling client: the frames waiting for its next poll, and the poll held."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.waiter: asyncio.Future[None] | None = None

    def put(self, frame: str) -> None:
        self.frames.append(frame)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Hub:
    """Every open socket, by client id and all together; every long-polling client's mailbox."""

    def __init__(self) -> None:
        self.by_id: dict[str, set[RelaySocket]] = {}
        self.everyone: set[RelaySocket] = set()
        self.mailboxes: dict[str, Mailbox] = {}

    def relay(self, message: str) -> None:
        try:
            frame = json.loads(message)
        except ValueError:
            return
        to = frame.get("to") if isinstance(frame, dict) else None
        targets = self.everyone if to is None else self.by_id.get(str(to), set())
        for socket in list(targets):
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                socket.write_message(message)
        boxes = self.mailboxes.values() if to is None else [self.mailboxes.get(str(to))]
        for box in boxes:
            if box is not None:
                box.put(message)


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
        self.hub.relay(message if isinstance(message, str) else message.decode())

    def on_close(self) -> None:
        sockets = self.hub.by_id.get(self.client_id)
        if sockets is not None:
            sockets.discard(self)
            if not sockets:
                del self.hub.by_id[self.client_id]
        self.hub.everyone.discard(self)


class Poll(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.mailbox: Mailbox | None = None
        self.gone = False

    async def get(self) -> None:
        client_id = self.get_query_argument("id", "")
        mailbox = self.hub.mailboxes.get(client_id)
        if mailbox is None:
            self.hub.mailboxes[client_id] = Mailbox()
            self.finish(json.dumps(['{"type":"welcome"}']))
            return
        if not mailbox.frames:
            self.mailbox = mailbox
            mailbox.waiter = asyncio.get_running_loop().create_future()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(mailbox.waiter, POLL_HOLD_SECS)
            mailbox.waiter = None
            if self.gone:
                return
        frames, mailbox.frames = mailbox.frames, []
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(frames))

    def on_connection_close(self) -> None:
        self.gone = True
        if self.mailbox is not None and self.mailbox.waiter is not None:
            self.mailbox.waiter.cancel()


class Send(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def post(self) -> None:
        self.hub.relay(self.request.body.decode())
        self.finish("ok")


def make_app() -> tornado.web.Application:
    hub = Hub()
    routes: list[Any] = [
        (r"/ws", RelaySocket, {"hub": hub}),
        (r"/poll", Poll, {"hub": hub}),
        (r"/send", Send, {"hub": hub}),
        (r"/healthz", Health),
    ]
    return tornado.web.Application(routes, websocket_ping_interval=PING_SECS)


def main(argv: Sequence[str] | None = None) -> None:
    peer_main("bench.peers.bare_tornado", __doc__, make_app, argv)


if __name__ == "__main__":
    main()
