"""What the server logs about requests: never a credential, and one line per request only when
asked for.

A token may come on a URL (`/ws?token=…`), and a queue id with its epoch is enough to resume a
client's queue: neither may be written to a log. The access log (one line per request) is at
DEBUG unless the operator turns it on (`--access-log`): at INFO it buried the start-up lines
under a thousand lines in minutes of ordinary use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import unquote_plus

import tornado.web

from chat.logs import HTTP_FIELD, REQUEST_ID_FIELD, USER_ID_FIELD
from handlers.headers import request_id

access_log = logging.getLogger("tornado.access")

# Query arguments whose values are secrets: a session token, a queue id (with the epoch from
# the same hello it resumes someone's queue), a password (it belongs in the body, but a
# DELETE's fields may come as a query). Their values are logged as REDACTED.
SECRET_QUERY_ARGS = frozenset(
    {"token", "queue_id", "sig", "password", "current_password", "new_password"}
)
REDACTED = "***"
# A query argument anywhere in a log message (Tornado's own error lines quote the URI, and
# the request's repr).
QUERY_ARG_IN_TEXT = re.compile(r"([?&])([^=&?\s'\"#]+)=([^&\s'\"#]*)")


def _redact_arg(match: re.Match[str]) -> str:
    sep, name, _ = match.groups()
    # Decoded as Tornado decodes it: "%74oken" is the token argument too.
    if unquote_plus(name).strip().lower() in SECRET_QUERY_ARGS:
        return f"{sep}{name}={REDACTED}"
    return match.group(0)


def redact_text(text: str) -> str:
    """The text with the values of SECRET_QUERY_ARGS in any URI in it replaced by REDACTED."""
    return QUERY_ARG_IN_TEXT.sub(_redact_arg, text)


def redact_uri(uri: str) -> str:
    """The URI with the values of SECRET_QUERY_ARGS replaced by REDACTED."""
    path, sep, query = uri.partition("?")
    if not sep:
        return uri
    items = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        secret = unquote_plus(name).strip().lower() in SECRET_QUERY_ARGS
        items.append(f"{name}={REDACTED}" if secret and eq else item)
    return f"{path}?{'&'.join(items)}"


def access_logger(enabled: bool) -> Callable[[tornado.web.RequestHandler], None]:
    """The application's log_function: one line per request, its URI redacted; at INFO (4xx
    at WARNING, 5xx at ERROR) when enabled, else at DEBUG (shown by --debug only). The
    line's fields (method, path, status, duration, client, request and user id) go with it
    for the JSON format (chat/logs.py)."""

    def log_request(handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        if not enabled:
            level = logging.DEBUG
        elif status < 400:
            level = logging.INFO
        elif status < 500:
            level = logging.WARNING
        else:
            level = logging.ERROR
        if not access_log.isEnabledFor(level):
            return
        request = handler.request
        uri = redact_uri(request.uri or "")
        duration_ms = 1000.0 * request.request_time()
        principal = getattr(handler, "principal", None)  # API handlers and sockets have one
        fields = {
            REQUEST_ID_FIELD: request_id(request),
            USER_ID_FIELD: getattr(principal, "user_id", None),
            HTTP_FIELD: {
                "method": request.method, "path": uri, "status": status,
                "duration_ms": round(duration_ms, 2), "client": request.remote_ip,
            },
        }  # fmt: skip
        access_log.log(
            level, "%d %s %s (%s) %.2fms", status, request.method, uri, request.remote_ip,
            duration_ms, extra=fields,
        )  # fmt: skip

    return log_request


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message quotes a secret query argument (Tornado's lines for an
    uncaught exception or an HTTP error carry the request's URI)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


REDACT_SECRETS = RedactSecrets()  # stateless: one instance, so installing twice is a no-op


def install_log_redaction() -> None:
    """Put RedactSecrets on Tornado's loggers that quote requests (idempotent)."""
    for name in ("tornado.access", "tornado.application", "tornado.general"):
        logging.getLogger(name).addFilter(REDACT_SECRETS)
