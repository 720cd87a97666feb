"""Log lines as JSON (--log-format json), and the request each line belongs to.

One JSON object per line: time, level, logger, message, and, when the line is written while a
request is handled, its request id and the signed-in user's id. An access line adds the
request's method, path, status, duration and client address. What the message says is what the
text format says: the same redaction applies (no token and no queue id; no password is ever
logged), since both formats render the same records.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

# Set by the HTTP layer for the request being handled; read by the formatter. Context
# variables follow the request into the tasks it starts (a WebSocket's frames run in tasks
# started while its upgrade was handled, so they keep that request's id).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chat_request_id", default=None
)
USER_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("chat_user_id", default=None)

# Attributes a record may carry through logging's `extra`: the access line's fields.
HTTP_FIELD = "http"
REQUEST_ID_FIELD = "request_id"
USER_ID_FIELD = "user_id"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (newlines inside strings are escaped, so a
    traceback stays on its line)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }  # fmt: skip
        request_id = getattr(record, REQUEST_ID_FIELD, None) or REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        user_id = getattr(record, USER_ID_FIELD, None) or USER_ID.get()
        if user_id:
            line["user_id"] = user_id
        http = getattr(record, HTTP_FIELD, None)
        if isinstance(http, dict):
            line.update(http)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of --log-format: "json" (JsonFormatter) or "text" (the default)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
