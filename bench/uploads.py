"""Attachments: upload and download throughput beside raw GridFS, and chat latency while
files are uploaded.

Run:  .venv/bin/python -m bench.uploads            (25 MiB files; --help for options)

Against one server process and one database (embedded, on disk, unless --mongo-uri):

- upload: --files uploads of --mib MiB of random bytes (kind `file`: no image work), one at a
  time, POST /api/uploads -> MiB/s; the peer is pymongo's AsyncGridFSBucket
  `upload_from_stream` of the same bytes with the same chunk size, in this process, on the
  same database, measured in the same run;
- download: GET /api/files/{id} of each upload with the uploader's token, the bytes counted
  as they arrive -> MiB/s; the peer is `open_download_stream(...).read()`;
- latency: a sender posts a message every --interval-ms to a group and the other member
  notes when message.new arrives over its WebSocket, for --seconds without uploads, then for
  as long again while --uploaders clients each upload --mib MiB files back to back (from a
  process of their own: pushing the bytes would slow this process's probe otherwise);
  p50 and p99 of both, and their ratio.

The goals (issue 16): upload and download >= 0.8x the raw bucket; p99 with uploads within 2x
of p99 without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import tornado.escape
import tornado.httpclient
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient

from bench.common import ServerProcess, database, percentile, print_table
from bench.realtime import Account, Deliveries, Http, connect_ws, create_groups, seed_accounts
from chat.store.files import CHUNK_BYTES

MIB = 1024 * 1024


async def post_upload(base_url: str, account: Account, data: bytes, name: str) -> str:
    """One upload through the product's endpoint; its id."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(
            f"{base_url}/api/uploads?name={name}",
            method="POST",
            body=data,
            headers={
                "Authorization": f"Bearer {account.token}",
                "Content-Type": "application/octet-stream",
            },
            request_timeout=300,
        )
    finally:
        client.close()
    return str(tornado.escape.json_decode(response.body)["upload"]["id"])


async def get_file(base_url: str, account: Account, file_id: str) -> int:
    """One download through the product's endpoint; the bytes received (counted as they
    come, as a browser writes them to disk, not gathered into one body)."""
    received = 0

    def take(data: bytes) -> None:
        nonlocal received
        received += len(data)

    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        await client.fetch(
            f"{base_url}/api/files/{file_id}",
            headers={"Authorization": f"Bearer {account.token}"},
            request_timeout=300,
            streaming_callback=take,
        )
    finally:
        client.close()
    return received


async def bench_server_transfer(
    server: ServerProcess, account: Account, payloads: list[bytes]
) -> tuple[float, float]:
    """(upload MiB/s, download MiB/s) through the server, one file at a time."""
    ids: list[str] = []
    start = time.perf_counter()
    for i, data in enumerate(payloads):
        ids.append(await post_upload(server.base_url, account, data, f"bench-{i}.bin"))
    upload_secs = time.perf_counter() - start
    start = time.perf_counter()
    received = 0
    for file_id in ids:
        received += await get_file(server.base_url, account, file_id)
    download_secs = time.perf_counter() - start
    total = sum(len(p) for p in payloads)
    assert received == total, f"downloaded {received} of {total} bytes"
    return total / MIB / upload_secs, total / MIB / download_secs


async def bench_raw_transfer(uri: str, db_name: str, payloads: list[bytes]) -> tuple[float, float]:
    """(upload MiB/s, download MiB/s) of a bare AsyncGridFSBucket with the server's chunk size."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    try:
        bucket = AsyncGridFSBucket(
            client[db_name], bucket_name="bench_raw", chunk_size_bytes=CHUNK_BYTES
        )
        ids = []
        start = time.perf_counter()
        for i, data in enumerate(payloads):
            ids.append(await bucket.upload_from_stream(f"raw-{i}.bin", data))
        upload_secs = time.perf_counter() - start
        start = time.perf_counter()
        received = 0
        for file_id in ids:
            stream = await bucket.open_download_stream(file_id)
            received += len(await stream.read())
        download_secs = time.perf_counter() - start
    finally:
        await client.close()
    total = sum(len(p) for p in payloads)
    assert received == total, f"raw: read {received} of {total} bytes"
    return total / MIB / upload_secs, total / MIB / download_secs


async def measure_latency(
    http: Http, sender: Account, conversation_id: str, deliveries: Deliveries,
    seconds: float, interval: float,
) -> tuple[list[float], int]:  # fmt: skip
    """Post a message every interval for seconds; (latencies in ms, messages lost)."""
    first = len(deliveries.latencies)
    sent = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        body = f"lat-{uuid.uuid4().hex[:12]}"
        deliveries.sent_at[body] = time.perf_counter()
        deliveries.expected = first + sent + 1
        await http.call(
            "POST", f"/api/conversations/{conversation_id}/messages", sender.token,
            {"body": body, "client_msg_id": body},
        )  # fmt: skip
        sent += 1
        await asyncio.sleep(interval)
    deliveries.expected = first + sent
    if len(deliveries.latencies) < deliveries.expected:
        deliveries.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(deliveries.arrived.wait(), 30)
    got = deliveries.latencies[first:]
    return [x * 1000 for x in got], sent - len(got)


def upload_worker(
    base_url: str, tokens: list[str], mib: int, stop: EventType, done: Synchronized[int]
) -> None:
    """In a process of its own (so that pushing the bytes does not slow the latency probe's
    loop): each token uploads mib MiB back to back until stop; done counts the uploads."""
    data = os.urandom(mib * MIB)

    async def one(account: Account) -> None:
        n = 0
        while not stop.is_set():
            await post_upload(base_url, account, data, f"load-{n}.bin")
            n += 1
            with done.get_lock():
                done.value += 1

    async def every() -> None:
        await asyncio.gather(*(one(Account("", t)) for t in tokens))

    asyncio.run(every())


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    payloads = [os.urandom(args.mib * MIB) for _ in range(args.files)]
    with database(args.mongo_uri, in_memory=False) as uri, tempfile.TemporaryDirectory() as tmp:
        db_name = f"bench_uploads_{uuid.uuid4().hex[:8]}"
        upload_limit = ["--max-upload-mb", str(max(25, args.mib + 1))]
        server = ServerProcess(uri, db_name, upload_limit, log=Path(tmp) / "server.log")
        http = Http(server.base_url, max_clients=10)
        ws = None
        try:
            sender, receiver, *uploaders = await seed_accounts(uri, db_name, 2 + args.uploaders)
            # The raw bucket first, then the server: neither profits from a warmer cache.
            raw_up, raw_down = await bench_raw_transfer(uri, db_name, payloads)
            up, down = await bench_server_transfer(server, sender, payloads)
            size = f"{args.files} x {args.mib} MiB"
            rows += [
                (f"upload ({size}), server", f"{up:.0f} MiB/s"),
                ("upload, raw AsyncGridFSBucket", f"{raw_up:.0f} MiB/s"),
                ("upload, server / raw (goal >= 0.8)", f"{up / raw_up:.2f}x"),
                (f"download ({size}), server", f"{down:.0f} MiB/s"),
                ("download, raw AsyncGridFSBucket", f"{raw_down:.0f} MiB/s"),
                ("download, server / raw (goal >= 0.8)", f"{down / raw_down:.2f}x"),
            ]
            [(conversation_id, _)] = await create_groups(http, sender, [receiver], 2)
            deliveries = Deliveries()
            ws = await connect_ws(server, receiver)
            reader = asyncio.create_task(ws.read_forever(deliveries))
            interval = args.interval_ms / 1000
            quiet, quiet_lost = await measure_latency(
                http, sender, conversation_id, deliveries, args.seconds, interval
            )
            spawn = multiprocessing.get_context("spawn")
            stop, done = spawn.Event(), spawn.Value("i", 0)
            worker = spawn.Process(
                target=upload_worker,
                args=(server.base_url, [u.token for u in uploaders], args.mib, stop, done),
            )
            worker.start()
            await asyncio.sleep(1.0)  # the worker started and its uploads are under way
            busy, busy_lost = await measure_latency(
                http, sender, conversation_id, deliveries, args.seconds, interval
            )
            stop.set()
            await asyncio.to_thread(worker.join, 300)
            uploads_done = done.value
            reader.cancel()
            q99, b99 = percentile(quiet, 99), percentile(busy, 99)
            rows += [
                ("message latency p50, no uploads", f"{percentile(quiet, 50):.1f} ms"),
                ("message latency p99, no uploads", f"{q99:.1f} ms"),
                (
                    f"message latency p50, {args.uploaders} uploading",
                    f"{percentile(busy, 50):.1f} ms",
                ),
                (f"message latency p99, {args.uploaders} uploading", f"{b99:.1f} ms"),
                ("p99 uploading / p99 quiet (goal <= 2)", f"{b99 / q99:.2f}x"),
                ("messages (quiet, uploading)", f"{len(quiet)}, {len(busy)}"),
                ("messages lost", f"{quiet_lost + busy_lost}"),
                (f"uploads of {args.mib} MiB during the phase", f"{uploads_done}"),
                ("server errors logged", f"{len(server.logged_errors())}"),
            ]
        finally:
            if ws is not None:
                ws.conn.close()
            http.close()
            server.stop()
            for line in server.logged_errors()[:5]:
                print("server error:", line)
            client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
            await client.drop_database(db_name)
            await client.close()
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.uploads",
        description="Upload/download MiB/s beside a raw AsyncGridFSBucket, and chat latency "
        "while clients upload.",
    )
    parser.add_argument("--mib", type=int, default=25, help="file size (default %(default)s)")
    parser.add_argument("--files", type=int, default=6, help="files timed (default %(default)s)")
    parser.add_argument(
        "--uploaders", type=int, default=4, help="clients uploading (default %(default)s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="each latency phase (default %(default)s)"
    )
    parser.add_argument(
        "--interval-ms", type=float, default=20.0, help="between messages (default %(default)s)"
    )
    parser.add_argument(
        "--mongo-uri", default=None, help="use this MongoDB instead of an embedded one"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.mib <= 1024 or not 1 <= args.files <= 100 or args.uploaders < 0:
        parser.error("--mib 1..1024, --files 1..100, --uploaders >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = asyncio.run(run(args))
    print_table(f"Attachments: {args.mib} MiB files, {args.uploaders} uploaders", rows)
    return 0


if __name__ == "__main__":
    main()
