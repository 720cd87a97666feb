"""The HTTP server: X-Forwarded-For and friends (and X-Request-Id) are honoured only from a
trusted proxy.

Tornado's `xheaders=True` believes these headers from any peer, so any client could choose the
address that rate limits and logs see. Here a request's `remote_ip` and `protocol` come from
the headers only when the TCP peer is inside one of the configured networks; otherwise they
are the connection's own, whatever the request says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Sequence
from typing import Any

import tornado.httpserver
import tornado.httputil

from chat.config import IPNetwork
from handlers.headers import forwarded_request_id

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def is_trusted(address: str | IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    """True when the address is inside one of the trusted networks."""
    if isinstance(address, str):
        address = _address(address)
    return address is not None and any(address in network for network in trusted)


def forwarded_client(
    peer: str, headers: tornado.httputil.HTTPHeaders, trusted: Sequence[IPNetwork]
) -> str:
    """The client's address as the chain of proxies reports it: X-Forwarded-For read from the
    right, skipping trusted proxies (all trusted: the leftmost), else X-Real-IP; the peer
    itself when it is not trusted, the header is missing, or the chain breaks on a value
    that is not an address (what lies left of it was written by someone untrusted)."""
    if not is_trusted(peer, trusted):
        return peer
    hops = [h for line in headers.get_list("X-Forwarded-For") for h in line.split(",")]
    hops = [h.strip() for h in hops if h.strip()]
    if hops:
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                return client
            client = str(address)
            if not is_trusted(address, trusted):
                return client
        return client
    real = _address(headers.get("X-Real-IP", ""))
    return str(real) if real is not None else peer


def forwarded_protocol(headers: tornado.httputil.HTTPHeaders, default: str) -> str:
    """http or https as the nearest proxy saw it (X-Forwarded-Proto, else X-Scheme)."""
    value = headers.get("X-Forwarded-Proto", headers.get("X-Scheme", ""))
    last = value.split(",")[-1].strip().lower()
    return last if last in ("http", "https") else default


class ForwardedHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer that takes the client's address and scheme from proxy headers only when
    the TCP peer is in trusted_proxies (none: never)."""

    def initialize(  # type: ignore[override]
        self,
        request_callback: tornado.httputil.HTTPServerConnectionDelegate,
        trusted_proxies: Sequence[IPNetwork] = (),
        **kwargs: Any,
    ) -> None:
        kwargs.pop("xheaders", None)  # trusting every peer is what this class is against
        super().initialize(request_callback, **kwargs)
        self.trusted_proxies = tuple(trusted_proxies)

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        if not self.trusted_proxies:
            return delegate
        return _ForwardedAdapter(delegate, request_conn, self.trusted_proxies)


class _ForwardedAdapter(tornado.httputil.HTTPMessageDelegate):
    """Rewrites the connection's remote_ip and protocol for one request (as Tornado's own
    xheaders adapter does), and puts them back after it: the next request on a kept-alive
    connection starts from the peer again. The proxy's X-Request-Id goes on the context as
    forwarded_request_id for as long (handlers/headers.py reads it)."""

    def __init__(
        self,
        delegate: tornado.httputil.HTTPMessageDelegate,
        request_conn: tornado.httputil.HTTPConnection,
        trusted: tuple[IPNetwork, ...],
    ) -> None:
        self.delegate = delegate
        self.context: Any = getattr(request_conn, "context", None)
        self.trusted = trusted
        self.saved: tuple[str, str] | None = None

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        context = self.context
        if context is not None and hasattr(context, "remote_ip"):
            peer, protocol = context.remote_ip, context.protocol
            if is_trusted(peer, self.trusted):
                self.saved = (peer, protocol)
                context.remote_ip = forwarded_client(peer, headers, self.trusted)
                context.protocol = forwarded_protocol(headers, protocol)
                context.forwarded_request_id = forwarded_request_id(headers)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        try:
            self.delegate.finish()
        finally:
            self._restore()

    def on_connection_close(self) -> None:
        try:
            self.delegate.on_connection_close()
        finally:
            self._restore()

    def _restore(self) -> None:
        if self.saved is not None and self.context is not None:
            self.context.remote_ip, self.context.protocol = self.saved
            self.context.forwarded_request_id = None
            self.saved = None
