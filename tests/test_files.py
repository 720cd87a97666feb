"""Attachments over real HTTP and a real database: round trips of each kind (metadata
stripped, animation kept, bytes equal), ranges and ETags, and messages that carry files in
message.new, history, the conversation list and both exports."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from PIL import Image

from tests.conftest import RunningServer
from tests.files_helpers import (
    GPS_IFD,
    animated_gif,
    download,
    jpeg_with_gps,
    pdf,
    png,
    sha256,
    upload,
    uploaded,
    webp,
    zip_file,
)
from tests.test_conversations import TRANSPORTS, Member, history, join, open_dm, send


async def pair(server: RunningServer, transport: str = "rest") -> tuple[Member, Member, str]:
    alice = await join(server, "fa", transport)
    bob = await join(server, "fb", transport)
    conv = await open_dm(alice, bob)
    return alice, bob, conv["id"]


async def test_png_round_trip_with_thumbnail(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    up = await uploaded(alice, png(1280, 640), "holiday.png")
    assert (up["kind"], up["content_type"], up["width"], up["height"]) == (
        "image", "image/png", 1280, 640,
    )  # fmt: skip
    assert up["name"] == "holiday.png" and len(up["sha256"]) == 64
    message = await send(alice, cid, "look", attachments=[up["id"]])
    [att] = (await bob.event("message.new"))["message"]["attachments"]
    assert {k: att[k] for k in ("id", "name", "size", "kind", "width", "height")} == {
        "id": up["id"], "name": "holiday.png", "size": up["size"], "kind": "image",
        "width": 1280, "height": 640,
    }  # fmt: skip
    assert message["attachments"][0]["id"] == up["id"]
    got = await download(bob, att["url"])
    assert got.status == 200 and sha256(got.body) == up["sha256"]
    assert Image.open(io.BytesIO(got.body)).size == (1280, 640)
    thumb = await download(bob, att["thumbnail_url"])
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.body)).size == (320, 160)
    assert got.headers["Content-Disposition"].startswith("inline;")


async def test_jpeg_loses_its_gps_exif_and_comment(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    original = jpeg_with_gps()
    before = Image.open(io.BytesIO(original))
    assert before.getexif().get_ifd(GPS_IFD) and before.info.get("comment")
    up = await uploaded(alice, original, "me.jpg")
    await send(alice, cid, "", attachments=[up["id"]])
    att = (await history(bob, cid))["messages"][-1]["attachments"][0]
    got = await download(bob, att["url"])
    assert sha256(got.body) == up["sha256"] != sha256(original)
    after = Image.open(io.BytesIO(got.body))
    assert after.format == "JPEG" and after.size == (800, 600)
    assert not after.getexif() and "exif" not in after.info and "comment" not in after.info
    assert b"PhoneMaker" not in got.body and b"taken at home" not in got.body


async def test_webp_loses_its_exif(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    up = await uploaded(alice, webp(), "pic.webp")
    assert (up["kind"], up["content_type"]) == ("image", "image/webp")
    await send(alice, cid, "w", attachments=[up["id"]])
    att = (await bob.event("message.new"))["message"]["attachments"][0]
    after = Image.open(io.BytesIO((await download(bob, att["url"])).body))
    assert after.format == "WEBP" and after.size == (500, 300)
    assert "exif" not in after.info and not after.getexif()


async def test_animated_gif_keeps_every_frame(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    original = animated_gif(frames=7)
    up = await uploaded(alice, original, "dance.gif")
    assert (up["kind"], up["content_type"]) == ("gif", "image/gif")
    await send(alice, cid, "", attachments=[up["id"]])
    att = (await bob.event("message.new"))["message"]["attachments"][0]
    got = await download(bob, att["url"])
    assert got.body == original  # a GIF is stored as it came
    assert Image.open(io.BytesIO(got.body)).n_frames == 7
    thumb_got = await download(bob, att["thumbnail_url"])
    assert thumb_got.headers["Content-Disposition"].endswith("dance.gif.thumbnail.webp")
    thumb = Image.open(io.BytesIO(thumb_got.body))
    assert thumb.format == "WEBP" and getattr(thumb, "n_frames", 1) == 1


async def test_a_gif_loses_its_comments_and_xmp_and_keeps_frames_timing_and_loop(
    server: RunningServer,
) -> None:
    frames = [Image.new("RGB", (60, 40), (i * 60, 90, 200 - i * 50)) for i in range(4)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0,
                   comment=b"shot at 12 Home Street")  # fmt: skip
    plain = out.getvalue()
    assert b"12 Home Street" in plain
    xmp = b"\x21\xff\x0bXMP DataXMP" + b"\x10<x:xmpmeta GPS/>" + b"\x00"
    at = plain.index(b"\x21\xf9\x04")  # before the first frame's graphic control
    original = plain[:at] + xmp + plain[at:]
    alice, bob, cid = await pair(server)
    up = await uploaded(alice, original, "where.gif")
    await send(alice, cid, "", attachments=[up["id"]])
    att = (await bob.event("message.new"))["message"]["attachments"][0]
    got = (await download(bob, att["url"])).body
    assert b"Home Street" not in got and b"xmpmeta" not in got
    assert up["size"] == len(got) < len(original) and up["sha256"] == sha256(got)
    before, after = Image.open(io.BytesIO(original)), Image.open(io.BytesIO(got))
    assert after.n_frames == before.n_frames == 4 and after.info["loop"] == 0
    for n in range(4):
        before.seek(n)
        after.seek(n)
        assert after.info["duration"] == 120
        assert after.convert("RGB").tobytes() == before.convert("RGB").tobytes()


@pytest.mark.parametrize(
    ("maker", "name", "content_type"),
    [(pdf, "report.pdf", "application/pdf"), (zip_file, "archive.zip", "application/zip")],
)
async def test_files_round_trip_byte_for_byte_with_ranges(
    server: RunningServer, maker: Any, name: str, content_type: str
) -> None:
    alice, bob, cid = await pair(server)
    data = maker()
    up = await uploaded(alice, data, name)
    assert (up["kind"], up["content_type"], up["size"]) == ("file", content_type, len(data))
    assert up["sha256"] == sha256(data) and "width" not in up and "thumbnail_url" not in up
    await send(alice, cid, "the file", attachments=[up["id"]])
    att = (await bob.event("message.new"))["message"]["attachments"][0]
    assert "thumbnail_url" not in att
    got = await download(bob, att["url"])
    assert got.status == 200 and got.body == data
    assert got.headers["Content-Type"] == content_type
    assert got.headers["Content-Disposition"].startswith("attachment;")
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Security-Policy"] == "sandbox"
    assert got.headers["Cache-Control"].startswith("private")
    size = len(data)
    for header, start, expected in [
        ("bytes=0-9", 0, data[:10]),
        (f"bytes={size - 20}-", size - 20, data[-20:]),
        ("bytes=-7", size - 7, data[-7:]),
        (f"bytes=5-{size + 100}", 5, data[5:]),
    ]:
        part = await download(bob, att["url"], Range=header)
        assert part.status == 206, (header, part.status)
        assert part.body == expected, header
        assert part.headers["Content-Range"] == f"bytes {start}-{start + len(expected) - 1}/{size}"
    outside = await download(bob, att["url"], Range=f"bytes={size}-")
    assert outside.status == 416 and outside.headers["Content-Range"] == f"bytes */{size}"
    assert json.loads(outside.body)["error"]["code"] == "range_not_satisfiable"
    # ETag: a second read of an unchanged file costs no bytes.
    etag = got.headers["Etag"]
    assert etag == f'"{sha256(data)}"'
    again = await download(bob, att["url"], **{"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    # If-Range with another validator: the whole file, not a piece of a different one.
    whole = await download(bob, att["url"], Range="bytes=0-9", **{"If-Range": '"other"'})
    assert whole.status == 200 and whole.body == data
    # With the Authorization header and no signature, as an API client would.
    plain = await download(bob, f"/api/files/{up['id']}", auth=True)
    assert plain.status == 200 and plain.body == data


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_message_of_attachments_only_everywhere_it_shows(
    server: RunningServer, transport: str
) -> None:
    alice, bob, cid = await pair(server, transport)
    ups = [await uploaded(alice, png(40 + i, 30), f"p{i}.png") for i in range(3)]
    message = await send(alice, cid, "   ", attachments=[u["id"] for u in ups])
    assert message["body"] == ""
    assert [a["id"] for a in message["attachments"]] == [u["id"] for u in ups]
    event = (await bob.event("message.new"))["message"]
    assert [a["name"] for a in event["attachments"]] == ["p0.png", "p1.png", "p2.png"]
    # Each reader gets URLs signed for itself.
    assert event["attachments"][0]["url"] != message["attachments"][0]["url"]
    assert f"u={bob.id}" in event["attachments"][0]["url"]
    page = await history(bob, cid)
    assert page["messages"][-1]["attachments"][1]["width"] == 41
    listed = (await bob.call("conversations.list")).expect()["conversations"]
    assert len(listed[0]["last_message"]["attachments"]) == 3
    # The retried send (same client_msg_id) returns the stored message, files and all.
    again = await send(
        alice, cid, "", attachments=[u["id"] for u in ups], client_msg_id=message["client_msg_id"]
    )
    assert again["id"] == message["id"] and len(again["attachments"]) == 3


async def test_exports_carry_metadata_and_paths_not_bytes(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    up = await uploaded(alice, zip_file(2000), "a.zip")
    await send(alice, cid, "see", attachments=[up["id"]])
    one = await bob.api.get(f"/api/conversations/{cid}/export")
    [message] = one.body["conversations"][0]["messages"]
    [att] = message["attachments"]
    assert att["url"] == f"/api/files/{up['id']}" and att["size"] == up["size"]
    assert att["name"] == "a.zip" and "sig=" not in json.dumps(one.body)
    line = (await bob.api.get("/api/export?format=ndjson")).body  # one message: one line
    assert line["attachments"][0]["url"] == f"/api/files/{up['id']}"
    assert (await download(bob, att["url"], auth=True)).status == 200


async def test_attachment_rules_on_send(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    mine = await uploaded(alice, pdf(), "a.pdf")
    theirs = await uploaded(bob, pdf(), "b.pdf")
    # Someone else's upload, an unknown id, too many, no body and no files.
    for ids in ([theirs["id"]], ["6b0000000000000000000000"], [mine["id"]] * 1 + ["x" * 24]):
        result = await alice.call("messages.send", conversation_id=cid, body="x", attachments=ids)
        result.fails(400, "validation_failed", "attachments")
    many = [(await uploaded(alice, pdf(), f"{i}.pdf"))["id"] for i in range(11)]
    (await alice.call("messages.send", conversation_id=cid, attachments=many)).fails(
        400, "validation_failed", "attachments"
    )
    (await alice.call("messages.send", conversation_id=cid, body=" ")).fails(
        400, "validation_failed", "body"
    )
    (await alice.call("messages.send", conversation_id=cid, attachments=[])).fails(
        400, "validation_failed", "body"
    )
    # A refused send left the file free: it goes with the next message, then with no other.
    await send(alice, cid, "", attachments=[mine["id"]])
    again = await alice.call("messages.send", conversation_id=cid, attachments=[mine["id"]])
    again.fails(400, "validation_failed", "attachments")
    # Ten at once is the limit.
    await send(alice, cid, "", attachments=many[:10])


async def test_messages_without_files_keep_their_shape(server: RunningServer) -> None:
    alice, bob, cid = await pair(server)
    message = await send(alice, cid, "plain")
    assert "attachments" not in message
    assert "attachments" not in (await bob.event("message.new"))["message"]
    doc = await server.store.db["messages"].find_one({"client_msg_id": message["client_msg_id"]})
    assert doc is not None and "attachments" not in doc


async def test_orphans_are_deleted_after_a_day_and_attached_files_kept(
    server: RunningServer,
) -> None:
    alice, bob, cid = await pair(server)
    orphan = await uploaded(alice, png(), "o.png")
    kept = await uploaded(alice, pdf(), "k.pdf")
    await send(alice, cid, "", attachments=[kept["id"]])
    files = server.store.files
    assert await server.service.delete_orphans() == 0  # younger than a day
    stored = await files.count()
    assert await server.service.delete_orphans(older_than=timedelta(0)) == 1
    assert await files.count() == stored - 2  # the orphan and its thumbnail
    assert await files.get(orphan["id"]) is None
    got = await download(bob, f"/api/files/{kept['id']}", auth=True)
    assert got.status == 200 and got.body == pdf()
    assert (await upload(alice, b"")).status == 400


async def test_chunks_of_an_upload_the_server_never_finished_are_swept_after_a_day(
    server: RunningServer,
) -> None:
    # What a server killed half way through an upload leaves: chunks, no file document.
    chunks = server.store.db["uploads.chunks"]
    old = ObjectId.from_datetime(datetime.now(UTC) - timedelta(hours=25))
    recent = ObjectId()  # an upload under way now: not touched
    await chunks.insert_many(
        [{"files_id": oid, "n": n, "data": b"x" * 10} for oid in (old, recent) for n in (0, 1)]
    )
    alice, _, _ = await pair(server)
    finished = await uploaded(alice, pdf(), "k.pdf")
    assert await server.service.delete_orphans() == 1
    assert await chunks.count_documents({"files_id": old}) == 0
    assert await chunks.count_documents({"files_id": recent}) == 2
    assert await server.store.files.get(finished["id"]) is not None
    await chunks.delete_many({"files_id": recent})


async def test_the_sweep_leaves_a_file_to_the_send_that_just_claimed_it(
    server: RunningServer,
) -> None:
    alice, bob, cid = await pair(server)
    up = await uploaded(alice, pdf(), "late.pdf")
    # A send under way: the file is claimed for its key, the message not stored yet.
    files = server.store.files
    assert await files.claim([up["id"]], alice.id, "late-key", cid) == 1
    assert await server.service.delete_orphans(older_than=timedelta(0)) == 0
    message = await send(alice, cid, "", attachments=[up["id"]], client_msg_id="late-key")
    assert [a["id"] for a in message["attachments"]] == [up["id"]]
    got = await download(bob, f"/api/files/{up['id']}", auth=True)
    assert got.status == 200 and got.body == pdf()
