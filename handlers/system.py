"""POST /api/system/notifications: the one endpoint a service key opens (chat/notifications.py)."""

from __future__ import annotations

from typing import ClassVar

from chat import shapes
from chat.notifications import TEXT_MAX, TITLE_MAX
from chat.openapi import JSON, Operation
from chat.validation import ID, id_list
from handlers.base import JsonHandler

SYSTEM_NOTIFICATION = shapes.obj(
    {
        "title": {"type": "string", "minLength": 1, "maxLength": TITLE_MAX},
        "body": {"type": "string", "minLength": 1, "maxLength": TEXT_MAX},
    },
    {"data": {"type": "object"}, "user_ids": id_list(), "group_id": ID, "all": {"const": True}},
)


class SystemNotificationsHandler(JsonHandler):
    """A system notification from a service, authenticated by its key (not a session)."""

    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation(
            "A system notification to user_ids, a group's members or all users "
            "(Authorization: Bearer <service key>)",
            body={JSON: SYSTEM_NOTIFICATION},
            ok={200: {JSON: shapes.obj({"sent": {"type": "integer", "minimum": 0}})}},
            errors=(400, 404, 413, 429, 503),
            tag="system",
        )
    }

    async def post(self) -> None:
        scheme, _, key = self.request.headers.get("Authorization", "").partition(" ")
        data = self.json_body()
        reply = await self.service.send_system(
            key.strip() if scheme.lower() == "bearer" else None, data
        )
        self.write_json(reply)
