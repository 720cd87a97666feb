"""Long-polling transport: GET /api/events holds the request until events arrive or timeout."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from chat import shapes
from chat.errors import RateLimited
from chat.events import EventQueue
from chat.metrics import LONGPOLL
from chat.openapi import JSON, Operation
from chat.validation import Fields, get_int, integer
from handlers.base import ApiHandler, EventEncoder

DEFAULT_POLL_SECS = 25  # below the 30-60 s idle timeouts of common proxies
MAX_POLL_SECS = 60  # the contract's maximum; longer polls are refused, not shortened
POLL_RETRY_SECS = 1.0  # a refused poll's Retry-After: held polls end within their timeout


POLL_REPLY = shapes.reply(
    queue_id={"type": "string"},
    events=shapes.list_of(
        shapes.reply(
            id={"type": "integer", "minimum": 0}, event=shapes.reply(type={"type": "string"})
        )
    ),
)


class LongPollHandler(ApiHandler):
    """One poll: create or resume the queue, then return its events or [] at the timeout."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "Long-poll the event queue: a new queue's hello at once, else the events after "
            "last_event_id, or [] after timeout seconds",
            query=Fields(
                {
                    "queue_id": {"type": "string"},
                    "epoch": {"type": "string"},
                    "last_event_id": integer(),
                    "timeout": integer(0, MAX_POLL_SECS),
                }
            ),
            ok={200: {JSON: POLL_REPLY}},
            errors=(429, 503),
            tag="events",
        )
    }

    transport = LONGPOLL
    gone = False  # the client closed the connection
    held: tuple[EventQueue, int] | None = None  # the queue this poll waits on, and its token

    async def get(self) -> None:
        args = self.query_args()
        # Held for up to a minute each, by thousands: not three copies of the query as well
        # (Tornado's parsed arguments, their deep copy, and ours).
        self.request.arguments = self.request.query_arguments = {}
        last_event_id = get_int(args, "last_event_id", default=0)
        timeout = get_int(args, "timeout", default=DEFAULT_POLL_SECS, maximum=MAX_POLL_SECS)
        assert last_event_id is not None and timeout is not None
        queue, resumed, cursor = await self.service.open_queue(
            self.principal, args.get("queue_id"), args.get("epoch"), last_event_id
        )
        if not resumed:
            # A new queue: its hello (id 0, never stored) tells the client to re-read
            # state, and carries the queue_id its next poll resumes with cursor 0.
            hello = await self.service.hello(self.principal, queue, resumed, cursor)
            self.write_json({"queue_id": queue.queue_id, "events": [{"id": 0, "event": hello}]})
            return
        if self.gone:
            return  # left during authentication: attaching now would pin the queue
        registry, slots, user_id = self.service.registry, self.service.poll_slots, queue.user_id
        if not await slots.take(user_id):
            raise RateLimited(
                f"Too many long-polls held at once (at most {slots.cap}).",
                retry_after_secs=POLL_RETRY_SECS,
            )
        if self.gone:  # left while the slot was counted (in Redis)
            slots.release(user_id)
            return
        consumer = registry.attach(queue)  # supersedes an older poll or a WebSocket
        self.held = (queue, consumer)
        try:
            # The token keeps this poll, if it is taken over before it starts
            # waiting, from stealing (and acknowledging) its successor's events. Awaited
            # here, not in a task of its own: a client that leaves ends the wait by detaching
            # (on_connection_close), so thousands of held polls cost no task each.
            events = await queue.wait_after(cursor, timeout, token=consumer)
        except asyncio.CancelledError:
            # Cancelled from outside (the server is stopping): answer like a heartbeat, so
            # the client polls again with the same cursor instead of reading a broken reply.
            events = []
        finally:
            self.held = None
            registry.detach(queue, consumer)  # a no-op if another transport took over
            slots.release(user_id)
        if self.gone:
            return  # the client went away; unacknowledged events stay for its next poll
        # The events' JSON is shared with every other socket and poll that delivers them.
        encoder: EventEncoder = self.application.settings["event_encoder"]
        self.service.metrics.events_by_poll += len(events)
        self.finish(encoder.poll_body(queue.queue_id, events, queue.session_id))

    def on_connection_close(self) -> None:
        self.gone = True
        if self.held is not None:
            # Ends the wait at once (its token is no longer current); the queue lives on.
            self.service.registry.detach(*self.held)
