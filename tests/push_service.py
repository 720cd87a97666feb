"""A push service on loopback: the receiving side of RFC 8030, for the Web Push tests.

Each subscription the tests make gets an endpoint /push/<name>; a POST there is recorded
(headers and body) and answered 201, or with the statuses a test queued for that name first
(410 to say the subscription is gone, 500 to be retried). Also the browser-side keys a
subscription needs (a P-256 key pair and an auth secret) and the checks of what arrives: the
VAPID token (RFC 8292) and the aes128gcm payload (RFC 8291), decrypted with the held key.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclasses.dataclass
class Received:
    """One push as the push service got it."""

    headers: dict[str, str]
    body: bytes


@dataclasses.dataclass
class BrowserKeys:
    """What a browser holds for one subscription: its P-256 private key and auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def generate(cls) -> BrowserKeys:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    def public(self) -> dict[str, str]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"p256dh": b64url(point), "auth": b64url(self.auth)}

    def decrypt(self, body: bytes) -> dict[str, Any]:
        """The payload of an aes128gcm push (RFC 8291), as JSON."""
        plain = http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        result: dict[str, Any] = json.loads(plain)
        return result


class PushService:
    """The Tornado app and what it received, by endpoint name."""

    def __init__(self) -> None:
        self.received: dict[str, list[Received]] = {}
        self.statuses: dict[str, list[int]] = {}  # answers queued per name (then 201)
        self.port = 0
        self._http: tornado.httpserver.HTTPServer | None = None
        self._arrived = asyncio.Event()

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    def start(self) -> None:
        service = self

        class Endpoint(tornado.web.RequestHandler):
            def post(self, name: str) -> None:
                service.received.setdefault(name, []).append(
                    Received(dict(self.request.headers), self.request.body)
                )
                service._arrived.set()
                queued = service.statuses.get(name)
                self.set_status(queued.pop(0) if queued else 201)

        self._http = tornado.httpserver.HTTPServer(
            tornado.web.Application([(r"/push/([^/]+)", Endpoint)])
        )
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self._http.add_sockets([sock])
        self.port = sock.getsockname()[1]

    async def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The pushes to `name` once there are `count` of them."""
        deadline = time.monotonic() + timeout
        while len(self.received.get(name, [])) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(self.received.get(name, []))} pushes to {name}, not {count}"
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.received[name]

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()


def check_vapid(push: Received, endpoint: str, server_public_key: str) -> dict[str, Any]:
    """The VAPID claims of a push, after checking them (RFC 8292): `vapid t=<JWT>,k=<key>`,
    k the server's public key, the JWT signed ES256 by it, aud the endpoint's origin, exp in
    the future (at most a day: section 2), sub a mailto: or https: URL."""
    scheme, _, params = push.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == server_public_key
    point = unb64url(fields["k"])
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    parts = urlsplit(endpoint)
    origin = f"{parts.scheme}://{parts.netloc}"
    claims: dict[str, Any] = jwt.decode(
        fields["t"], key, algorithms=["ES256"], audience=origin, options={"require": ["exp"]}
    )
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    assert claims["sub"].startswith(("mailto:", "https:"))
    assert push.headers["Content-Encoding"] == "aes128gcm"
    assert int(push.headers["Ttl"]) > 0
    return claims
