"""The browser client's page."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import tornado.web

# The page's scripts are files from /static/; the only inline script element is the import map
# (JSON, not code), allowed by its exact hash. No other inline script and no inline event handler
# may run, whatever a message says. The page connects to its own origin only: 'self' covers
# ws(s): only in CSP 3 browsers, so the WebSocket's own URL is named too ({connect_src}).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' {import_map_hash}; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src {connect_src}; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
MODULES_DIR = "js"  # under static/: every ES module of the client
# A Host header that is a host name or IP literal, with an optional port: nothing else may go
# into the policy (a Host like "x; script-src *" would otherwise write a directive).
HOST_PATTERN = re.compile(
    r"(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)


def connect_sources(protocol: str, host: str) -> str:
    """The page's connect-src: its origin, and the WebSocket URL the client opens there."""
    if not HOST_PATTERN.fullmatch(host):
        return "'self'"
    scheme = "wss" if protocol == "https" else "ws"  # as static/js/realtime.js chooses
    return f"'self' {scheme}://{host.lower()}"


class StaticHandler(tornado.web.StaticFileHandler):
    """/static/*: Tornado's static files, never sniffed into another type."""

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")


class IndexHandler(tornado.web.RequestHandler):
    """GET /: the single-page client."""

    def initialize(self, max_upload_bytes: int) -> None:
        # Stated in the page so the client can refuse a file too large before uploading it.
        self.max_upload_bytes = max_upload_bytes

    def get(self) -> None:
        import_map = self.import_map()
        digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
        policy = CONTENT_SECURITY_POLICY.format(
            import_map_hash=f"'sha256-{digest}'",
            connect_src=connect_sources(self.request.protocol, self.request.host),
        )
        self.set_header("Content-Security-Policy", policy)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")  # the page names the current static versions
        self.render("index.html", import_map=import_map, max_upload_bytes=self.max_upload_bytes)

    def import_map(self) -> str:
        """Maps every module's plain URL to its versioned one.

        Modules import each other by relative path ('./api.js'); the map makes those imports
        load '/static/js/api.js?v=<hash>' too, so every module is cached for good and
        refreshed by a deploy, with no build step.
        """
        static_path = Path(self.settings["static_path"])
        imports: dict[str, str] = {}
        for path in sorted((static_path / MODULES_DIR).rglob("*.js")):
            name = path.relative_to(static_path).as_posix()
            plain = self.static_url(name, include_version=False)
            imports[plain] = self.static_url(name)
        # '</' escaped: the JSON sits inside a <script> element.
        return json.dumps({"imports": imports}, separators=(",", ":")).replace("</", "<\\/")
