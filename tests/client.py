"""Real HTTP and WebSocket clients for the tests, with small conveniences."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import ssl
from typing import Any

import tornado.httpclient
import tornado.websocket

# Every token and queue id the tests' clients saw, for the suite-wide scan of the logs
# (tests/conftest.py): none of them may appear in any log line of the run.
SECRETS: set[str] = set()
SECRET_KEYS = ("token", "queue_id")


def note_secrets(value: Any, depth: int = 0) -> None:
    """Remember the tokens and queue ids in a reply or frame (a few levels deep)."""
    if depth > 3:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SECRET_KEYS and isinstance(item, str) and len(item) >= 16:
                SECRETS.add(item)
            elif isinstance(item, dict | list):
                note_secrets(item, depth + 1)
    elif isinstance(value, list):
        for item in value[:50]:
            note_secrets(item, depth + 1)


@dataclasses.dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error_code(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, str) else None
        return None


class ApiClient:
    """HTTP client for /api/*: JSON in, JSON out, never raises on an error status."""

    def __init__(
        self, base_url: str, token: str | None = None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.ssl_context = ssl_context  # for https: what the server's certificate is checked by
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=100)
        OPEN_CLIENTS.append(self)

    async def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        raw_body: bytes | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        all_headers = dict(headers or {})
        bearer = token if token is not None else self.token
        if bearer:
            all_headers.setdefault("Authorization", f"Bearer {bearer}")
        body: bytes | None = raw_body
        if body is None and json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        response = await self.http.fetch(
            self.base_url + path,
            method=method,
            body=body,
            headers=all_headers,
            raise_error=False,
            request_timeout=timeout,
            allow_nonstandard_methods=True,
            ssl_options=self.ssl_context,
        )
        text = response.body.decode() if response.body else ""
        try:
            parsed: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        if bearer:
            SECRETS.add(bearer)
        note_secrets(parsed)
        return Response(response.code, parsed, dict(response.headers))

    async def get(self, path: str, **kwargs: Any) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        return await self.request("POST", path, json_body, **kwargs)

    async def put(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        return await self.request("PUT", path, json_body, **kwargs)

    async def patch(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        return await self.request("PATCH", path, json_body, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Response:
        return await self.request("DELETE", path, **kwargs)

    async def register(self, username: str, password: str = "correct horse") -> dict[str, Any]:
        """Sign up `username` and keep its token; returns the register reply."""
        response = await self.post(
            "/api/auth/register",
            {"username": username, "email": f"{username}@example.com", "password": password},
        )
        assert response.status == 201, response.body
        self.token = response.body["token"]
        return dict(response.body)

    def close(self) -> None:
        self.http.close()


# Every client a test opens, closed by an autouse fixture so none leaks into the next test.
OPEN_CLIENTS: list[ApiClient | WsClient] = []


class WsClient:
    """A WebSocket client that separates replies (by ref) from pushed frames."""

    def __init__(self, conn: tornado.websocket.WebSocketClientConnection) -> None:
        self.conn = conn
        OPEN_CLIENTS.append(self)
        self.refs = itertools.count(1)
        self.frames: list[dict[str, Any]] = []  # frames read but not yet consumed

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> WsClient:
        request = tornado.httpclient.HTTPRequest(
            url, headers=headers or {}, ssl_options=ssl_context
        )
        conn = await tornado.websocket.websocket_connect(request)
        return cls(conn)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.conn.write_message(json.dumps(frame))

    async def _read(self, timeout: float) -> dict[str, Any] | None:
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        if raw is None:
            return None
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("type") == "hello":
            note_secrets(frame)
        return frame

    async def next_frame(self, kind: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame (of this type), keeping frames of other types for later."""
        for i, frame in enumerate(self.frames):
            if kind is None or frame.get("type") == kind:
                return self.frames.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self._read(max(0.0, deadline - loop.time()))
            if frame is None:
                raise ConnectionError(f"closed: {self.conn.close_code} {self.conn.close_reason}")
            if kind is None or frame.get("type") == kind:
                return frame
            self.frames.append(frame)

    async def command(self, kind: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send a command frame and return its reply (matched by ref)."""
        ref = f"r{next(self.refs)}"
        await self.send({"type": kind, "ref": ref, **fields})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if frame.get("type") == "reply" and frame.get("ref") == ref:
                    return self.frames.pop(i)
            frame = await self._read(max(0.0, deadline - loop.time()))
            if frame is None:
                raise ConnectionError(f"closed: {self.conn.close_code} {self.conn.close_reason}")
            self.frames.append(frame)

    async def auth(self, token: str, **resume: Any) -> dict[str, Any]:
        SECRETS.add(token)
        """Send the auth frame and return the hello."""
        await self.send({"type": "auth", "token": token, **resume})
        return await self.next_frame("hello")

    async def event(self, event_type: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next event frame whose payload has this type; other events are kept."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = 0
        while True:
            for i in range(checked, len(self.frames)):
                frame = self.frames[i]
                if frame.get("type") == "event" and (
                    event_type is None or frame["event"].get("type") == event_type
                ):
                    return self.frames.pop(i)
            checked = len(self.frames)
            frame = await self._read(max(0.0, deadline - loop.time()))
            if frame is None:
                raise ConnectionError(f"closed: {self.conn.close_code} {self.conn.close_reason}")
            self.frames.append(frame)

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self._read(max(0.0, deadline - loop.time())) is not None:
            pass
        return self.conn.close_code

    def close(self) -> None:
        """Start the closing handshake (the connection ends when the server answers)."""
        if self.conn.protocol is not None:
            self._stream = self.conn.protocol.stream
        self.conn.close()

    def closing(self) -> bool:
        """Closed, and the server has not answered yet: the socket is still open."""
        stream = getattr(self, "_stream", None)
        return stream is not None and not stream.closed()

    def drop(self) -> None:
        """Close the socket itself: one still open after its test's loop ends would be
        collected in a later test, which a ResourceWarning then fails."""
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.close()
