"""GET /api/openapi.json and GET /api/docs: the OpenAPI document of this application's URL
table (commands from the command table, other routes from their handlers' `operations`), and
a reference page rendered from it on the server (no script)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import tornado.web

from chat.openapi import JSON, Operation, Route, build_document
from handlers.api import CommandHandler
from handlers.base import JsonHandler

API_VERSION = "1.0"  # the contract's version (v1)
DOCUMENT_KEY = "chat_openapi"  # where the application keeps its document once built
METHODS = ("get", "head", "post", "put", "patch", "delete")


def routes_of(app: tornado.web.Application) -> list[Route]:
    """Every route of the application that the document describes: command routes, and
    handlers that declare `operations` (a WebSocket, the pages and the catch-all do not)."""
    found: list[Route] = []
    for rule in app.wildcard_router.rules:
        handler = rule.target
        pattern = getattr(rule.matcher, "regex", None)
        if pattern is None or not isinstance(handler, type):
            continue
        methods: dict[str, Any]
        if issubclass(handler, CommandHandler):
            methods = {m: rule.target_kwargs[m] for m in METHODS if m in rule.target_kwargs}
        else:
            methods = dict(getattr(handler, "operations", {}))
        if methods:
            found.append(Route(pattern.pattern, methods))
    return found


def document_of(app: tornado.web.Application, handler: JsonHandler) -> dict[str, Any]:
    """The application's document, built on first use (the URL table does not change)."""
    doc = app.settings.get(DOCUMENT_KEY)
    if doc is None:
        doc = build_document(handler.service.commands, routes_of(app), version=API_VERSION)
        app.settings[DOCUMENT_KEY] = doc
    return doc


class OpenApiHandler(JsonHandler):
    """GET /api/openapi.json: the document, for tools (a client generator, a fuzzer)."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "This OpenAPI 3.1 document",
            ok={200: {JSON: {"type": "object"}}},
            public=True,
            tag="documents",
        )
    }

    def get(self) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.write_json(document_of(self.application, self))


class ApiDocsHandler(JsonHandler):
    """GET /api/docs: the same document as a page to read, rendered here (no script)."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "A reference page rendered from this document",
            ok={200: {"text/html": {"type": "string"}}},
            public=True,
            tag="documents",
        )
    }

    def get(self) -> None:
        doc = document_of(self.application, self)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.render("api_docs.html", doc=doc, groups=operations_by_tag(doc), show=show_schema)


def operations_by_tag(doc: dict[str, Any]) -> list[tuple[str, list[tuple[str, str, Any]]]]:
    """(tag, [(METHOD, path, operation)]) in the document's order: the page's sections."""
    tags: dict[str, list[tuple[str, str, Any]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            tags.setdefault(op["tags"][0], []).append((method.upper(), path, op))
    return list(tags.items())


def show_schema(schema: Any) -> str:
    """A schema as indented JSON for the page (references left as they are: the page lists
    the components below)."""
    return json.dumps(schema, indent=2, ensure_ascii=False)
