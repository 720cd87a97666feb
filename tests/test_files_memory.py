"""A 25 MiB upload and download through server.py as a user runs it: the server's resident
memory, read from /proc while the bytes flow, grows by far less than the file (the body is
streamed into GridFS chunk by chunk, and out of it the same way)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import tornado.httpclient

from tests.client import ApiClient
from tests.test_server_process import serve_on_test_db, stop

FILE_BYTES = 25 * 1024 * 1024
PIECE = 256 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def peak_rss_during(pid: int, work: Callable[[], Awaitable[None]]) -> tuple[int, int]:
    """(RSS before, highest RSS seen every 10 ms while work runs)."""
    before = rss_bytes(pid)
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        await work()
    finally:
        done.set()
        await sampler
    return before, max(peak, rss_bytes(pid))


async def test_a_25_mib_upload_and_download_do_not_sit_in_memory(
    database_uri: str, tmp_path: Path
) -> None:
    process, host = await serve_on_test_db(database_uri, tmp_path)
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        api = ApiClient(f"http://{host}")
        token = (await api.register("memory"))["token"]
        api.close()
        pieces = [os.urandom(PIECE) for _ in range(4)]  # 1 MiB of noise, sent 25 times over
        expected = hashlib.sha256()
        for i in range(FILE_BYTES // PIECE):
            expected.update(pieces[i % 4])
        auth = {"Authorization": f"Bearer {token}"}

        async def body(write: Callable[[bytes], Awaitable[None]]) -> None:
            for i in range(FILE_BYTES // PIECE):
                await write(b"PK\x03\x04" + pieces[i % 4][4:] if i == 0 else pieces[i % 4])

        async def post(name: str) -> dict[str, str]:
            response = await client.fetch(
                f"http://{host}/api/uploads?name={name}", method="POST",
                headers={**auth, "Content-Length": str(FILE_BYTES)}, body_producer=body,
                request_timeout=120,
            )  # fmt: skip
            upload: dict[str, str] = json.loads(response.body)["upload"]
            return upload

        await post("warm-up.zip")  # the code paths and buffers of an upload, once
        uploaded: dict[str, str] = {}

        async def do_upload() -> None:
            uploaded.update(await post("big.zip"))

        up_before, up_peak = await peak_rss_during(process.pid, do_upload)
        assert int(uploaded["size"]) == FILE_BYTES and uploaded["kind"] == "file"
        got = hashlib.sha256()
        received = 0

        def on_chunk(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            got.update(chunk)

        async def do_download() -> None:
            await client.fetch(
                f"http://{host}/api/files/{uploaded['id']}", headers=auth,
                streaming_callback=on_chunk, request_timeout=120,
            )  # fmt: skip

        down_before, down_peak = await peak_rss_during(process.pid, do_download)
        assert received == FILE_BYTES and got.hexdigest() == uploaded["sha256"]
        mib = 2**20
        print(
            f"\nserver RSS: upload of 25 MiB {up_before / mib:.1f} -> peak {up_peak / mib:.1f} MiB "
            f"(+{(up_peak - up_before) / mib:.1f}); download {down_before / mib:.1f} -> peak "
            f"{down_peak / mib:.1f} MiB (+{(down_peak - down_before) / mib:.1f})"
        )
        # Well below the file's size: a few chunks of 1 MiB at most, and the allocator's slack.
        assert up_peak - up_before < FILE_BYTES / 4
        assert down_peak - down_before < FILE_BYTES / 4
    finally:
        client.close()
        out = stop(process)
    assert process.returncode == 0, out
    assert "Traceback" not in out, out
