"""GET /metrics on --metrics-port: the counters and gauges move as traffic flows, and the
public port does not serve them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import tornado.httpserver
import tornado.netutil
from prometheus_client.parser import text_string_to_metric_families

from chat.dbserver import free_port
from chat.metrics import Metrics
from handlers.metrics import make_metrics_app
from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, ServerFactory
from tests.exchange import chat_exchange
from tests.test_conv_outage import Restartable, own_database
from tests.test_realtime import eventually, signed_in
from tests.test_server_process import serve_on_test_db, stop

__all__ = ["own_database"]  # the fixture, for this module too

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    """Every sample at this /metrics URL, by name and labels."""
    client = ApiClient(url)
    response = await client.get("")
    client.close()
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_counters_move_as_a_conversation_flows(database_uri: str, tmp_path: Path) -> None:
    metrics_port = free_port()
    process, host = await serve_on_test_db(
        database_uri, tmp_path, "--metrics-port", str(metrics_port),
        "--login-failures-per-address", "1",
    )  # fmt: skip
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        before = await scrape(url)
        exchanged = await chat_exchange(f"http://{host}", f"ws://{host}/ws")
        api = ApiClient(f"http://{host}")
        assert (await api.get("/metrics")).status == 404  # not on the public port
        assert (await api.get("/api/nothing-here")).status == 404
        login = {"login": "nobody", "password": "wrong password"}
        assert (await api.post("/api/auth/login", login)).status == 401
        assert (await api.post("/api/auth/login", login)).status == 429
        api.close()
        after = await scrape(url)
    finally:
        out = stop(process)
    assert process.returncode == 0, out
    assert f"metrics on http://127.0.0.1:{metrics_port}/metrics" in out

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chat_messages_stored_total") == 2
    assert moved("chat_message_store_seconds_count") == 2
    assert 0 < moved("chat_message_store_seconds_sum") < 5
    # Bob's socket got Alice's message (and friend events); Alice's polls got both messages.
    assert moved("chat_events_delivered_total", transport="websocket") >= 1
    assert moved("chat_events_delivered_total", transport="longpoll") >= 2
    # The API's 404 (a page's, like /metrics on the public port, is no error reply).
    assert moved("chat_errors_total", code="not_found", transport="rest") == 1
    assert moved("chat_errors_total", code="invalid_credentials", transport="rest") == 1
    assert moved("chat_errors_total", code="rate_limited", transport="rest") == 1
    assert moved("chat_rate_limited_total", transport="rest") == 1
    assert value(after, "chat_event_queues") == 2  # Alice's and Bob's, in their grace
    assert value(after, "process_resident_memory_bytes") > 10 * 2**20
    assert exchanged.conversation_id not in str(after)  # no ids as labels


async def metrics_url(server: RunningServer) -> tuple[str, tornado.httpserver.HTTPServer]:
    """The service's metrics served as server.py serves them, on a port of their own."""
    http = tornado.httpserver.HTTPServer(make_metrics_app(server.service.metrics))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    http.add_sockets([sock])
    return f"http://127.0.0.1:{sock.getsockname()[1]}/metrics", http


async def test_connections_by_transport_and_event_queues(server: RunningServer) -> None:
    url, http = await metrics_url(server)
    try:
        api, token, user_id = await signed_in(server, "counted")
        ws = await WsClient.connect(server.ws_url)
        await ws.auth(token)
        first = await api.get("/api/events")
        queue_id = first.body["queue_id"]
        held = asyncio.ensure_future(api.get(f"/api/events?queue_id={queue_id}&timeout=30"))
        await eventually(lambda: server.service.poll_slots.total() == 1)
        during = await scrape(url)
        assert value(during, "chat_connections", transport="websocket") == 1
        assert value(during, "chat_connections", transport="longpoll") == 1
        assert value(during, "chat_event_queues") == 2
        ws.close()
        await ws.wait_closed()
        server.service.publish([user_id], {"type": "test"})  # the held poll returns it
        assert [item["event"] for item in (await held).body["events"]] == [{"type": "test"}]
        await eventually(
            lambda: server.service.poll_slots.total() + server.service.socket_slots.total() == 0
        )
        after = await scrape(url)
        assert value(after, "chat_connections", transport="websocket") == 0
        assert value(after, "chat_connections", transport="longpoll") == 0
        assert (await ApiClient(url.replace("/metrics", "/other")).get("")).status == 404
    finally:
        http.stop()


async def test_database_errors_are_counted(
    own_database: Restartable, make_server: ServerFactory
) -> None:
    server = await make_server(mongo_uri=own_database.db.uri, db_timeout_ms=500)
    api, _, _ = await signed_in(server, "outage")
    metrics: Metrics = server.service.metrics
    url, http = await metrics_url(server)
    try:
        own_database.stop()
        reply = await api.post("/api/auth/login", {"login": "outage", "password": "x" * 10})
        assert reply.status == 503, reply.body
        samples = await scrape(url)
        assert value(samples, "chat_database_errors_total") >= 1
        assert value(samples, "chat_errors_total", code="database_unavailable", transport="rest")
        assert metrics.registry is server.service.metrics.registry
    finally:
        http.stop()
        own_database.restart()
