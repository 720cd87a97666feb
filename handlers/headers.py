"""What every response carries, whatever handler wrote it: its request id, and over https the
Strict-Transport-Security header.

An output transform (Tornado builds one per request, before the handler runs) is the one place
every response passes through: API, pages, static files, the WebSocket upgrade, Tornado's own
404s and 500s.
"""

from __future__ import annotations

import re
import secrets

import tornado.httputil
import tornado.web

from chat.logs import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-Id"
# A proxy's id is kept when it is short and plain (nginx's $request_id is 32 hex digits);
# anything else is replaced, so that no client text reaches a log line through it.
FORWARDED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=@-]{1,128}")
REQUEST_ID_BYTES = 8  # 16 hex digits: unique enough to find one request in a day's logs
# A year, the value browsers' preload lists ask for; no includeSubDomains: other hosts of
# the domain are not ours to decide.
HSTS = "max-age=31536000"


def new_request_id() -> str:
    """A fresh request id."""
    return secrets.token_hex(REQUEST_ID_BYTES)


def forwarded_request_id(headers: tornado.httputil.HTTPHeaders) -> str | None:
    """The X-Request-Id a trusted proxy sent, if it is one we keep."""
    value = headers.get(REQUEST_ID_HEADER, "").strip()
    return value if FORWARDED_REQUEST_ID.fullmatch(value) else None


def request_id(request: tornado.httputil.HTTPServerRequest) -> str | None:
    """The id ResponseHeaders gave this request (None before it ran)."""
    value = getattr(request, "chat_request_id", None)
    return value if isinstance(value, str) else None


class ResponseHeaders(tornado.web.OutputTransform):
    """Gives the request its id (the trusted proxy's, see handlers/proxy.py, or a new one),
    makes it the log context's, and adds X-Request-Id (and HSTS over https) to the response."""

    def __init__(self, request: tornado.httputil.HTTPServerRequest) -> None:
        context = getattr(request.connection, "context", None)
        rid = getattr(context, "forwarded_request_id", None) or new_request_id()
        request.chat_request_id = rid  # type: ignore[attr-defined]
        self.request_id = rid
        # Over https as the client sees it: TLS here, or a trusted proxy's X-Forwarded-Proto.
        self.https = request.protocol == "https"
        REQUEST_ID.set(rid)

    def transform_first_chunk(
        self,
        status_code: int,
        headers: tornado.httputil.HTTPHeaders,
        chunk: bytes,
        finishing: bool,
    ) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        headers[REQUEST_ID_HEADER] = self.request_id
        if self.https:
            headers["Strict-Transport-Security"] = HSTS
        return status_code, headers, chunk
