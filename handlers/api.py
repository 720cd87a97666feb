"""REST: each route maps HTTP methods to commands of the service's one command table."""

from __future__ import annotations

from typing import Any, ClassVar

import tornado.web

from chat import shapes
from chat.commands import StatusReply
from chat.errors import ValidationFailed
from chat.openapi import JSON, Operation
from chat.service import ChatService
from handlers.base import METHODS, ApiHandler, JsonHandler


class CommandHandler(ApiHandler):
    """Run the command mapped to this method; path arguments join the body or query."""

    def initialize(self, service: ChatService, **methods: str) -> None:
        super().initialize(service)
        self.methods = {method.upper(): name for method, name in methods.items()}

    def allowed_methods(self) -> list[str]:
        """The methods mapped to commands on this path (not every one the class has)."""
        return [m for m in METHODS if m in self.methods]

    async def prepare(self) -> None:
        name = self.methods.get(self.request.method or "")
        if name is None:
            raise tornado.web.HTTPError(405, "Method not allowed here.")
        self.command = self.service.commands[name]
        if not self.command.public:
            await super().prepare()

    async def _run(self, **path_args: str) -> None:
        data: Any
        if self.request.method in ("GET", "DELETE") and not self.request.body:
            data = self.query_args()
        else:
            data = self.json_body()
        if path_args:
            if not isinstance(data, dict):
                raise ValidationFailed("The request body must be a JSON object.")
            data = {**data, **path_args}
        principal = None if self.command.public else self.principal
        reply = await self.service.run(
            self.command.name,
            principal,
            data,
            address=self.request.remote_ip,
            user_agent=self.request.headers.get("User-Agent"),
        )
        status = reply.status if isinstance(reply, StatusReply) else self.command.status
        self.write_json(reply, status=status)

    async def get(self, **path_args: str) -> None:
        await self._run(**path_args)

    async def post(self, **path_args: str) -> None:
        await self._run(**path_args)

    async def put(self, **path_args: str) -> None:
        await self._run(**path_args)

    async def patch(self, **path_args: str) -> None:
        await self._run(**path_args)

    async def delete(self, **path_args: str) -> None:
        await self._run(**path_args)


HEALTH = shapes.obj(
    {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "db": {"type": "string", "enum": ["ok", "unavailable"]},
    }
)


class HealthHandler(JsonHandler):
    """GET /healthz: 200 when the database answers, 503 when it does not."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "Whether the server and its database answer (no token)",
            ok={200: {JSON: HEALTH}, 503: {JSON: HEALTH}},
            public=True,
            tag="operations",
        )
    }

    async def get(self) -> None:
        healthy = await self.service.database_healthy()
        self.write_json(
            {
                "status": "ok" if healthy else "unavailable",
                "db": "ok" if healthy else "unavailable",
            },
            status=200 if healthy else 503,
        )
