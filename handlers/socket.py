"""WebSocket transport: auth, hello, pushed events, acks, and command frames answered by reply."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, cast

import tornado.httputil
import tornado.iostream
import tornado.websocket

from chat.commands import Principal, retrieve_exception
from chat.errors import BadRequest, ChatError, RateLimited, Unauthorized
from chat.events import Event, EventQueue
from chat.logs import USER_ID
from chat.metrics import WEBSOCKET
from chat.moderation import SUSPENDED
from chat.service import ChatService
from chat.validation import decode_json
from handlers.base import EventEncoder, json_dumps

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # the contract's frame limit; Tornado closes with 1009 beyond it
CLOSE_UNAUTHORIZED = 4401  # no, bad or revoked token; auth timeout; session ended
CLOSE_SUSPENDED = 4403  # the session ended because the account was suspended
CLOSE_REPLACED = 4409  # another connection (or long-polling) took this queue over
CLOSE_QUEUE_LOST = 4410  # the queue was dropped (overflow): reconnect, hello says resumed false
CLOSE_POLICY = 1008  # kept flooding after being told to slow down
CLOSE_TRY_AGAIN = 1013  # the database (or the queues' Redis) could not be reached at sign-in
CLOSE_INTERNAL = 1011  # an unexpected failure writing events
CLOSE_GOING_AWAY = 1001  # the server is shutting down: reconnect and resume
CLOSE_SLOW_CONSUMER = 4413  # more than max_socket_buffer_bytes sent and not taken by the client
CLOSE_TOO_MANY = 4429  # the user already holds max_sockets_per_user sockets (or queues)
# After a logout elsewhere, the socket normally writes session.ended and closes at once; one
# whose writes are stuck behind a client that stopped reading is closed this late.
SESSION_END_GRACE_SECS = 1.0
CLOSE_INVALID_DATA = 1007  # a text frame that is not UTF-8 (RFC 6455 section 8.1)
PUBLIC_FRAMES = frozenset({"auth", "auth.register", "auth.login"})
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
# Events are written to a socket while less than this is waiting in its stream; past it the
# rest wait in the queue (where they are kept until acknowledged anyway) until the stream has
# drained, so a client reading a long backlog slowly is never taken for a slow consumer.
EVENT_WRITE_AHEAD_BYTES = 64 * 1024
# The heartbeat pings each socket once per heartbeat_secs, a fiftieth of them at a time
# (every 0.5 s by default), so that thousands of pings are not written in one stall of the
# event loop: with a fifth at a time, 1,000 of 5,000 sockets took about 15 ms every 5 s, which
# every message sent meanwhile waited for.
HEARTBEAT_SLICES = 50


# What a socket's request and response headers are replaced with once upgraded (see
# ChatSocket._forget_upgrade): empty, and never written to (Tornado refuses to set headers on
# an upgraded handler).
NO_HEADERS = tornado.httputil.HTTPHeaders()


# -- Tornado internals ---------------------------------------------------------------------
# The two functions below are the only uses of Tornado's private API (checked against
# Tornado 6.6.1; tests/test_socket_frames.py covers both). WebSocketHandler.write_message wraps
# every frame in a task (asyncio.ensure_future of a coroutine that only translates the error
# type): one task per frame, 5,000 per fan-out. Writing the frame through the protocol's
# frame writer costs only the stream's own future.


def write_text_frame(
    protocol: tornado.websocket.WebSocketProtocol13, data: bytes
) -> asyncio.Future[None]:
    """Write one unfragmented, uncompressed text frame (the server negotiates no compression);
    the stream's future. Raises WebSocketClosedError if the stream is closed."""
    try:
        future: asyncio.Future[None] = protocol._write_frame(True, 0x1, data)
        return future
    except tornado.iostream.StreamClosedError:
        raise tornado.websocket.WebSocketClosedError() from None


def unsent_bytes(stream: tornado.iostream.IOStream) -> int:
    """Bytes written to the stream and not yet taken by the kernel (still right after the
    stream closed: Tornado keeps both counters)."""
    return stream._total_write_index - stream._total_write_done_index


# ------------------------------------------------------------------------------------------


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

    # Thousands of sockets are open at once. What this class keeps of each is in slots, not in
    # the instance's __dict__: Python keeps a class's instance dicts compact only while they
    # share at most 30 attribute names, and Tornado's handler sets 20 of them; past that each
    # socket's dict was a 1.6 KiB table of its own.
    __slots__ = (
        "ack_bucket",
        "auth_timer",
        "bucket",
        "consumer",
        "cursor",
        "heartbeat_slice",
        "paused",
        "pending",
        "pong_due",
        "principal",
        "queue",
        "rejected",
        "runner",
        "service",
        "session_timer",
        "slot_user",
        "stream",
        "user_agent",
    )

    def initialize(self, service: ChatService) -> None:
        self.service = service
        self.principal: Principal | None = None
        # Until signed in: what a session started over this socket records (the sessions list).
        self.user_agent: str | None = None
        self.queue: EventQueue | None = None
        self.consumer: int | None = None  # the queue's token for this socket
        # The queue feeds this socket (it is the queue's EventSink): the id of the last event
        # written, and whether later ones wait in the queue (for the stream to drain, or for
        # ever once session.ended is written).
        self.cursor = 0
        self.paused = False
        self.auth_timer: asyncio.TimerHandle | None = None
        # Made at the first command and at the first ack.
        self.bucket: TokenBucket | None = None
        self.ack_bucket: TokenBucket | None = None
        self.rejected = 0  # rate-limited frames in a row
        # Commands waiting to run, and the task running them (both only while there are any).
        self.pending: collections.deque[tuple[dict[str, Any], Any]] | None = None
        self.runner: asyncio.Task[None] | None = None
        self.stream: tornado.iostream.IOStream | None = None  # set once upgraded
        self.slot_user: str | None = None  # whose socket slot this socket holds
        self.session_timer: asyncio.TimerHandle | None = None  # expiry, or an ended session
        self.heartbeat_slice = 0  # which of the heartbeat's slices pings this socket
        self.pong_due = False  # pinged, and no pong since

    # The application's, read when used: not three more entries in each socket's __dict__,
    # whose growth past its size costs more than the entries (see _detach_stream).
    @property
    def sockets(self) -> set[ChatSocket]:
        sockets: set[ChatSocket] = self.application.settings["chat_sockets"]
        return sockets

    @property
    def heartbeat(self) -> Heartbeat:
        heartbeat: Heartbeat = self.application.settings["chat_heartbeat"]
        return heartbeat

    @property
    def encoder(self) -> EventEncoder:
        encoder: EventEncoder = self.application.settings["event_encoder"]
        return encoder

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return ChatProtocol(self, False, protocol.params)
        return protocol

    def check_origin(self, origin: str) -> bool:
        # Tornado (>= 6.6) accepts same-origin requests before asking: this decides the rest.
        return origin in self.service.settings.allowed_origins

    def open(self, *args: str, **kwargs: str) -> Awaitable[None] | None:
        # Small frames must not wait for the peer's delayed ACK (Nagle): an event followed by
        # a reply otherwise costs ~40 ms.
        self.set_nodelay(True)
        assert self.ws_connection is not None
        self.stream = self.ws_connection.stream
        self.sockets.add(self)
        self.heartbeat.add(self)
        token = self.get_query_argument("token", None)
        frame = None
        if token:
            frame = {
                "token": token,
                "queue_id": self.get_query_argument("queue_id", None),
                "epoch": self.get_query_argument("epoch", None),
                "last_event_id": self.get_query_argument("last_event_id", "0"),
            }
        self.user_agent = self.request.headers.get("User-Agent")
        self._forget_upgrade()
        if frame is not None:
            return self._authenticate(frame)  # Tornado reads no frame before it is done
        loop = asyncio.get_running_loop()
        self.auth_timer = loop.call_later(
            self.service.settings.auth_timeout_secs, self._auth_timed_out
        )
        return None

    def _detach_stream(self) -> tornado.iostream.IOStream:
        # Tornado's own sets seven instance attributes that make the HTTP methods (write,
        # finish, ...) raise once upgraded: the handler's __dict__ grows past its size, about
        # 1.5 KiB a socket. Nothing here calls them after the upgrade.
        return self.detach()

    def _forget_upgrade(self) -> None:
        """Drop what the HTTP upgrade left on the handler, which Tornado keeps for the life of
        the connection and a WebSocket never reads again (about 4 KiB a socket): the request's
        headers, query and arguments (the token among them), the response's headers, the output
        transforms, the template namespace. The request's remote_ip stays (commands use it)."""
        request = self.request
        request.headers = NO_HEADERS
        request.arguments, request.query_arguments = {}, {}
        request.uri, request.query = request.path, ""  # what a log line may show of it
        self._headers = NO_HEADERS  # sent with the 101; setting headers now raises anyway
        self._transforms = []
        self.ui = None  # type: ignore[assignment]  # as Tornado's own _break_cycles does

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
            self._send_error(ref, exc)
            return
        except Exception:
            log.exception("frame failed")
            self._send_error(ref, None)
            return
        self.pending.append((frame, ref))
        if self.runner is None:
            self.runner = asyncio.get_running_loop().create_task(self._run_pending())

    async def _run_pending(self) -> None:
        """Run the queued frames in order until none is left (or the socket is gone: its
        client gets no reply for the rest, and retries them as it would after any drop). A
        command already started is never cancelled: a send is stored and then published."""
        if self.principal is not None:  # this task's log lines name the user
            USER_ID.set(self.principal.user_id)
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
                kind,
                self.principal,
                frame,
                address=self.request.remote_ip,
                user_agent=self.user_agent,
            )
        except ChatError as exc:
            self._send_error(ref, exc)
            if isinstance(exc, Unauthorized) and self.principal is not None:
                self._end_session("session ended")  # after the reply, which says why
            return
        except Exception:
            log.exception("command frame failed")
            self._send_error(ref, None)
            return
        self._send({"type": "reply", "ref": ref, "ok": True, "data": data})
        if kind in ("auth.login", "auth.register") and self.principal is None:
            # Signing in over the socket also signs the socket in.
            await self._authenticate({"token": data["token"]})
        elif kind == "auth.logout" and self.queue is None:
            # Normally the queue's session.ended closes the socket once written; without a
            # queue nobody else would.
            self.close(CLOSE_UNAUTHORIZED, "session ended")

    def _end_session(self, reason: str, code: int = CLOSE_UNAUTHORIZED) -> None:
        # Also when the client stopped reading: Tornado drops a connection that has not
        # answered the close within 5 s, whatever is still buffered for it.
        if not self._gone():
            self.close(code, reason)

    def session_over(self) -> None:
        """The session ended (a logout): close unless session.ended is written first."""
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
        if self.bucket is None:
            settings = self.service.settings
            self.bucket = TokenBucket(settings.frames_per_sec, settings.frame_burst)
        wait = self.bucket.take()
        if not wait:
            if self.rejected:
                self.rejected = 0
            return
        self._rejected_one()
        raise RateLimited("Too many frames; slow down.", retry_after_secs=wait)

    def _allow_ack(self) -> bool:
        if self.ack_bucket is None:
            self.ack_bucket = TokenBucket(ACKS_PER_SEC, ACK_BURST)
        if not self.ack_bucket.take():
            if self.rejected:
                self.rejected = 0
            return True
        self._rejected_one()  # dropped without a reply: the next ack covers it
        self.service.metrics.refused(WEBSOCKET)
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
            principal = await self.service.authenticate(
                token if isinstance(token, str) else None, address=self.request.remote_ip
            )
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
        self.user_agent = None  # only a sign-in over this socket needed it
        if not await self.service.socket_slots.take(principal.user_id):
            self.service.metrics.refused(WEBSOCKET)
            self.close(CLOSE_TOO_MANY, "too many connections for this user")
            return
        self.slot_user = principal.user_id
        if self._gone():  # left while the slot was counted (in Redis): on_close already ran
            self.service.socket_slots.release(principal.user_id)
            self.slot_user = None
            return
        self.principal = principal
        USER_ID.set(principal.user_id)
        try:
            queue, resumed, cursor = await self.service.open_queue(
                principal, frame.get("queue_id"), frame.get("epoch"), frame.get("last_event_id")
            )
        except RateLimited:
            self.service.metrics.refused(WEBSOCKET)
            self.close(CLOSE_TOO_MANY, "too many event queues for this user")
            return
        except ChatError as exc:
            # The queues are in a Redis that cannot be reached now (queues_unavailable).
            self.close(CLOSE_TRY_AGAIN, exc.code)
            return
        if self._gone():
            return  # left while the queue was opened (in Redis): nothing to attach
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
        self.cursor = cursor
        # The backlog first, then every later event as it is pushed (both in this one step
        # of the event loop, so none falls between them).
        if self._pump():
            queue.subscribe(consumer, self)

    # -- the queue's EventSink ----------------------------------------------------------------

    def on_event(self, event_id: int, event: Event) -> None:
        """Write the event pushed to this socket's queue at once, unless earlier ones are still
        waiting for the stream to drain (then it waits in the queue behind them)."""
        if self.paused:
            return
        if event_id != self.cursor + 1:  # never expected: catch up from the queue instead
            self._pump()
            return
        try:
            self._write_event(event_id, event)
        except tornado.websocket.WebSocketClosedError:
            pass
        except Exception:
            log.exception("event write failed")
            self.close(CLOSE_INTERNAL, "internal error")

    def on_end(self) -> None:
        """The queue was closed or taken over: close once what is left is written."""
        if not self.paused:
            self._pump()

    def _pump(self) -> bool:
        """Write the queue's events after the cursor until the stream holds enough; close the
        socket if the queue was taken over, or closed with nothing left to write. True if the
        socket is open and caught up."""
        queue, consumer = self.queue, self.consumer
        if queue is None or consumer is None or self._gone():
            return False
        try:
            if not queue.is_current(consumer):
                # The successor sends the rest; the client acknowledges what it got from us.
                self.close(CLOSE_REPLACED, "queue taken over by another connection")
                return False
            # prune=False: the cursor is what was sent; the client's acks, not sends, prune.
            for item in queue.events_after(self.cursor, prune=False):
                if not self._write_event(item["id"], item["event"]):
                    return False
            if queue.closed:
                self.close(CLOSE_QUEUE_LOST, "queue dropped; reconnect to get a new one")
                return False
        except tornado.websocket.WebSocketClosedError:
            return False
        except Exception:
            log.exception("event writer failed")
            self.close(CLOSE_INTERNAL, "internal error")
            return False
        return True

    def _write_event(self, event_id: int, event: Event) -> bool:
        """Write one event's frame; True if the next one may follow at once."""
        session_id = self.queue.session_id if self.queue is not None else ""
        future = self._write(self.encoder.event_frame(event_id, event, session_id))
        self.cursor = event_id
        self.service.metrics.events_by_socket += 1
        if event.get("type") == "session.ended":
            self.paused = True  # nothing after it: the queue closes next
            # Closed on the next turn of the loop: the reply to this socket's own logout,
            # which pushed the event, is sent in this one.
            suspended = event.get("reason") == SUSPENDED
            code = CLOSE_SUSPENDED if suspended else CLOSE_UNAUTHORIZED
            asyncio.get_running_loop().call_soon(self._end_session, "session ended", code)
            return False
        if self.unsent_bytes > EVENT_WRITE_AHEAD_BYTES:
            self.paused = True
            future.add_done_callback(self._drained)
            return False
        return True

    def _drained(self, future: asyncio.Future[None]) -> None:
        self.paused = False
        if not future.cancelled() and future.exception() is None:
            self._pump()

    def _send(self, frame: dict[str, Any]) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            # Not awaited: a reply is fire-and-forget. If the connection drops before the
            # write completes, its future fails with WebSocketClosedError; retrieve that so
            # asyncio does not log "Task exception was never retrieved".
            self._write(json_dumps(frame).encode()).add_done_callback(retrieve_exception)

    def _send_error(self, ref: Any, exc: ChatError | None) -> None:
        """An error reply to the frame `ref` (None: an internal error), counted in the
        metrics."""
        body = exc.to_dict() if exc is not None else {"error": INTERNAL_ERROR}
        self.service.metrics.error(body["error"]["code"], WEBSOCKET)
        self._send({"type": "reply", "ref": ref, "ok": False, **body})

    def _write(self, data: bytes) -> asyncio.Future[None]:
        """Write one text frame. A client that left more than max_socket_buffer_bytes of
        earlier frames untaken is closed as a slow consumer (replies are not awaited: without
        this they would pile up without bound), so at most the cap and one frame are ever
        buffered."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise tornado.websocket.WebSocketClosedError()
        if self.unsent_bytes > self.service.settings.max_socket_buffer_bytes:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: too much unread data")
            raise tornado.websocket.WebSocketClosedError()
        # get_websocket_protocol makes every connection a ChatProtocol (no isinstance here: an
        # ABC's costs more than the rest of a fan-out's bookkeeping).
        future: asyncio.Future[None] = write_text_frame(cast(ChatProtocol, connection), data)
        return future

    @property
    def unsent_bytes(self) -> int:
        """Written to this socket and not yet taken by the client (frame headers included)."""
        return 0 if self.stream is None else unsent_bytes(self.stream)

    def on_pong(self, data: bytes) -> None:
        self.pong_due = False

    def beat(self) -> None:
        """The heartbeat's turn: close if the last ping went unanswered, else ping again."""
        if self._gone():
            return
        if self.pong_due:
            self.close(reason="ping timed out")  # Tornado's own pinger's words
            return
        self.pong_due = True
        with contextlib.suppress(
            tornado.websocket.WebSocketClosedError, tornado.iostream.StreamClosedError
        ):
            self.ping()

    def on_close(self) -> None:
        self.sockets.discard(self)  # and so from the heartbeat
        self.pending = None  # commands not started yet: their replies could not be sent anyway
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        if self.session_timer is not None:
            self.session_timer.cancel()
            self.session_timer = None
        if self.slot_user is not None:
            self.service.socket_slots.release(self.slot_user)
            self.slot_user = None
        if self.queue is not None and self.consumer is not None:
            # A no-op if another transport took the queue over: it stays attached.
            self.service.registry.detach(self.queue, self.consumer)
            self.consumer = None


class Heartbeat:
    """One timer for all the sockets of an application: each is pinged every interval and
    closed when it has not answered the previous ping within it (the contract's
    heartbeat_secs). Tornado's websocket_ping_interval costs a task and a timer per socket."""

    def __init__(self, sockets: set[ChatSocket], interval: float) -> None:
        self.sockets = sockets  # the application's open sockets; on_close removes them
        self.interval = interval
        self.timer: asyncio.TimerHandle | None = None  # only while there are sockets
        self.beats = 0
        self.added = 0

    def add(self, socket: ChatSocket) -> None:
        """Ping this socket from now on (it is in the sockets set); start beating if idle."""
        socket.heartbeat_slice = self.added % HEARTBEAT_SLICES
        self.added += 1
        if self.timer is None and self.interval > 0:
            self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.interval / HEARTBEAT_SLICES, self._beat)

    def _beat(self) -> None:
        self.timer = None
        turn = self.beats % HEARTBEAT_SLICES
        self.beats += 1
        for socket in list(self.sockets):  # a copy: closing may remove it from the set
            if socket.heartbeat_slice == turn:
                socket.beat()
        if self.sockets:
            self._schedule()


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
