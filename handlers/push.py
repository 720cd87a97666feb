"""GET /sw.js: the service worker that shows Web Push notifications (chat/push.py)."""

from __future__ import annotations

from pathlib import Path

import tornado.web

SERVICE_WORKER = Path(__file__).resolve().parent.parent / "static" / "sw.js"


class ServiceWorkerHandler(tornado.web.RequestHandler):
    """static/sw.js at the root: a service worker's scope is at most its script's directory,
    and the notifications it shows open conversations anywhere under /."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        # A browser checks for an updated worker at every navigation; never a stale one.
        self.set_header("Cache-Control", "no-cache")
        self.finish(SERVICE_WORKER.read_bytes())
