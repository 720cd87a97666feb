"""The OpenAPI 3.1 document of the REST face, generated from the command table (each command's
CommandSpec: its fields, reply and errors) and the few routes that are not commands (each
declares its Operations next to its handler). Adding a command adds it here."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from chat import shapes
from chat.commands import Command
from chat.errors import ChatError
from chat.validation import NO_FIELDS, Fields, Schema

BODY_METHODS = ("post", "put", "patch")  # the others take their fields from the query string
JSON = "application/json"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ERROR_REF = shapes.ref("Error")
# What each status means, for the responses' descriptions.
STATUS_TEXT = {
    200: "OK",
    201: "Created",
    206: "Partial content (one byte range)",
    304: "Not modified (If-None-Match)",
    400: "Invalid input",
    401: "No token, a bad or expired token, or a revoked session",
    403: "Not allowed",
    404: "Unknown resource",
    405: "Method not allowed on this path",
    409: "Conflict: a unique value is taken, or a duplicate request",
    413: "Too large",
    416: "Range not satisfiable",
    429: "Rate limited: wait Retry-After seconds",
    503: "The database did not answer in time",
}
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)")
_LITERAL = re.compile(r"[\w.-]+")


@dataclasses.dataclass(frozen=True)
class Operation:
    """A route that is not a command (uploads, downloads, export, long-poll, health, these
    documents): declared once beside its handler."""

    summary: str
    ok: dict[int, dict[str, Schema]]  # status -> content type -> schema
    query: Fields = NO_FIELDS
    errors: tuple[int, ...] = ()
    body: dict[str, Schema] | None = None  # content type -> schema of the request body
    public: bool = False  # no token needed
    optional_auth: bool = False  # a token or another credential (a signed URL)
    headers: dict[int, dict[str, Schema]] = dataclasses.field(default_factory=dict)
    description: str = ""
    tag: str = ""


Target = str | Operation  # a command's name, or an Operation


@dataclasses.dataclass(frozen=True)
class Route:
    """One path of the URL table (Tornado's regex) and what each method runs there."""

    pattern: str
    methods: Mapping[str, Target]


def path_template(pattern: str) -> tuple[str, list[str]]:
    """/api/users/(?P<user_id>[^/]+) -> ("/api/users/{user_id}", ["user_id"]); a named group
    that is a plain word is that word. ValueError for patterns this cannot spell."""
    names: list[str] = []

    def spell(match: re.Match[str]) -> str:
        name, body = match.groups()
        if body == "[^/]+":
            names.append(name)
            return "{" + name + "}"
        if _LITERAL.fullmatch(body):
            return body
        raise ValueError(f"cannot document the path parameter {name!r} of {pattern!r}")

    path = _NAMED_GROUP.sub(spell, pattern.removesuffix("$"))
    if any(c in path for c in "()[]*+?\\|^$"):
        raise ValueError(f"cannot document the path {pattern!r}: name its groups")
    return path, names


def error_codes() -> dict[int, list[str]]:
    """HTTP status -> the error codes that answer it, from every ChatError subclass."""
    found: dict[int, set[str]] = {}
    todo = list(ChatError.__subclasses__())
    while todo:
        klass = todo.pop()
        todo += klass.__subclasses__()
        found.setdefault(klass.status, set()).add(klass.code)
    return {status: sorted(codes) for status, codes in sorted(found.items())}


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    schema: Schema = {
        "allOf": [
            ERROR_REF,
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    response: dict[str, Any] = {
        "description": f"{STATUS_TEXT.get(status, 'Error')}: {', '.join(codes)}",
        "content": {JSON: {"schema": schema}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "whole seconds, at least 1",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def _parameters(fields: Fields, path_names: list[str], *, query: bool) -> list[dict[str, Any]]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": fields.properties.get(name, {"type": "string"}),
        }
        for name in path_names
    ]
    if query:
        params += [
            {"name": name, "in": "query", "required": name in fields.required, "schema": schema}
            for name, schema in fields.properties.items()
            if name not in path_names
        ]
    return params


def _summary(text: str) -> str:
    return " ".join(text.split())


def command_operation(cmd: Command, method: str, path_names: list[str]) -> dict[str, Any]:
    """The OpenAPI operation of a command on one method of one path."""
    spec = cmd.spec
    has_body = method in BODY_METHODS
    op: dict[str, Any] = {
        "operationId": spec.name,
        "tags": [spec.name.split(".")[0]],
        "summary": _summary(spec.summary) or spec.name,
        "description": (
            f"Command `{spec.name}`: also the WebSocket frame "
            f'`{{"type": "{spec.name}", "ref": ..., ...fields}}`, whose reply\'s `data` is '
            "this response's body."
        ),
        "parameters": _parameters(spec.takes, path_names, query=not has_body),
        "security": [] if spec.public else BEARER,
    }
    if has_body:
        schema = spec.takes.schema(leave_out=frozenset(path_names))
        op["requestBody"] = {
            "required": bool(schema.get("required")),
            "content": {JSON: {"schema": schema}},
        }
    reply = spec.gives or {"type": "object"}
    responses: dict[str, Any] = {
        str(status): {
            "description": STATUS_TEXT.get(status, "Success"),
            "content": {JSON: {"schema": reply}},
        }
        for status in (spec.status, *spec.also)
    }
    errors = set(spec.errors) | {503}
    if not spec.public:
        errors.add(401)
    if has_body:
        errors |= {400, 413}
    if spec.takes.properties:
        errors.add(400)
    responses.update(_errors(errors))
    op["responses"] = responses
    return op


def _errors(statuses: Iterable[int]) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Error{s}"} for s in sorted(statuses)}


def plain_operation(
    operation: Operation, method: str, template: str, path_names: list[str]
) -> dict[str, Any]:
    """The OpenAPI operation of a route that is not a command."""
    op: dict[str, Any] = {
        "operationId": f"{method.upper()} {template}",
        "tags": [operation.tag or "other"],
        "summary": operation.summary,
        "parameters": _parameters(operation.query, path_names, query=True),
    }
    if operation.description:
        op["description"] = operation.description
    if operation.public:
        op["security"] = []
    elif operation.optional_auth:
        op["security"] = [{}, *BEARER]
    else:
        op["security"] = BEARER
    if operation.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {kind: {"schema": schema} for kind, schema in operation.body.items()},
        }
    responses: dict[str, Any] = {}
    for status, content in operation.ok.items():
        response: dict[str, Any] = {"description": STATUS_TEXT.get(status, "Success")}
        if content:
            response["content"] = {kind: {"schema": schema} for kind, schema in content.items()}
        if status in operation.headers:
            response["headers"] = {
                name: {"schema": schema, "required": True}
                for name, schema in operation.headers[status].items()
            }
        responses[str(status)] = response
    errors = set(operation.errors)
    if not operation.public:
        errors.add(401)
    if operation.query.properties:
        errors.add(400)
    responses.update(_errors(errors))
    op["responses"] = responses
    return op


def build_document(
    commands: Mapping[str, Command], routes: Iterable[Route], *, version: str
) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for these routes (KeyError for a route naming a
    command the table does not have)."""
    codes = error_codes()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        template, names = path_template(route.pattern)
        item = paths.setdefault(template, {})
        for method, target in route.methods.items():
            if isinstance(target, Operation):
                item[method] = plain_operation(target, method, template, names)
            else:
                item[method] = command_operation(commands[target], method, names)
    used = {int(s) for item in paths.values() for op in item.values() for s in op["responses"]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tornado-chat",
            "version": version,
            "description": (
                "The REST face of the chat server. Every command is also a WebSocket frame on "
                "`GET /ws` (see docs/protocol.md). Errors have one shape: "
                '`{"error": {"code", "message", "field"?}}`.'
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": shapes.COMPONENTS,
            "responses": {
                f"Error{status}": _error_response(status, names)
                for status, names in codes.items()
                if status in used
            },
        },
    }
