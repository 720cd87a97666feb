"""Uploads the server must refuse or defuse: empty, too large, cut off half way, truncated or
bomb images, HTML and SVG dressed as images, hostile names, too many uploads. Each gets a
clear error or a safe result, nothing is kept of a refused upload, and no traceback is
logged."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import zlib
from collections.abc import Iterator

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.files_helpers import download, png, upload, uploaded
from tests.test_conversations import Member, join, open_dm, send

LIMIT = 1024 * 1024  # the tests' upload limit (the default is 25 MiB)


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test sends, the server logs no error and no traceback."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture
async def small(make_server: ServerFactory) -> RunningServer:
    return await make_server(max_upload_bytes=LIMIT)


async def nothing_stored(server: RunningServer, timeout: float = 5.0) -> None:
    """No file and no chunk in GridFS (an abort finishes shortly after the disconnect)."""
    files = server.store.files
    deadline = asyncio.get_running_loop().time() + timeout
    while (await files.count(), await files.chunk_count()) != (0, 0):
        assert asyncio.get_running_loop().time() < deadline, "an upload left bytes behind"
        await asyncio.sleep(0.05)


async def raw_request(server: RunningServer, head: str, body: bytes = b"") -> bytes:
    """Send a request's head (and body) on a plain socket; what the server answers."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await asyncio.wait_for(_reader.read(65536), 10)
    finally:
        writer.close()


def upload_head(member: Member, length: int, name: str = "big.bin") -> str:
    return (
        f"POST /api/uploads?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {member.token}\r\nContent-Length: {length}\r\n\r\n"
    )


async def test_empty_file_is_refused(small: RunningServer) -> None:
    alice = await join(small, "fi", "rest", online=False)
    response = await upload(alice, b"")
    assert response.status == 400 and response.error_code == "validation_failed"
    assert response.body["error"]["field"] == "file"
    assert "empty" in response.body["error"]["message"]
    await nothing_stored(small)


async def test_just_over_the_limit_is_413_before_the_body_and_nothing_is_kept(
    small: RunningServer,
) -> None:
    alice = await join(small, "fi", "rest", online=False)
    # The head alone is enough for the answer: the body is never read.
    answer = await raw_request(small, upload_head(alice, LIMIT + 1))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer and b"1 MiB" in answer
    # A body sent whole all the same.
    answer = await raw_request(small, upload_head(alice, LIMIT + 1), b"\0" * (LIMIT + 1))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Exactly the limit is fine.
    ok = await upload(alice, b"\1" * LIMIT)
    assert ok.status == 201 and ok.body["upload"]["size"] == LIMIT
    await small.store.files.delete([ok.body["upload"]["id"]])
    await nothing_stored(small)


async def test_a_body_without_content_length_is_refused_with_411_before_it_is_read(
    small: RunningServer,
) -> None:
    # A chunked body could pass the limit only once it is read: an upload must say its size.
    alice = await join(small, "fi", "rest", online=False)
    reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
    writer.write(
        (
            "POST /api/uploads?name=x.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {alice.token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )  # the answer comes before any of the body is sent
    await writer.drain()
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
    assert head.startswith("HTTP/1.1 411 "), head
    length = int(next(h for h in head.split("\r\n") if h.lower().startswith("content-length"))
                 .split(":")[1])  # fmt: skip
    body = json.loads(await reader.readexactly(length))
    assert body["error"]["code"] == "length_required"
    assert "Content-Length" in body["error"]["message"]
    writer.close()
    await writer.wait_closed()
    await nothing_stored(small)


@pytest.mark.parametrize("kind", ["file", "image"])
async def test_a_client_gone_half_way_leaves_nothing(make_server: ServerFactory, kind: str) -> None:
    server = await make_server(max_upload_bytes=8 * LIMIT)
    alice = await join(server, "fi", "rest", online=False)
    start = b"PK\x03\x04" if kind == "file" else b"\x89PNG\r\n\x1a\n"
    half = start + b"\3" * (4 * LIMIT)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(upload_head(alice, 8 * LIMIT).encode() + half)
    await writer.drain()
    if kind == "file":  # streamed: chunks are in GridFS while the body arrives
        deadline = asyncio.get_running_loop().time() + 10
        while await server.store.files.chunk_count() < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    else:
        await asyncio.sleep(0.3)
    writer.close()
    await nothing_stored(server)
    # And the user's upload slots are free again.
    for _ in range(5):
        assert (await upload(alice, png())).status == 201


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of data (a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    )  # fmt: skip


async def test_truncated_undecodable_and_bomb_images_are_refused(small: RunningServer) -> None:
    alice = await join(small, "fi", "rest", online=False)
    cases = [
        (png()[: len(png()) // 2], "truncated"),
        (b"\xff\xd8\xff\xe0" + b"garbage" * 50, "could not be read"),
        (crafted_png(20_000, 20_000), "40,000,000 pixels"),
        (crafted_png(100_000, 100_000), "40,000,000 pixels"),  # past Pillow's own limit too
    ]
    for data, words in cases:
        response = await upload(alice, data, "x.png")
        assert response.status == 400, response.body
        assert response.error_code == "validation_failed"
        assert words in response.body["error"]["message"], response.body
    await nothing_stored(small)


async def test_html_and_svg_dressed_as_images_are_plain_files(small: RunningServer) -> None:
    alice = await join(small, "fi", "rest", online=False)
    bob = await join(small, "fj", "rest", online=False)
    conv = await open_dm(alice, bob)
    html = b"<!doctype html><script>alert(document.cookie)</script>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    for data, name in [(html, "cat.png"), (svg, "logo.svg")]:
        up = await uploaded(alice, data, name)
        assert (up["kind"], up["content_type"]) == ("file", "application/octet-stream")
        assert "width" not in up and "thumbnail_url" not in up
        await send(alice, conv["id"], "", attachments=[up["id"]])
        got = await download(bob, f"/api/files/{up['id']}", auth=True)
        assert got.body == data
        assert got.headers["Content-Type"] == "application/octet-stream"
        assert got.headers["Content-Disposition"].startswith("attachment;")
        assert got.headers["Content-Security-Policy"] == "sandbox"
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        thumb = await download(bob, f"/api/files/{up['id']}/thumbnail", auth=True)
        assert thumb.status == 404


async def test_hostile_names_become_safe_names(small: RunningServer) -> None:
    alice = await join(small, "fi", "rest", online=False)
    long_name = "a" * 300 + ".pdf"
    cases = [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("a\x00b.txt", "ab.txt"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("\u2066x\u2069\u200b.txt", "x.txt"),
        ("..", "file"),
        ("", "file"),
        ('say "hi".txt', "say _hi_.txt"),
    ]
    for raw, expected in cases:
        up = await uploaded(alice, b"plain bytes", raw)
        assert up["name"] == expected, (raw, up["name"])
    up = await uploaded(alice, b"plain bytes", long_name)
    assert len(up["name"]) == 180 and up["name"].endswith("a.pdf")
    got = await download(alice, up["url"])
    disposition = got.headers["Content-Disposition"]
    assert "\n" not in disposition and "\r" not in disposition
    unicode = await uploaded(alice, b"plain bytes", "résumé 2026.txt")
    disposition = (await download(alice, unicode["url"])).headers["Content-Disposition"]
    assert disposition == (
        "attachment; filename=\"r_sum_ 2026.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202026.txt"
    )


async def test_uploads_are_rate_limited_per_user(make_server: ServerFactory) -> None:
    server = await make_server(uploads_per_user=3, upload_window_secs=60.0)
    alice = await join(server, "fi", "rest", online=False)
    bob = await join(server, "fj", "rest", online=False)
    for _ in range(3):
        assert (await upload(alice, b"x")).status == 201
    refused = await upload(alice, b"x")
    assert refused.status == 429 and refused.error_code == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.body["error"]["retry_after"] >= 1
    assert (await upload(bob, b"x")).status == 201  # per user


async def test_uploads_need_a_signed_in_user(small: RunningServer) -> None:
    anonymous = small.client()
    response = await anonymous.request("POST", "/api/uploads?name=a", raw_body=b"abc")
    assert response.status == 401 and response.error_code == "unauthorized"
    wrong = await anonymous.request("GET", "/api/uploads")
    assert wrong.status in (401, 405)
    await nothing_stored(small)


async def test_iso_media_files_are_named_by_their_brand_and_never_shown_inline(
    small: RunningServer,
) -> None:
    alice = await join(small, "fi", "rest", online=False)
    box = b"\x00\x00\x00\x18ftyp"
    for brand, content_type in [(b"heic", "image/heic"), (b"avif", "image/avif"),
                                (b"qt  ", "video/quicktime"), (b"isom", "video/mp4")]:  # fmt: skip
        up = await uploaded(alice, box + brand + b"\x00" * 200, "clip")
        assert (up["kind"], up["content_type"]) == ("file", content_type)
        got = await download(alice, f"/api/files/{up['id']}", auth=True)
        assert got.headers["Content-Type"] == content_type
        assert got.headers["Content-Disposition"].startswith("attachment;")
