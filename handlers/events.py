"""Long-polling transport: GET /api/events holds the request until events arrive or timeout."""

from __future__ import annotations

import asyncio

from chat.events import Item
from chat.validation import get_int
from handlers.base import ApiHandler

DEFAULT_POLL_SECS = 25
MAX_POLL_SECS = 60


class LongPollHandler(ApiHandler):
    """One poll: create or resume the queue, then return its events or [] at the timeout."""

    wait: asyncio.Future[list[Item]] | None = None

    async def get(self) -> None:
        args = self.query_args()
        last_event_id = get_int(args, "last_event_id", default=0)
        timeout = get_int(args, "timeout", default=DEFAULT_POLL_SECS, maximum=MAX_POLL_SECS)
        assert last_event_id is not None and timeout is not None
        queue, resumed, cursor = self.service.open_queue(
            self.principal, args.get("queue_id"), args.get("epoch"), last_event_id
        )
        if not resumed:
            # A new queue: its hello (id 0, not stored) tells the client to re-read state.
            hello = await self.service.hello(self.principal, queue, resumed, cursor)
            self.write_json({"queue_id": queue.queue_id, "events": [{"id": 0, "event": hello}]})
            return
        registry = self.service.registry
        consumer = registry.attach(queue)
        try:
            self.wait = asyncio.ensure_future(queue.wait_after(last_event_id, timeout))
            events = await self.wait
        except asyncio.CancelledError:
            return  # the client went away; the events stay queued for its next poll
        finally:
            registry.detach(queue, consumer)
        self.write_json({"queue_id": queue.queue_id, "events": events})

    def on_connection_close(self) -> None:
        if self.wait is not None:
            self.wait.cancel()
