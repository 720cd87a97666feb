"""Streamed JSON/NDJSON export of message history: written and flushed batch by batch, so the
server holds one batch at a time whatever the history's size."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from chat import shapes
from chat.conversations import ExportPart
from chat.errors import ValidationFailed
from chat.models import iso
from chat.openapi import JSON, Operation
from chat.validation import Fields, one_of
from handlers.base import ApiHandler, json_dumps

log = logging.getLogger(__name__)

FORMATS = {
    "json": ("application/json; charset=UTF-8", "json"),
    "ndjson": ("application/x-ndjson; charset=UTF-8", "ndjson"),
}


def _filename_part(value: str) -> str:
    """Only what is safe inside a quoted Content-Disposition filename."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", value)


EXPORT_DOCUMENT = shapes.reply(
    exported_at=shapes.TIME,
    user=shapes.ref("UserRef"),
    conversations=shapes.list_of(
        shapes.reply(
            conversation=shapes.obj({"id": {"type": "string"}, "kind": {"type": "string"}}),
            messages=shapes.list_of(shapes.ref("Message")),
        )
    ),
)


def export_operation(what: str) -> Operation:
    """The document's entry for an export of `what` (the two routes differ in scope only)."""
    return Operation(
        f"Download {what} as JSON or NDJSON (streamed)",
        query=Fields({"format": one_of(*FORMATS)}),
        ok={200: {JSON: EXPORT_DOCUMENT, "application/x-ndjson": {"type": "string"}}},
        headers={200: {"Content-Disposition": {"type": "string"}}},
        errors=(404, 503),
        tag="export",
    )


class ExportHandler(ApiHandler):
    """Shared streaming: the access check first (errors are still JSON), then the download."""

    _sent = 0  # characters streamed so far (for the log of an aborted export)

    async def stream(self, conversation_id: str | None) -> None:
        fmt = self.get_query_argument("format", "json")
        if fmt not in FORMATS:
            raise ValidationFailed("format must be 'json' or 'ndjson'.", field="format")
        user, parts = await self.service.export_plan(self.principal, conversation_id)
        content_type, extension = FORMATS[fmt]
        now = datetime.now(UTC)
        scope = conversation_id or "all"
        filename = (
            f"chat-export-{_filename_part(user['username'])}-{_filename_part(scope)}-"
            f"{now.strftime('%Y%m%dT%H%M%SZ')}.{extension}"
        )
        self.set_header("Content-Type", content_type)
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        try:
            await self._write_export(fmt, now, user, parts)
        except Exception:
            if not self._headers_written:
                raise
            # The status line is gone: the only honest signal left is an incomplete body, so
            # close without the final chunk rather than end a truncated file cleanly.
            log.warning("export aborted after %d bytes were sent", self._sent, exc_info=True)
            self.detach().close()

    async def _write_export(
        self, fmt: str, now: datetime, user: dict[str, Any], parts: list[ExportPart]
    ) -> None:
        if fmt == "ndjson":
            for part in parts:
                async for batch in self.service.export_batches(part):
                    await self._send("".join(json_dumps(m) + "\n" for m in batch))
            self.finish()
            return
        head = json_dumps({"exported_at": iso(now), "user": user})
        await self._send(head[:-1] + ',"conversations":[')
        for i, part in enumerate(parts):
            prefix = "," if i else ""
            await self._send(
                f'{prefix}{{"conversation":{json_dumps(part.conversation)},"messages":['
            )
            first = True
            async for batch in self.service.export_batches(part):
                chunk = ",".join(json_dumps(m) for m in batch)
                await self._send(chunk if first else "," + chunk)
                first = False
            await self._send("]}")
        self.finish("]}")

    async def _send(self, chunk: str) -> None:
        self._sent += len(chunk)
        # Awaiting the flush is the back-pressure: a slow reader slows the database reads
        # instead of making the server buffer the history.
        self.write(chunk)
        await self.flush()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # An error before streaming is the usual JSON error (with a JSON content type).
        self.clear_header("Content-Disposition")
        super().write_error(status_code, **kwargs)


class ConversationExportHandler(ExportHandler):
    """GET /api/conversations/{id}/export: one conversation, as far as the caller may read."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": export_operation("one conversation the caller may read")
    }

    async def get(self, conversation_id: str) -> None:
        await self.stream(conversation_id)


class AllExportHandler(ExportHandler):
    """GET /api/export: every conversation the caller is or was a member of."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": export_operation("every conversation the caller is or was a member of")
    }

    async def get(self) -> None:
        await self.stream(None)
