"""The bus over Redis pub/sub (redis-py's asyncio client): one channel, every process on it.

Each notice is {"origin", "topic", "payload"} as JSON; a process ignores its own. Pub/sub
delivers to the processes connected at that moment, at most once: a process that was away
(Redis restarting, its connection lost) misses notices, and falls back on what it would do
alone (its session cache expires within settings.session_check_secs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chat.broker import Handler

log = logging.getLogger(__name__)

CHANNEL = "chat:bus"
RECONNECT_SECS = 1.0  # after the subscription's connection failed, before trying again
SEND_TIMEOUT_SECS = 5.0
HEALTH_SECS = 15.0  # how often redis-py checks the subscription's idle connection


class RedisBus:
    """Notices through one Redis pub/sub channel."""

    def __init__(self, url: str) -> None:
        self.origin = secrets.token_hex(8)  # this process, to skip its own notices
        # Sends give up after SEND_TIMEOUT_SECS (a stopped Redis must not pile them up); the
        # subscription waits for notices without a read timeout, its connection checked by
        # redis-py's own health pings instead.
        self._redis = aioredis.from_url(
            url, socket_timeout=SEND_TIMEOUT_SECS, socket_connect_timeout=SEND_TIMEOUT_SECS
        )
        self._subscriber = aioredis.from_url(
            url, socket_connect_timeout=SEND_TIMEOUT_SECS, health_check_interval=HEALTH_SECS
        )
        self._handlers: Mapping[str, Handler] = {}
        self._listener: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()

    async def ping(self) -> None:
        """ConnectionError when Redis does not answer."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise ConnectionError(str(exc)) from exc

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = handlers
        self._listener = asyncio.get_running_loop().create_task(self._listen_forever())
        await self._subscribed.wait()  # notices sent from now on reach this process

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with self._subscriber.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        self._dispatch(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis bus: subscription lost (%s); retrying", exc)
                self._subscribed.set()  # start() must not wait for ever on a Redis away
                await asyncio.sleep(RECONNECT_SECS)

    def _dispatch(self, data: Any) -> None:
        try:
            notice = json.loads(data)
            if notice.get("origin") == self.origin:
                return
            handler = self._handlers.get(notice.get("topic"))
            if handler is not None:
                handler(notice.get("payload"))
        except Exception:
            log.exception("redis bus: a notice could not be handled")

    def publish(self, topic: str, payload: Any) -> None:
        text = json.dumps({"origin": self.origin, "topic": topic, "payload": payload})
        task = asyncio.get_running_loop().create_task(self._send(text))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, text: str) -> None:
        try:
            await self._redis.publish(CHANNEL, text)
        except (RedisError, OSError) as exc:
            log.warning("redis bus: a notice was not sent (%s)", exc)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for task in list(self._sends):
            with contextlib.suppress(Exception):
                await task
        await self._redis.aclose()
        await self._subscriber.aclose()
