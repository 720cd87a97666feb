"""JSON in and out, the contract's error shape, and bearer-token auth in prepare()."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tornado.web

from chat.e2e import DEVICE_OF_SESSION, for_session
from chat.errors import ChatError, NotFound, RateLimited, TooLarge
from chat.events import Event, Item
from chat.logs import USER_ID
from chat.metrics import REST
from chat.validation import decode_json

if TYPE_CHECKING:
    from chat.commands import Principal
    from chat.service import ChatService

log = logging.getLogger(__name__)

MAX_JSON_BODY_BYTES = 1024 * 1024  # the contract's request body limit

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")  # what a 405's Allow may name
# Codes for failures that do not come from a ChatError (Tornado's own HTTPErrors).
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    429: "rate_limited",
    503: "database_unavailable",
}


def json_dumps(value: Any) -> str:
    """Compact JSON; '</' escaped so a body can never close a script tag."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/")


# Events published at about the same time: a fan-out, then the long-polls it woke, which
# read it a moment later (other events may be encoded in between).
ENCODED_EVENTS_KEPT = 256


class EventEncoder:
    """The JSON of recent events, each encoded once however many sockets and polls deliver
    it: an event is one dict shared by every queue it was published to, never mutated."""

    __slots__ = ("_recent",)

    def __init__(self) -> None:
        # id(event) -> (event, its JSON). Holding the event keeps its id from being reused.
        self._recent: dict[int, tuple[Event, bytes]] = {}

    def encode(self, event: Event) -> bytes:
        """json_dumps(event) as UTF-8."""
        recent = self._recent
        hit = recent.get(id(event))
        if hit is not None and hit[0] is event:
            return hit[1]
        data = json_dumps(event).encode()
        if len(recent) >= ENCODED_EVENTS_KEPT:
            del recent[next(iter(recent))]  # the oldest: dicts keep insertion order
        recent[id(event)] = (event, data)
        return data

    def encode_for(self, event: Event, session_id: str) -> bytes:
        """The event's JSON as this session receives it: shared, except an encrypted
        message.new, which each session gets with its own device's envelope (chat/e2e.py)."""
        if DEVICE_OF_SESSION in event:
            return json_dumps(for_session(event, session_id)).encode()
        return self.encode(event)

    def event_frame(self, event_id: int, event: Event, session_id: str) -> bytes:
        """The WebSocket frame of a queued event: json_dumps({"type": "event", "id": ...,
        "event": ...}), built around the event's shared JSON."""
        data = self.encode_for(event, session_id)
        return b'{"type":"event","id":%d,"event":%b}' % (event_id, data)

    def poll_body(self, queue_id: str, items: list[Item], session_id: str) -> bytes:
        """A long-poll response: json_dumps({"queue_id": ..., "events": items}), likewise."""
        encode = self.encode_for
        events = b",".join(
            b'{"id":%d,"event":%b}' % (item["id"], encode(item["event"], session_id))
            for item in items
        )
        return b'{"queue_id":%b,"events":[%b]}' % (json_dumps(queue_id).encode(), events)


class JsonHandler(tornado.web.RequestHandler):
    """Every /api/* handler: JSON responses and errors, never HTML or a traceback."""

    service: ChatService
    transport = REST  # the errors' label in the metrics

    def initialize(self, service: ChatService) -> None:
        self.service = service

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def check_xsrf_cookie(self) -> None:
        """Bearer tokens, not cookies, authenticate the API: there is no CSRF to guard."""

    def json_body(self) -> Any:
        """The parsed request body ({} when empty); 413 when too big; 400 when it is not JSON
        (white space alone is not) or breaks the contract's limits on JSON (see decode_json)."""
        body = self.request.body
        if len(body) > MAX_JSON_BODY_BYTES:
            raise TooLarge("The request body is larger than 1 MiB.")
        if not body:
            return {}
        return decode_json(body, "request body")

    def query_args(self) -> dict[str, str]:
        """The query string as a flat dict (last value wins)."""
        return {name: self.get_query_argument(name) for name in self.request.query_arguments}

    def allowed_methods(self) -> list[str]:
        """The methods this path answers (a 405's Allow): those the handler implements."""
        base = tornado.web.RequestHandler
        return [
            m for m in METHODS if getattr(type(self), m.lower()) is not getattr(base, m.lower())
        ]

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json_dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, ChatError):
            self.set_status(exc.status)
            if isinstance(exc, RateLimited):
                self.set_header("Retry-After", str(exc.retry_after))
            body = exc.to_dict()
        else:
            if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            else:
                message = (
                    HTTPStatus(status_code).phrase
                    if status_code in HTTPStatus._value2member_map_
                    else "Error"
                )
            code = STATUS_CODES.get(status_code, "internal_error")
            body = {"error": {"code": code, "message": message}}
        if status_code == 405:  # RFC 9110: a 405 says what would have been allowed
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.service.metrics.error(body["error"]["code"], self.transport)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json_dumps(body))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, ChatError):
            log.debug(
                "%s %s -> %s %s", self.request.method, self.request.path, value.status, value.code
            )
            return
        super().log_exception(typ, value, tb)


class ApiHandler(JsonHandler):
    """An authenticated endpoint: prepare() turns the bearer token into self.principal."""

    principal: Principal

    async def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        self.principal = await self.service.authenticate(
            token.strip() if scheme.lower() == "bearer" else None, address=self.request.remote_ip
        )
        USER_ID.set(self.principal.user_id)  # this request's log lines name the user


class ApiNotFoundHandler(JsonHandler):
    """Any unknown /api/* path: a JSON 404 whatever the method."""

    def prepare(self) -> None:
        raise NotFound(f"No API endpoint at {self.request.path}.")
