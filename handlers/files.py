"""Attachments over HTTP: POST /api/uploads streams the body into the core's Upload as it
arrives; GET /api/files/{id}[/thumbnail] streams a file out of GridFS, with ranges, ETags and
headers that keep a hostile file from running as a page."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, ClassVar

import tornado.web
from tornado.http1connection import HTTP1Connection

from chat import shapes
from chat.attachments import Upload
from chat.errors import (
    ChatError,
    LengthRequired,
    NotFound,
    RangeNotSatisfiable,
    ValidationFailed,
)
from chat.files import content_disposition
from chat.openapi import JSON, Operation
from chat.store.files import StoredFile
from chat.validation import Fields
from handlers.base import ApiHandler, JsonHandler

log = logging.getLogger(__name__)

FILE_CACHE = "private, max-age=3600"  # a file's bytes never change under its id
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@tornado.web.stream_request_body
class UploadHandler(ApiHandler):
    """POST /api/uploads?name=...: the raw file as the body, never held whole in memory."""

    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation(
            "Upload a file (the raw bytes as the body) to attach to a message",
            query=Fields(
                {
                    "name": {"type": "string", "description": "the file's name"},
                    "encrypted": {
                        "type": "string",
                        "enum": ["true", "false"],
                        "description": "true: ciphertext for an encrypted conversation, kept "
                        "without its name or type (docs/e2e.md)",
                    },
                }
            ),
            body={"application/octet-stream": {"type": "string", "format": "binary"}},
            ok={201: {JSON: shapes.reply(upload=shapes.ref("Attachment"))}},
            errors=(400, 413, 429, 503),
            tag="files",
        )
    }

    upload: Upload | None = None
    _failed: ChatError | None = None
    _released = False

    async def prepare(self) -> None:
        await super().prepare()  # the bearer token, as every endpoint
        if self.request.method != "POST":
            raise tornado.web.HTTPError(405, "Method not allowed here.")
        declared = self.request.headers.get("Content-Length")
        size = int(declared) if declared and declared.isdigit() else None
        if size is None:  # chunked: its size known only once read, past the limit maybe
            raise LengthRequired(
                "An upload needs a Content-Length header: send the file itself as the body."
            )
        # Refused here (too large, too many) before a byte of the body is read.
        # The name as sent (Tornado's accessor turns control characters into spaces; the core
        # drops them, and more).
        raw = self.request.query_arguments.get("name")
        name = raw[-1].decode("utf-8", "replace") if raw else None
        flag = self.request.query_arguments.get("encrypted", [b"false"])[-1]
        if flag not in (b"true", b"false"):
            raise ValidationFailed("encrypted must be true or false.", field="encrypted")
        self.upload = self.service.begin_upload(self.principal, name, size, flag == b"true")
        # The server's cap on bodies is for JSON; an upload has its own.
        connection = self.request.connection
        if isinstance(connection, HTTP1Connection):
            connection.set_max_body_size(self.service.settings.max_upload_bytes)

    async def data_received(self, chunk: bytes) -> None:
        if self.upload is None or self._failed is not None:
            return
        try:
            await self.upload.write(chunk)  # awaited: the next piece is read after this one
        except ChatError as exc:  # raised from post(): an exception here would only be logged
            self._failed = exc

    async def post(self) -> None:
        assert self.upload is not None
        if self._failed is not None:
            raise self._failed
        reply = await self.upload.finish()
        self.write_json(reply, status=201)

    def on_connection_close(self) -> None:
        # Cut off half way: what was written goes (the core serializes this after the write
        # under way).
        if self.upload is not None:
            task = asyncio.ensure_future(self.upload.abort())
            self.application.settings["chat_background"].add(task)
            task.add_done_callback(self.application.settings["chat_background"].discard)
        self._release()

    def on_finish(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.upload is not None and not self._released:
            self._released = True
            self.service.end_upload(self.principal)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single byte range; None to send the whole file (no range,
    several, or one we do not understand); ValueError when it cannot be satisfied."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            raise ValueError("empty suffix")
        return max(0, size - count), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        raise ValueError("outside the file")
    return start, end


class FileHandler(JsonHandler):
    """GET /api/files/{id} and /api/files/{id}/thumbnail: with a signed URL's query or an
    Authorization header; 404 for anyone who may not read it."""

    operations: ClassVar[dict[str, Operation]] = {
        method: Operation(
            "A file's bytes (or its thumbnail's), by a signed URL (u, exp, sig) or a token",
            query=Fields(
                {"u": {"type": "string"}, "exp": {"type": "string"}, "sig": {"type": "string"}}
            ),
            ok={200: {"*/*": {}}, 206: {"*/*": {}}, 304: {}},
            errors=(404, 416, 503),
            optional_auth=True,
            tag="files",
        )
        for method in ("get", "head")
    }

    async def _reader(self, file_id: str, variant: str) -> str:
        signature = self.get_query_argument("sig", None)
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
        if signature is None:
            return (await self.service.authenticate(bearer)).user_id
        user_id = self.service.signed_reader(
            file_id,
            variant,
            self.get_query_argument("u", ""),
            self.get_query_argument("exp", ""),
            signature,
        )
        if bearer and (await self.service.authenticate(bearer)).user_id != user_id:
            raise NotFound("No such file.")  # someone else's URL
        return user_id

    async def get(self, file_id: str, variant: str = "file") -> None:
        await self._serve(file_id, variant, body=True)

    async def head(self, file_id: str, variant: str = "file") -> None:
        await self._serve(file_id, variant, body=False)

    async def _serve(self, file_id: str, variant: str, *, body: bool) -> None:
        user_id = await self._reader(file_id, variant)
        upload = await self.service.access_file(user_id, file_id)
        target: StoredFile | None = upload
        if variant == "thumbnail":
            target = None
            if upload.thumbnail_id is not None:
                target = await self.service.store.files.get(upload.thumbnail_id)
            if target is None:
                raise NotFound("This file has no thumbnail.")
        assert target is not None
        etag = f'"{target.sha256}"'
        inline = upload.kind in ("image", "gif") or variant == "thumbnail"
        self.set_header("Content-Type", target.content_type)
        self.set_header("Cache-Control", FILE_CACHE)
        self.set_header("ETag", etag)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("Content-Security-Policy", "sandbox")
        self.set_header("Cross-Origin-Resource-Policy", "same-origin")
        # A thumbnail is WebP whatever the original was: its name says so.
        name = target.name if variant == "thumbnail" else upload.name
        self.set_header("Content-Disposition", content_disposition(name, inline=inline))
        if etag in _etags(self.request.headers.get("If-None-Match")):
            self.set_status(304)
            self.finish()
            return
        size = target.size
        wanted = self.request.headers.get("Range")
        if_range = self.request.headers.get("If-Range")
        if if_range is not None and if_range.strip() != etag:
            wanted = None  # the file changed (or is not the one the client had): all of it
        try:
            span = parse_range(wanted, size)
        except ValueError:
            raise RangeNotSatisfiable(size) from None
        start, end = span if span is not None else (0, size)
        if span is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.set_header("Content-Length", str(end - start))
        if not body or end == start:
            self.finish()
            return
        try:
            async for chunk in self.service.store.files.read_chunks(target.id, start, end - start):
                self.write(chunk)
                await self.flush()  # the client's pace: one chunk in memory at a time
        except Exception:
            if not self._headers_written:
                raise
            log.warning("download of %s cut off", target.id, exc_info=True)
            self.detach().close()
            return
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # The headers were reset to the defaults (JSON, no-store) before this.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, RangeNotSatisfiable):
            self.set_header("Content-Range", f"bytes */{exc.size}")
        super().write_error(status_code, **kwargs)


def _etags(header: str | None) -> set[str]:
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
