"""The bus over Redis pub/sub (redis-py's asyncio client): one channel, every process on it.

A process sends what it publishes in order, from one task: the notices waiting when it runs go
out together as one message, {"origin", "notices": [[topic, payload], ...]} as JSON, and a
process ignores its own. So notices from one process reach every other in the order they were
published (an event's order in its queues depends on it).

Pub/sub delivers to the processes connected at that moment, at most once. A process that may
have missed notices is told so through the topic GAP, with no payload: when its subscription
was lost and is back, or when another process could not send some (it sends GAP once Redis
takes its notices again). It then drops what it can no longer vouch for (its event queues:
their clients resume with a new queue and read the state again, as after an overflow).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from chat.broker import GAP, Handler
from chat.broker.redis_presence import RedisPresenceBook
from chat.tasks import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "chat:bus"
RECONNECT_SECS = 1.0  # after the subscription's connection failed, before trying again
SEND_TIMEOUT_SECS = 5.0
HEALTH_SECS = 15.0  # how often redis-py checks the subscription's idle connection
MAX_CONNECTIONS = 100  # per client: commands beyond wait their turn


def connect(url: str, timeout_secs: float) -> aioredis.Redis:
    """A client for commands: at most MAX_CONNECTIONS to Redis, and a command that finds them
    all busy waits for one (redis-py's default pool refuses it, "Too many connections": 500
    clients connecting at once made as many presence changes at once). Each step, the wait for
    a connection and the socket's, gives up after timeout_secs."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout_secs,
        socket_timeout=timeout_secs,
        socket_connect_timeout=timeout_secs,
    )
    return aioredis.Redis.from_pool(pool)


async def run_scripts(
    client: aioredis.Redis, calls: Sequence[tuple[AsyncScript, Sequence[Any]]]
) -> list[Any]:
    """Each call (a script and its ARGV) as an EVALSHA, all in one pipeline: one round trip.
    redis-py's scripts in a pipeline ask SCRIPT EXISTS before each execute, a second round
    trip that every publish paid. A script Redis no longer has (restarted, SCRIPT FLUSH) is
    loaded and the calls from the first it refused are sent again, in order; but if a later
    one ran meanwhile (another process loaded it in between), sending again would repeat or
    reorder it, so that raises as any failure (the caller's events are then not stored).
    Raises the first error of the calls."""
    results = await _evalshas(client, calls)
    refused = next((i for i, r in enumerate(results) if isinstance(r, NoScriptError)), None)
    if refused is not None:
        if not all(isinstance(r, NoScriptError) for r in results[refused:]):
            raise results[refused]
        for script in {script for script, _ in calls[refused:]}:
            script.sha = await client.script_load(script.script)
        results[refused:] = await _evalshas(client, calls[refused:])
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


async def _evalshas(
    client: aioredis.Redis, calls: Sequence[tuple[AsyncScript, Sequence[Any]]]
) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for script, args in calls:
            pipe.evalsha(script.sha, 0, *args)
        return list(await pipe.execute(raise_on_error=False))


async def subscribe_forever(
    client: aioredis.Redis,
    channel: str,
    *,
    name: str,
    subscribed: asyncio.Event,
    on_back: Callable[[], None],
    on_message: Callable[[Any], None],
) -> None:
    """Listen on the channel for ever: on_message(data) for each message. After the
    subscription was lost and is back, on_back() first: what was sent meanwhile never came.
    subscribed is set at the first subscription (or failure: a start must not wait for ever
    on a Redis away)."""
    lost = False
    while True:
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                subscribed.set()
                if lost:
                    log.warning("%s: subscribed again; notices may have been missed", name)
                    lost = False
                    on_back()
                async for message in pubsub.listen():
                    on_message(message.get("data"))
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            log.warning("%s: subscription lost (%s); retrying", name, exc)
            lost = True
            subscribed.set()
            await asyncio.sleep(RECONNECT_SECS)


class RedisBus:
    """Notices through one Redis pub/sub channel."""

    def __init__(self, url: str) -> None:
        self.origin = secrets.token_hex(8)  # this process, to skip its own notices
        # Sends give up after SEND_TIMEOUT_SECS (a stopped Redis must not pile them up); the
        # subscription waits for notices without a read timeout, its connection checked by
        # redis-py's own health pings instead.
        self._redis = connect(url, SEND_TIMEOUT_SECS)
        self._subscriber = aioredis.from_url(
            url, socket_connect_timeout=SEND_TIMEOUT_SECS, health_check_interval=HEALTH_SECS
        )
        self._handlers: Mapping[str, Handler] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # What publish() queued and the one task that sends it, in order.
        self._outbox: list[list[Any]] = []
        self._pending = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._unsent = False  # some notices were lost: GAP goes out before the next ones
        self._idle = asyncio.Event()  # set while nothing waits to be sent or is being sent
        self._idle.set()

    shared = True  # other processes may be listening: ServiceBase.publish tells them

    @property
    def redis(self) -> aioredis.Redis:
        """The connection sends use (time-limited), for what else is shared in Redis."""
        return self._redis

    def presence_book(self, alive_secs: float) -> RedisPresenceBook:
        """The shared presence book, on this bus's connection, with its origin as process id."""
        return RedisPresenceBook(self._redis, self.origin, alive_secs)

    async def ping(self) -> None:
        """ConnectionError when Redis does not answer."""
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise ConnectionError(str(exc)) from exc

    async def start(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = handlers
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen_forever())
        self._sender = loop.create_task(self._send_forever())
        await self._subscribed.wait()  # notices sent from now on reach this process

    async def _listen_forever(self) -> None:
        await subscribe_forever(
            self._subscriber,
            CHANNEL,
            name="redis bus",
            subscribed=self._subscribed,
            on_back=functools.partial(self._handle, GAP, None),
            on_message=self._dispatch,
        )

    def _dispatch(self, data: Any) -> None:
        try:
            message = json.loads(data)
            if message.get("origin") == self.origin:
                return
            notices = message.get("notices")
        except Exception:
            log.exception("redis bus: a message could not be read")
            return
        for topic, payload in notices if isinstance(notices, list) else ():
            self._handle(topic, payload)

    def _handle(self, topic: Any, payload: Any) -> None:
        handler = self._handlers.get(topic) if isinstance(topic, str) else None
        if handler is None:
            return
        try:
            handler(payload)
        except Exception:  # one bad notice must not stop the others
            log.exception("redis bus: a %s notice could not be handled", topic)

    def publish(self, topic: str, payload: Any) -> None:
        self._outbox.append([topic, payload])
        self._idle.clear()
        self._pending.set()

    async def _send_forever(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            notices, self._outbox = self._outbox, []
            if self._unsent:
                notices.insert(0, [GAP, None])
            if not notices:
                continue
            text = json.dumps({"origin": self.origin, "notices": notices})
            try:
                await self._redis.publish(CHANNEL, text)
                self._unsent = False
            except (RedisError, OSError) as exc:
                if not self._unsent:
                    log.warning("redis bus: %d notices were not sent (%s)", len(notices), exc)
                self._unsent = True
                if not self._outbox:  # nothing else to carry the GAP: try it alone, later
                    await asyncio.sleep(RECONNECT_SECS)
                    self._pending.set()
            if not self._outbox:
                self._idle.set()

    async def close(self) -> None:
        if self._sender is not None and not self._idle.is_set() and not self._unsent:
            # What was published before closing still goes out (a logout's session.ended).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), SEND_TIMEOUT_SECS)
        for task in (self._listener, self._sender):
            await cancel_and_wait(task)
        await self._redis.aclose()
        await self._subscriber.aclose()
