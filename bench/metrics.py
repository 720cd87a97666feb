"""What the Prometheus metrics cost on the message path, beside what a message costs in all.

Run:  .venv/bin/python -m bench.metrics            (--help for options)

The server counts on every message whether or not `/metrics` is served (issue 20: "counters
cheap enough that the performance issue's figures do not move"). Two measurements, one run:

- the server's CPU per stored and delivered 1:1 message: --pairs pairs over WebSocket send
  --per-pair messages each (bench.messaging's workload), server CPU time from /proc divided
  by the messages;
- the counting a message causes, timed in this process on the server's own Metrics: one
  `message_stored` (a Counter and a Histogram observation) and two delivery counts (the
  recipient's copy and the sender's own), and the increments of a 1,000-member group's
  fan-out per message.

The table gives the counting's share of the message's CPU; the goal is well under 1 %.
The scrape itself (GET /metrics on --metrics-port) is timed too: it runs only when scraped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import time
import timeit
import urllib.request
from collections.abc import Sequence

from bench.common import ServerProcess, database, print_table
from bench.messaging import Http, bench_pairs, seed_users
from bench.realtime import cpu_ticks
from chat.dbserver import free_port
from chat.metrics import Metrics
from chat.store import Store


def counting_cost_us() -> tuple[float, float]:
    """(µs of one message_stored, µs of one delivery count) on a real Metrics."""
    metrics = Metrics()
    n = 200_000
    stored = timeit.timeit(lambda: metrics.message_stored(0.004), number=n) / n * 1e6

    def deliver() -> None:
        metrics.events_by_socket += 1  # what handlers/socket.py does per event written

    delivery = timeit.timeit(deliver, number=n) / n * 1e6
    return stored, delivery


def scrape_ms(port: int, samples: int = 20) -> float:
    """Median time of GET /metrics on the server's metrics port, in ms."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            r.read()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with database(args.mongo_uri) as uri:
        db_name = f"bench_metrics_{secrets.token_hex(4)}"
        store = Store(uri, db_name, timeout_ms=10_000)
        await store.ensure_indexes()
        metrics_port = free_port()
        server = ServerProcess(uri, db_name, ["--metrics-port", str(metrics_port)])
        http = Http(server.base_url)
        try:
            users = await seed_users(store, 2 * args.pairs)
            before = cpu_ticks(server.pid)
            pair_rows, _ = await bench_pairs(server, http, users, args.pairs, args.per_pair)
            ticks = cpu_ticks(server.pid) - before
            messages = args.pairs * args.per_pair
            cpu_us = ticks / os.sysconf("SC_CLK_TCK") / messages * 1e6
            stored_us, delivery_us = counting_cost_us()
            per_message = stored_us + 2 * delivery_us
            scrape = scrape_ms(metrics_port)
        finally:
            http.close()
            server.stop()
            with contextlib.suppress(Exception):
                await store.drop_database()
            await store.close()
    rows += pair_rows
    rows += [
        ("server CPU per 1:1 message (stored, 2 copies sent)", f"{cpu_us:.0f} µs"),
        ("metrics: message_stored (Counter + Histogram)", f"{stored_us:.2f} µs"),
        ("metrics: one delivery count", f"{delivery_us:.3f} µs"),
        ("metrics per 1:1 message", f"{per_message:.2f} µs"),
        ("metrics / server CPU per message (goal well < 1 %)", f"{per_message / cpu_us:.2%}"),
        (
            "metrics per message to a 1,000-member group",
            f"{stored_us + 1000 * delivery_us:.1f} µs",
        ),
        ("GET /metrics, median (only when scraped)", f"{scrape:.1f} ms"),
    ]
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__)
    parser.add_argument("--pairs", type=int, default=50, help="1:1 pairs (%(default)s)")
    parser.add_argument("--per-pair", type=int, default=40, help="messages each (%(default)s)")
    parser.add_argument("--mongo-uri", default=None, help="an existing MongoDB")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    print_table("Metrics cost on the message path", rows)
    return 0


if __name__ == "__main__":
    main()
