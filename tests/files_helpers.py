"""Shared by the attachment tests: files made on the spot, uploads and raw downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
from typing import Any
from urllib.parse import quote

import tornado.httpclient
from PIL import Image

from tests.client import Response
from tests.test_conversations import Member


def png(width: int = 640, height: int = 480) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    for x in range(0, width, 16):
        image.putpixel((x, x % height), (0, 0, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


GPS_IFD = 0x8825


def jpeg_with_gps(width: int = 800, height: int = 600) -> bytes:
    image = Image.new("RGB", (width, height), (30, 120, 200))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 8.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), comment=b"taken at home", quality=85)
    return out.getvalue()


def webp(width: int = 500, height: int = 300) -> bytes:
    image = Image.new("RGB", (width, height), (10, 200, 90))
    exif = Image.Exif()
    exif[GPS_IFD] = {1: "N", 2: (1.0, 2.0, 3.0)}
    out = io.BytesIO()
    image.save(out, "WEBP", exif=exif.tobytes(), quality=80)
    return out.getvalue()


def animated_gif(frames: int = 5, size: int = 120) -> bytes:
    images = [
        Image.new("RGB", (size, size), (i * 30 % 256, 80, 200 - i * 20 % 200))
        for i in range(frames)
    ]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    return out.getvalue()


def pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
    )


def zip_file(size: int = 3 * 1024 * 1024) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("random.bin", os.urandom(size))
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(member: Member, data: bytes, name: str = "file.bin", **headers: str) -> Response:
    """POST /api/uploads with the bytes as the body."""
    return await member.api.request(
        "POST",
        f"/api/uploads?name={quote(name, safe='')}",
        raw_body=data,
        headers={"Content-Type": "application/octet-stream", **headers},
    )


async def uploaded(member: Member, data: bytes, name: str = "file.bin") -> dict[str, Any]:
    response = await upload(member, data, name)
    assert response.status == 201, response.body
    upload_: dict[str, Any] = response.body["upload"]
    return upload_


@dataclasses.dataclass
class Download:
    status: int
    body: bytes
    headers: tornado.httputil.HTTPHeaders


async def download(
    member: Member | None, url: str, *, base: str | None = None, auth: bool = False,
    **headers: str,
) -> Download:  # fmt: skip
    """GET a file (a signed url as given, or with the member's token when auth)."""
    assert member is not None or base is not None
    root = base or member.server.base_url  # type: ignore[union-attr]
    all_headers = dict(headers)
    if auth and member is not None:
        all_headers["Authorization"] = f"Bearer {member.token}"
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(
            root + url, headers=all_headers, raise_error=False, request_timeout=60
        )
    finally:
        client.close()
    return Download(response.code, response.body or b"", response.headers)
