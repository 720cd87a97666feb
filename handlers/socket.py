"""WebSocket transport: auth, hello, pushed events, acks, and command frames answered by reply."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import tornado.websocket

from chat.commands import Principal, retrieve_exception
from chat.errors import BadRequest, ChatError, RateLimited, Unauthorized
from chat.events import EventQueue
from chat.service import ChatService
from chat.validation import decode_json
from handlers.base import json_dumps

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # the contract's frame limit; Tornado closes with 1009 beyond it
CLOSE_UNAUTHORIZED = 4401  # no, bad or revoked token; auth timeout; session ended
CLOSE_REPLACED = 4409  # another connection (or long-polling) took this queue over
CLOSE_QUEUE_LOST = 4410  # the queue was dropped (overflow): reconnect, hello says resumed false
CLOSE_POLICY = 1008  # kept flooding after being told to slow down
CLOSE_TRY_AGAIN = 1013  # the database could not be reached while signing the socket in
CLOSE_INTERNAL = 1011  # an unexpected failure in the writer
CLOSE_GOING_AWAY = 1001  # the server is shutting down: reconnect and resume
CLOSE_SLOW_CONSUMER = 4413  # more than max_socket_buffer_bytes sent and not taken by the client
CLOSE_TOO_MANY = 4429  # the user already holds max_sockets_per_user sockets (or queues)
# After a logout elsewhere, the socket's writer normally delivers session.ended and closes at
# once; one whose writes are stuck behind a client that stopped reading is closed this late.
SESSION_END_GRACE_SECS = 1.0
CLOSE_INVALID_DATA = 1007  # a text frame that is not UTF-8 (RFC 6455 section 8.1)
PUBLIC_FRAMES = frozenset({"auth", "auth.register", "auth.login"})
FRAMES_PER_SEC = 20.0  # sustained command rate of one socket: far above a person's typing
FRAME_BURST = 60.0  # what a client may send at once (a resume, a reconnect storm)
# Acks have their own, larger allowance: a client acknowledging every event of a burst must
# not lose its command budget. Acks are cumulative, so one over the limit is simply ignored.
ACKS_PER_SEC = 100.0
ACK_BURST = 200.0
MAX_REJECTED_FRAMES = 100  # past this many rate-limited frames in a row, close
# Commands received and not yet run (they run one at a time): past this, a command is refused
# with rate_limited at once. Only a client that floods a server stalled on its database
# gets there: the rate limit allows 20 a second.
MAX_PENDING_FRAMES = 64
INTERNAL_ERROR = {"code": "internal_error", "message": "Something went wrong on the server."}


class TokenBucket:
    """Allows `rate` operations a second with bursts of `burst`."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> float:
        """0 if allowed now; otherwise the seconds until one more is allowed."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class ChatProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that a text frame that is not UTF-8 fails the connection
    with 1007, as RFC 6455 asks, where Tornado drops the TCP connection without a close."""

    failed = False  # an invalid frame was seen: nothing after it is processed

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        if self.failed and opcode in (0x1, 0x2):
            return None  # the close handshake is under way
        # Our server negotiates no compression, so the payload is the text itself.
        if opcode == 0x1 and not self._frame_compressed:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.failed = True
                self.close(CLOSE_INVALID_DATA, "text frame is not valid UTF-8")
                return None
        return super()._handle_message(opcode, data)


class ChatSocket(tornado.websocket.WebSocketHandler):
    """One client connection; the queue, not the socket, owns the events."""

    def initialize(self, service: ChatService) -> None:
        self.service = service
        self.sockets: set[ChatSocket] = self.application.settings["chat_sockets"]
        self.principal: Principal | None = None
        self.queue: EventQueue | None = None
        self.consumer: int | None = None
        self.writer: asyncio.Task[None] | None = None
        self.auth_timer: asyncio.TimerHandle | None = None
        self.bucket = TokenBucket(FRAMES_PER_SEC, FRAME_BURST)
        self.ack_bucket = TokenBucket(ACKS_PER_SEC, ACK_BURST)
        self.rejected = 0
        # Commands waiting to run, and the task running them (both only while there are any).
        self.pending: collections.deque[tuple[dict[str, Any], Any]] | None = None
        self.runner: asyncio.Task[None] | None = None
        self.unsent_bytes = 0  # written and not yet taken by the client
        self.slot_user: str | None = None  # whose socket slot this socket holds
        self.session_timer: asyncio.TimerHandle | None = None  # expiry, or an ended session

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return ChatProtocol(self, False, protocol.params)
        return protocol

    def check_origin(self, origin: str) -> bool:
        # Tornado (>= 6.6) accepts same-origin requests before asking: this decides the rest.
        return origin in self.service.settings.allowed_origins

    async def open(self, *args: str, **kwargs: str) -> None:
        # Small frames must not wait for the peer's delayed ACK (Nagle): an event followed by
        # a reply otherwise costs ~40 ms.
        self.set_nodelay(True)
        self.sockets.add(self)
        token = self.get_query_argument("token", None)
        if token:
            frame = {
                "token": token,
                "queue_id": self.get_query_argument("queue_id", None),
                "epoch": self.get_query_argument("epoch", None),
                "last_event_id": self.get_query_argument("last_event_id", "0"),
            }
            await self._authenticate(frame)
        else:
            loop = asyncio.get_running_loop()
            self.auth_timer = loop.call_later(
                self.service.settings.auth_timeout_secs, self._auth_timed_out
            )

    def _auth_timed_out(self) -> None:
        if self.principal is None:
            self.close(CLOSE_UNAUTHORIZED, "authentication timed out")

    def on_message(self, message: str | bytes) -> None:
        """Handle an ack (or a malformed frame) at once; queue any other frame for the runner,
        which runs them one at a time, in order. Not awaited by Tornado, so it goes on reading
        while a command waits for the database: acks and pongs are never held up behind it (a
        command slower than the heartbeat would otherwise get a live socket closed)."""
        ref: Any = None
        try:
            try:
                frame = self._parse(message)
            except BadRequest:
                self._throttle()  # a flood of garbage is a flood too
                raise
            ref = frame.get("ref")
            if frame.get("type") == "ack":
                if self._allow_ack():
                    self._ack(frame)  # no reply: acks are frequent and need no answer
                return
            self._throttle()  # on arrival: a refused frame is answered at once
            if self.pending is None:
                self.pending = collections.deque()
            elif len(self.pending) >= MAX_PENDING_FRAMES:
                self._rejected_one()
                raise RateLimited("Too many commands waiting; slow down.", retry_after_secs=1.0)
        except ChatError as exc:
            self._send({"type": "reply", "ref": ref, "ok": False, **exc.to_dict()})
            return
        except Exception:
            log.exception("frame failed")
            self._send({"type": "reply", "ref": ref, "ok": False, "error": INTERNAL_ERROR})
            return
        self.pending.append((frame, ref))
        if self.runner is None:
            self.runner = asyncio.get_running_loop().create_task(self._run_pending())

    async def _run_pending(self) -> None:
        """Run the queued frames in order until none is left (or the socket is gone: its
        client gets no reply for the rest, and retries them as it would after any drop). A
        command already started is never cancelled: a send is stored and then published."""
        try:
            while self.pending and not self._gone():
                frame, ref = self.pending.popleft()
                await self._run_frame(frame, ref)
        finally:
            self.pending = None
            self.runner = None

    async def _run_frame(self, frame: dict[str, Any], ref: Any) -> None:
        """Run one command frame (or auth) and send its reply."""
        kind = frame.get("type")
        try:
            if not isinstance(kind, str):
                raise BadRequest("Every frame needs a string 'type'.")
            if kind == "auth":
                await self._authenticate(frame)
                return
            if self.principal is None and kind not in PUBLIC_FRAMES:
                raise Unauthorized("Authenticate first: send an 'auth' frame.")
            if self.principal is not None:
                # Every command first: the session may have been revoked or have expired
                # since the socket authenticated.
                await self.service.check_session(self.principal)
            data = await self.service.run(
                kind, self.principal, frame, address=self.request.remote_ip
            )
        except ChatError as exc:
            self._send({"type": "reply", "ref": ref, "ok": False, **exc.to_dict()})
            if isinstance(exc, Unauthorized) and self.principal is not None:
                self._end_session("session ended")  # after the reply, which says why
            return
        except Exception:
            log.exception("command frame failed")
            self._send({"type": "reply", "ref": ref, "ok": False, "error": INTERNAL_ERROR})
            return
        self._send({"type": "reply", "ref": ref, "ok": True, "data": data})
        if kind in ("auth.login", "auth.register") and self.principal is None:
            # Signing in over the socket also signs the socket in.
            await self._authenticate({"token": data["token"]})
        elif kind == "auth.logout" and (self.writer is None or self.writer.done()):
            # Normally the writer delivers session.ended and then closes; without
            # a running writer nobody else would.
            self.close(CLOSE_UNAUTHORIZED, "session ended")

    def _end_session(self, reason: str) -> None:
        # Also when the client stopped reading: Tornado drops a connection that has not
        # answered the close within 5 s, whatever is still buffered for it.
        if not self._gone():
            self.close(CLOSE_UNAUTHORIZED, reason)

    def session_over(self) -> None:
        """The session ended (a logout): close unless the writer does it first."""
        if self.session_timer is not None:
            self.session_timer.cancel()
        self.session_timer = asyncio.get_running_loop().call_later(
            SESSION_END_GRACE_SECS, self._end_session, "session ended"
        )

    def _parse(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, bytes):
            raise BadRequest("Frames must be text (JSON).")
        frame = decode_json(message, "frame")
        if not isinstance(frame, dict):
            raise BadRequest("A frame must be a JSON object.")
        return frame

    def _throttle(self) -> None:
        wait = self.bucket.take()
        if not wait:
            self.rejected = 0
            return
        self._rejected_one()
        raise RateLimited("Too many frames; slow down.", retry_after_secs=wait)

    def _allow_ack(self) -> bool:
        if not self.ack_bucket.take():
            self.rejected = 0
            return True
        self._rejected_one()  # dropped without a reply: the next ack covers it
        return False

    def _rejected_one(self) -> None:
        self.rejected += 1
        if self.rejected > MAX_REJECTED_FRAMES:
            self.close(CLOSE_POLICY, "too many frames")

    def _ack(self, frame: dict[str, Any]) -> None:
        last = frame.get("last_event_id")
        if self.principal is None or self.queue is None:
            raise Unauthorized("Authenticate first: send an 'auth' frame.")
        if isinstance(last, bool) or not isinstance(last, int):
            raise BadRequest("ack needs an integer last_event_id.")
        # Also valid after a takeover: the client did receive what it acknowledges.
        self.queue.ack(last)

    def _gone(self) -> bool:
        # The peer may leave while we await the database: attaching a queue to a
        # socket whose on_close already ran would keep it attached (and its user
        # online) forever.
        return self.ws_connection is None or self.ws_connection.is_closing()

    async def _authenticate(self, frame: dict[str, Any]) -> None:
        """Verify the token, attach (or resume) the queue, send hello and start pushing."""
        if self.principal is not None:
            raise BadRequest("This socket is already authenticated.")
        token = frame.get("token")
        try:
            principal = await self.service.authenticate(token if isinstance(token, str) else None)
        except Unauthorized:
            self.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        except ChatError as exc:
            # Not the client's fault (database down): it must not drop its token.
            self.close(CLOSE_TRY_AGAIN, exc.code)
            return
        if self._gone():
            return
        if self.auth_timer is not None:
            self.auth_timer.cancel()
            self.auth_timer = None
        if not self.service.socket_slots.acquire(principal.user_id):
            self.close(CLOSE_TOO_MANY, "too many connections for this user")
            return
        self.slot_user = principal.user_id
        self.principal = principal
        try:
            queue, resumed, cursor = self.service.open_queue(
                principal, frame.get("queue_id"), frame.get("epoch"), frame.get("last_event_id")
            )
        except RateLimited:
            self.close(CLOSE_TOO_MANY, "too many event queues for this user")
            return
        if principal.expires_at is not None:
            left = (principal.expires_at - datetime.now(UTC)).total_seconds()
            self.session_timer = asyncio.get_running_loop().call_later(
                max(0.0, left), self._end_session, "session expired"
            )
        registry = self.service.registry
        consumer = registry.attach(queue)
        # Set before awaiting: on_close (which may run during the await) detaches them.
        self.queue, self.consumer = queue, consumer
        try:
            hello = await self.service.hello(principal, queue, resumed, cursor)
        except ChatError as exc:
            registry.detach(queue, consumer)
            self.queue = self.consumer = None
            unauthorized = isinstance(exc, Unauthorized)
            self.close(CLOSE_UNAUTHORIZED if unauthorized else CLOSE_TRY_AGAIN, exc.code)
            return
        if self._gone():
            return  # on_close already detached it
        if not queue.is_current(consumer):
            # Taken over while hello was being built: this socket has nothing to push.
            self.close(CLOSE_REPLACED, "queue taken over by another connection")
            return
        self._send(hello)
        self.writer = asyncio.create_task(self._push_events(queue, consumer, cursor))

    async def _push_events(self, queue: EventQueue, consumer: int, cursor: int) -> None:
        """Send every event after cursor in order; the client's acks, not sends, prune."""
        try:
            while True:
                # prune=False: the cursor is what was sent, not what the client got.
                # token: once taken over, this wait returns [] instead of stealing
                # the successor's wait. No timeout: a takeover, a detach and closing the
                # queue all end the wait, and WebSocket pings keep the connection alive; a
                # timer per wait cost each of thousands of idle writers a timer handle and
                # a timeout context per event (the profile of a fan-out to 5,000 sockets).
                items = await queue.wait_after(cursor, None, prune=False, token=consumer)
                for item in items:
                    if not queue.is_current(consumer):
                        break  # taken over mid-batch: the successor sends the rest
                    await self._write(json_dumps({"type": "event", **item}))
                    cursor = item["id"]
                    if item["event"].get("type") == "session.ended":
                        self.close(CLOSE_UNAUTHORIZED, "session ended")
                        return
                if not queue.is_current(consumer):
                    self.close(CLOSE_REPLACED, "queue taken over by another connection")
                    return
                if queue.closed and not queue.events_after(cursor, prune=False):
                    self.close(CLOSE_QUEUE_LOST, "queue dropped; reconnect to get a new one")
                    return
        except tornado.websocket.WebSocketClosedError:
            pass
        except Exception:
            log.exception("event writer failed")
            self.close(CLOSE_INTERNAL, "internal error")

    def _send(self, frame: dict[str, Any]) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            # Not awaited: a reply is fire-and-forget. If the connection drops before the
            # write completes, its future fails with WebSocketClosedError; retrieve that so
            # asyncio does not log "Task exception was never retrieved".
            self._write(json_dumps(frame)).add_done_callback(retrieve_exception)

    def _write(self, text: str) -> asyncio.Future[None]:
        """Write one text frame, counting its bytes until the client has taken them. A client
        that left more than max_socket_buffer_bytes of earlier frames untaken is closed as a
        slow consumer (replies are not awaited: without this they would pile up without
        bound), so at most the cap and one frame are ever buffered."""
        if self.unsent_bytes > self.service.settings.max_socket_buffer_bytes:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: too much unread data")
            raise tornado.websocket.WebSocketClosedError()
        data = text.encode()
        size = len(data)
        future = self.write_message(data)  # bytes of a str: still a text frame
        self.unsent_bytes += size
        future.add_done_callback(lambda _: self._taken(size))
        return future

    def _taken(self, size: int) -> None:
        self.unsent_bytes -= size

    def on_close(self) -> None:
        self.sockets.discard(self)
        self.pending = None  # commands not started yet: their replies could not be sent anyway
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        if self.session_timer is not None:
            self.session_timer.cancel()
            self.session_timer = None
        if self.slot_user is not None:
            self.service.socket_slots.release(self.slot_user)
            self.slot_user = None
        if self.writer is not None:
            self.writer.cancel()
            # Drop our reference: the cancelled task holds its CancelledError, whose traceback
            # holds the writer's frame and so this handler. Without this the handler, its
            # connection and stream form a cycle that only a full garbage collection (rare by
            # design, see server.py) would free; with it, they are freed once the task ends.
            self.writer = None
        if self.queue is not None and self.consumer is not None:
            # A no-op if another transport took the queue over: it stays attached.
            self.service.registry.detach(self.queue, self.consumer)
            self.consumer = None


def end_session_sockets(sockets: set[ChatSocket], session_id: str) -> None:
    """A session listener: every open socket of the ended session is closed (see
    ChatSocket.session_over)."""
    for socket in sockets:
        if socket.principal is not None and socket.principal.session_id == session_id:
            socket.session_over()


def close_sockets(sockets: set[ChatSocket]) -> int:
    """Close every open socket with 1001 (shutting down); how many there were. Their queues
    end with the process: clients reconnect, and a restarted server answers resumed: false."""
    open_now = list(sockets)
    for socket in open_now:
        socket.close(CLOSE_GOING_AWAY, "server shutting down")
    return len(open_now)
