"""The URL table: one place maps every path to its handler and the service it needs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import tornado.web

from chat.service import ChatService
from handlers.api import CommandHandler, HealthHandler
from handlers.base import ApiNotFoundHandler, EventEncoder
from handlers.events import LongPollHandler
from handlers.export import AllExportHandler, ConversationExportHandler
from handlers.files import FileHandler, UploadHandler
from handlers.headers import ResponseHeaders
from handlers.logs import access_logger, install_log_redaction
from handlers.openapi import ApiDocsHandler, OpenApiHandler
from handlers.pages import IndexHandler, StaticHandler
from handlers.push import ServiceWorkerHandler
from handlers.socket import MAX_FRAME_BYTES, ChatSocket, Heartbeat, end_session_sockets
from handlers.system import SystemNotificationsHandler

ROOT = Path(__file__).resolve().parent.parent

# (path, {http method: command}) -- the REST face of the command table.
COMMAND_ROUTES: list[tuple[str, dict[str, str]]] = [
    (r"/api/auth/register", {"post": "auth.register"}),
    (r"/api/auth/login", {"post": "auth.login"}),
    (r"/api/auth/logout", {"post": "auth.logout"}),
    (r"/api/me", {"get": "me"}),
    (r"/api/me/settings", {"get": "settings.get", "patch": "settings.update"}),
    (r"/api/account", {"delete": "account.delete"}),
    (r"/api/account/password", {"post": "account.password"}),
    (r"/api/account/sessions", {"get": "account.sessions"}),
    (r"/api/account/sessions/(?P<session_id>[^/]+)", {"delete": "account.sessions.revoke"}),
    (r"/api/presence/subscribe", {"post": "presence.subscribe"}),
    (r"/api/notifications", {"get": "notifications.list"}),
    (r"/api/notifications/read", {"post": "notifications.read"}),
    (r"/api/users", {"get": "users.search"}),
    (r"/api/users/by-code/(?P<code>[^/]+)", {"get": "users.by_code"}),
    (r"/api/friends", {"get": "friends.list"}),
    (r"/api/friends/requests", {"get": "friends.requests", "post": "friends.request"}),
    (r"/api/friends/requests/(?P<request_id>[^/]+)", {"delete": "friends.cancel"}),
    (r"/api/friends/requests/(?P<request_id>[^/]+)/accept", {"post": "friends.accept"}),
    (r"/api/friends/requests/(?P<request_id>[^/]+)/decline", {"post": "friends.decline"}),
    (r"/api/friends/(?P<user_id>[^/]+)", {"delete": "friends.remove"}),
    (r"/api/blocks", {"get": "blocks.list"}),
    (r"/api/blocks/(?P<user_id>[^/]+)", {"put": "blocks.add", "delete": "blocks.remove"}),
    (r"/api/conversations", {"get": "conversations.list"}),
    (r"/api/conversations/dm", {"post": "conversations.open_dm"}),
    (
        r"/api/conversations/(?P<conversation_id>[^/]+)/messages",
        {"get": "messages.history", "post": "messages.send"},
    ),
    (
        r"/api/conversations/(?P<conversation_id>[^/]+)/messages/(?P<message_id>[^/]+)",
        {"patch": "messages.edit", "delete": "messages.delete"},
    ),
    (
        r"/api/conversations/(?P<conversation_id>[^/]+)/messages/(?P<message_id>[^/]+)"
        r"/reactions/(?P<emoji>[^/]+)",
        {"put": "reactions.add", "delete": "reactions.remove"},
    ),
    (r"/api/conversations/(?P<conversation_id>[^/]+)/changes", {"get": "messages.changes"}),
    (r"/api/conversations/(?P<conversation_id>[^/]+)/read", {"post": "conversations.read"}),
    (
        r"/api/conversations/(?P<conversation_id>[^/]+)/invitations",
        {"post": "invitations.send"},
    ),
    (r"/api/invitations/(?P<invitation_id>[^/]+)/accept", {"post": "invitations.accept"}),
    (r"/api/invitations/(?P<invitation_id>[^/]+)/decline", {"post": "invitations.decline"}),
    (r"/api/invitations/(?P<invitation_id>[^/]+)/cancel", {"post": "invitations.cancel"}),
    (r"/api/conversations/(?P<conversation_id>[^/]+)/typing", {"post": "typing"}),
    (r"/api/conversations/(?P<conversation_id>[^/]+)/accept", {"post": "conversations.accept"}),
    (r"/api/groups", {"post": "groups.create"}),
    (r"/api/groups/(?P<conversation_id>[^/]+)", {"get": "groups.get", "patch": "groups.update"}),
    (r"/api/groups/(?P<conversation_id>[^/]+)/members", {"post": "groups.add_members"}),
    (
        r"/api/groups/(?P<conversation_id>[^/]+)/members/(?P<user_id>[^/]+)",
        {"delete": "groups.remove_member", "patch": "groups.set_role"},
    ),
    # Site moderation (chat/moderation.py).
    (
        r"/api/conversations/(?P<conversation_id>[^/]+)/messages/(?P<message_id>[^/]+)/report",
        {"post": "messages.report"},
    ),
    (r"/api/admin/users", {"get": "admin.users.search"}),
    (r"/api/admin/users/(?P<user_id>[^/]+)/role", {"put": "admin.users.role"}),
    (r"/api/admin/users/(?P<user_id>[^/]+)/suspend", {"post": "admin.users.suspend"}),
    (r"/api/admin/users/(?P<user_id>[^/]+)/unsuspend", {"post": "admin.users.unsuspend"}),
    (r"/api/admin/reports", {"get": "admin.reports"}),
    (r"/api/admin/reports/(?P<report_id>[^/]+)/resolve", {"post": "admin.reports.resolve"}),
    (r"/api/admin/audit", {"get": "admin.audit"}),
    (
        r"/api/keys/devices/(?P<device_id>[^/]+)",
        {"put": "keys.devices.put", "delete": "keys.devices.delete"},
    ),
    (r"/api/keys/devices/(?P<device_id>[^/]+)/one-time-prekeys", {"post": "keys.prekeys.add"}),
    (r"/api/keys/users/(?P<user_id>[^/]+)", {"get": "keys.user"}),
    (r"/api/keys/claim", {"post": "keys.claim"}),
    (r"/api/push/vapid-public-key", {"get": "push.vapid_public_key"}),
    (r"/api/push/subscriptions", {"post": "push.subscribe", "delete": "push.unsubscribe"}),
]


def make_app(
    service: ChatService, extra_routes: list[Any] | None = None
) -> tornado.web.Application:
    """The Tornado application for one service instance (tests build as many as they like)."""
    install_log_redaction()
    deps = {"service": service}
    sockets: set[ChatSocket] = set()  # every open ChatSocket; server.py closes them at shutdown
    service.session_listeners.append(functools.partial(end_session_sockets, sockets))
    routes: list[Any] = [
        (r"/healthz", HealthHandler, deps),
        (r"/ws", ChatSocket, deps),
        (r"/api/events", LongPollHandler, deps),
    ]
    routes += [(path, CommandHandler, {**deps, **methods}) for path, methods in COMMAND_ROUTES]
    routes += extra_routes or []
    routes += [
        (r"/api/conversations/(?P<conversation_id>[^/]+)/export", ConversationExportHandler, deps),
        (r"/api/export", AllExportHandler, deps),
        (r"/api/system/notifications", SystemNotificationsHandler, deps),
        (r"/api/uploads", UploadHandler, deps),
        (r"/api/files/(?P<file_id>[^/]+)", FileHandler, deps),
        (r"/api/files/(?P<file_id>[^/]+)/(?P<variant>thumbnail)", FileHandler, deps),
        (r"/api/openapi.json", OpenApiHandler, deps),
        (r"/api/docs", ApiDocsHandler, deps),
        (r"/api/.*", ApiNotFoundHandler, deps),
        (r"/sw.js", ServiceWorkerHandler),
        (r"/", IndexHandler, {"max_upload_bytes": service.settings.max_upload_bytes}),
    ]
    return tornado.web.Application(
        routes,
        template_path=str(ROOT / "templates"),
        static_path=str(ROOT / "static"),
        static_handler_class=StaticHandler,
        debug=service.settings.debug,
        websocket_max_message_size=MAX_FRAME_BYTES,
        # Every response: its request id, HSTS over https; then compression (what
        # compress_response=True alone would have given).
        transforms=[ResponseHeaders, tornado.web.GZipContentEncoding],
        log_function=access_logger(service.settings.access_log),
        chat_sockets=sockets,
        chat_background=set(),  # tasks a handler leaves running (an aborted upload's clean-up)
        # One pinger for every socket, in place of Tornado's task and timer per socket.
        chat_heartbeat=Heartbeat(sockets, service.settings.heartbeat_secs),
        # One encoding of each event for every socket and long-poll that delivers it.
        event_encoder=EventEncoder(),
    )
