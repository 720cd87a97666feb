"""What the server counts for Prometheus: one Metrics per service, on a registry of its own (a
test builds as many servers as it likes; nothing is global).

Cost is what decides how each figure is kept. Events are delivered by the thousand in a
fan-out: their counts are plain integers, read (like the gauges: open connections, event
queues, database errors) only when /metrics is scraped. A message stored is rare next to
that: a prometheus_client Counter and a Histogram observation each. No label holds a user
or conversation id: labels are the transport and the error code, a few values each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

WEBSOCKET = "websocket"
LONGPOLL = "longpoll"
TRANSPORTS = (WEBSOCKET, LONGPOLL)
REST = "rest"  # errors: an API request other than a long-poll
# Seconds from handing a message to the group commit until the database confirmed it: a
# few milliseconds normally, up to the database timeout (3 s) when it is in trouble.
STORE_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Live:
    """The figures read at scrape time from the objects that hold them."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The current figures (prometheus_client's collector interface)."""
        m = self.metrics
        connections = GaugeMetricFamily(
            "chat_connections",
            "Connections held by signed-in clients: authenticated WebSockets, waiting long-polls",
            labels=["transport"],
        )
        for transport in TRANSPORTS:
            read = m.connection_counts.get(transport)
            connections.add_metric([transport], read() if read else 0)
        yield connections
        yield GaugeMetricFamily(
            "chat_event_queues",
            "Event queues held (attached, or waiting for their client to resume)",
            value=m.queue_count() if m.queue_count else 0,
        )
        delivered = CounterMetricFamily(
            "chat_events_delivered", "Events written to clients", labels=["transport"]
        )
        delivered.add_metric([WEBSOCKET], m.events_by_socket)
        delivered.add_metric([LONGPOLL], m.events_by_poll)
        yield delivered
        yield CounterMetricFamily(
            "chat_database_errors",
            "Database operations that failed (unreachable, timed out, or refused)",
            value=m.database_errors() if m.database_errors else 0,
        )


class Metrics:
    """The server's counters and gauges, and the registry /metrics renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds, ... (Linux).
        ProcessCollector(registry=self.registry)
        self.events_by_socket = 0
        self.events_by_poll = 0
        self.connection_counts: dict[str, Callable[[], int]] = {}
        self.queue_count: Callable[[], int] | None = None
        self.database_errors: Callable[[], int] | None = None
        self.messages_stored = Counter(
            "chat_messages_stored", "Messages stored (a retried send counts once)",
            registry=self.registry,
        )  # fmt: skip
        self.store_latency = Histogram(
            "chat_message_store_seconds",
            "Time to store a message, from the send to the database's confirmation",
            buckets=STORE_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "chat_errors", "Error replies by code and transport", ["code", "transport"],
            registry=self.registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "chat_rate_limited",
            "Requests, frames and connections refused by a rate limit or a per-user cap",
            ["transport"],
            registry=self.registry,
        )
        for transport in (REST, *TRANSPORTS):  # shown at 0 from the start
            self.rate_limited.labels(transport)
        self.registry.register(_Live(self))

    def watch(
        self,
        *,
        queues: Callable[[], int],
        connections: dict[str, Callable[[], int]],
        database_errors: Callable[[], int],
    ) -> None:
        """Read these at each scrape: the number of event queues, of connections by
        transport, and of failed database operations so far."""
        self.queue_count = queues
        self.connection_counts = dict(connections)
        self.database_errors = database_errors

    def message_stored(self, seconds: float) -> None:
        """A message was stored; storing it took `seconds`."""
        self.messages_stored.inc()
        self.store_latency.observe(seconds)

    def error(self, code: str, transport: str) -> None:
        """An error reply with this code was sent (rate_limited ones count twice: here and
        as rate-limited requests)."""
        self.errors.labels(code, transport).inc()
        if code == "rate_limited":
            self.rate_limited.labels(transport).inc()

    def refused(self, transport: str) -> None:
        """A connection was refused or closed by a per-user cap (no error reply to count)."""
        self.rate_limited.labels(transport).inc()
