"""The browser client's page."""

from __future__ import annotations

import tornado.web

# The page's scripts are files from /static/: no inline script may run, whatever a message says.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class IndexHandler(tornado.web.RequestHandler):
    """GET /: the single-page client."""

    def get(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.render("index.html")
