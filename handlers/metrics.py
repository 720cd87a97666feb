"""GET /metrics: the service's Prometheus metrics, on a port of its own (--metrics-port), never
on the public one."""

from __future__ import annotations

import tornado.web
from prometheus_client import generate_latest

from chat.metrics import Metrics

# What generate_latest writes: the text format every Prometheus reads (prometheus_client's
# CONTENT_TYPE_LATEST names version 1.0.0 since 0.22, which Prometheus 2 does not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsHandler(tornado.web.RequestHandler):
    """The text exposition format of every metric of one service."""

    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.finish(generate_latest(self.metrics.registry))


def make_metrics_app(metrics: Metrics) -> tornado.web.Application:
    """The metrics port's application: /metrics and nothing else (404 for the rest)."""
    return tornado.web.Application([(r"/metrics", MetricsHandler, {"metrics": metrics})])
