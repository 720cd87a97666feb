"""GET /api/openapi.json and GET /api/docs: a valid OpenAPI 3.1 document of every REST route
the application registers, generated from the command table."""

from __future__ import annotations

import re
from typing import Any

import tornado.web
from openapi_spec_validator import validate

from chat.openapi import path_template
from handlers.api import CommandHandler
from handlers.base import ApiNotFoundHandler, JsonHandler
from tests.conftest import RunningServer

METHODS = ("get", "head", "post", "put", "patch", "delete")


async def fetch_document(server: RunningServer) -> dict[str, Any]:
    response = await server.client().get("/api/openapi.json")
    assert response.status == 200, response.body
    assert response.headers["Content-Type"].startswith("application/json")
    assert isinstance(response.body, dict)
    return response.body


async def test_the_document_is_valid_openapi_3_1(server: RunningServer) -> None:
    doc = await fetch_document(server)
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any error of the document


def rest_routes(app: tornado.web.Application) -> list[tuple[str, str]]:
    """(path template, method) of every REST route the application registers: each JSON
    handler's implemented methods (a command route's mapped ones), the catch-all aside."""
    found = []
    for rule in app.wildcard_router.rules:
        handler = rule.target
        if not isinstance(handler, type) or not issubclass(handler, JsonHandler):
            continue  # the WebSocket, the pages, static files
        if handler is ApiNotFoundHandler:
            continue
        template, _ = path_template(rule.matcher.regex.pattern)
        if issubclass(handler, CommandHandler):
            methods = [m for m in METHODS if m in rule.target_kwargs]
        else:
            methods = [
                m
                for m in METHODS
                if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)
            ]
        assert methods, f"{template}: a JSON handler that implements no method"
        found += [(template, m) for m in methods]
    return found


async def test_every_rest_route_of_the_application_is_in_the_document(
    server: RunningServer,
) -> None:
    doc = await fetch_document(server)
    app = server.http.request_callback
    assert isinstance(app, tornado.web.Application)
    routes = rest_routes(app)
    missing = [(p, m) for p, m in routes if m not in doc["paths"].get(p, {})]
    assert missing == []
    # Not a vacuous check: commands, uploads, downloads, export, long-poll and health are there.
    for path in (
        "/api/auth/register",
        "/api/conversations/{conversation_id}/messages",
        "/api/uploads",
        "/api/files/{file_id}/thumbnail",
        "/api/export",
        "/api/events",
        "/healthz",
        "/api/openapi.json",
        "/api/docs",
    ):
        assert path in doc["paths"], path


async def test_every_command_of_the_table_with_a_route_is_documented_with_its_fields(
    server: RunningServer,
) -> None:
    doc = await fetch_document(server)
    ids = {op["operationId"]: op for item in doc["paths"].values() for op in item.values()}
    send = ids["messages.send"]
    body = send["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["body"]["maxLength"] >= 4000
    assert body["properties"]["client_msg_id"]["maxLength"] == 64
    assert "conversation_id" not in body["properties"]  # a path parameter
    assert set(send["responses"]) >= {"201", "400", "401", "403", "404", "409", "413", "503"}
    register = ids["auth.register"]
    assert register["security"] == []
    fields = register["requestBody"]["content"]["application/json"]["schema"]
    assert fields["properties"]["username"]["maxLength"] == 32
    assert fields["required"] == ["username", "email", "password"]
    history = ids["messages.history"]
    query = {p["name"]: p for p in history["parameters"] if p["in"] == "query"}
    assert query["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert ids["me"]["security"] == [{"bearer": []}]
    # Every command routed over REST is in it, under its own name.
    routed = {
        name
        for rule in server.http.request_callback.wildcard_router.rules  # type: ignore[attr-defined]
        if rule.target is CommandHandler
        for key, name in rule.target_kwargs.items()
        if key in METHODS
    }
    assert routed <= set(ids)


async def test_error_responses_have_the_contract_shape_and_codes(server: RunningServer) -> None:
    doc = await fetch_document(server)
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["required"] == ["code", "message"]
    responses = doc["components"]["responses"]
    codes = responses["Error400"]["content"]["application/json"]["schema"]["allOf"][1]
    assert codes["properties"]["error"]["properties"]["code"]["enum"] == [
        "bad_request",
        "encrypted_conversation",
        "validation_failed",
    ]
    assert responses["Error429"]["headers"]["Retry-After"]["required"] is True
    assert doc["components"]["securitySchemes"]["bearer"]["bearerFormat"] == "JWT"


def test_path_template_spells_named_groups_and_refuses_the_rest() -> None:
    assert path_template(r"/api/users/(?P<user_id>[^/]+)") == ("/api/users/{user_id}", ["user_id"])
    assert path_template(r"/api/files/(?P<file_id>[^/]+)/(?P<variant>thumbnail)") == (
        "/api/files/{file_id}/thumbnail",
        ["file_id"],
    )
    for bad in (r"/api/files/([^/]+)", r"/api/.*"):
        try:
            path_template(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


async def test_the_docs_page_is_rendered_from_the_document(server: RunningServer) -> None:
    response = await server.client().get("/api/docs")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<script" not in response.body
    page = response.body
    doc = await fetch_document(server)
    for path, item in doc["paths"].items():
        for method in item:
            assert re.search(rf"{method.upper()}</span> <code>{re.escape(path)}</code>", page), (
                method,
                path,
            )
    assert '<h3 id="schema-Message"><code>Message</code></h3>' in page


async def test_a_405_names_the_allowed_methods(server: RunningServer) -> None:
    """RFC 9110: a 405 carries Allow (found by schemathesis: TRACE on every path)."""
    alice = await server.client().register("alice")
    client = server.client(alice["token"])
    cases = {
        ("TRACE", "/api/me"): "GET",
        ("PUT", "/api/friends/requests"): "GET, POST",
        ("POST", "/api/blocks/6740a1b2c3d4e5f6a7b8c9d0"): "PUT, DELETE",
        ("DELETE", "/api/export"): "GET",
        ("PATCH", "/api/files/6740a1b2c3d4e5f6a7b8c9d0"): "GET, HEAD",
        ("TRACE", "/healthz"): "GET",
    }
    for (method, path), allowed in cases.items():
        response = await client.request(method, path)
        assert response.status == 405, (method, path, response.body)
        assert response.error_code == "method_not_allowed"
        assert response.headers.get("Allow") == allowed, (method, path)


async def test_a_body_of_white_space_is_not_json(server: RunningServer) -> None:
    """Found by schemathesis: "\\r" as a body was taken for no body (and the command ran); an
    empty body still is none."""
    alice = await server.client().register("alice")
    client = server.client(alice["token"])
    for raw in (b"\r", b" ", b"\n\t"):
        response = await client.request("PATCH", "/api/me/settings", raw_body=raw)
        assert response.status == 400 and response.error_code == "bad_request", raw
    empty = await client.request("PATCH", "/api/me/settings", raw_body=b"")
    assert empty.status == 200 and empty.body == {"settings": {"dm_policy": "everyone"}}
