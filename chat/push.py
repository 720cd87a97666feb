"""Web Push (RFC 8030, payloads encrypted per RFC 8291, VAPID per RFC 8292): what reaches a
user whose browser has no tab of the chat open.

A subscription is a browser's PushSubscription, posted by one session and deleted with it. A
push goes to a user only while it has no attached queue: the presence says so (online means
a WebSocket or a long-poll attached within the presence grace, in this process or, with
--redis-url, in any process sharing the presence book), so a user reading in a tab is not
also pinged by its phone. Pushes are sent by pywebpush, whose HTTP client blocks: they run on
a small thread pool, never on the event loop, and never hold up or fail the send that caused
them. A 404 or 410 from the push service means the subscription is gone: it is deleted. Other
failures are retried PUSH_ATTEMPTS times with a doubling delay, then given up with a log line
that names the push service's host only (an endpoint URL is a capability).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import ipaddress
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

from chat import shapes
from chat.account import SelfServiceCommands
from chat.commands import Principal, Reply, command
from chat.errors import ChatError, ValidationFailed
from chat.models import utcnow
from chat.store import Store
from chat.store.messages import Message
from chat.store.notifications import NewNotification
from chat.store.push import Subscription
from chat.validation import Fields, get_str, require_object, require_str

log = logging.getLogger(__name__)

VAPID_KEY_FILE = "vapid-private-key.pem"  # in the data dir, mode 0600
PUSH_WORKERS = 4  # threads sending pushes: each holds one HTTP request at a time
PUSH_ATTEMPTS = 4  # a failing push (not 404/410) is tried this often in all
PUSH_RETRY_FIRST_SECS = 1.0  # then 2, 4 s: a push service's hiccup, not an outage
PUSH_TTL_SECS = 3600  # the push service may hold a push this long for an offline device
PUSH_TIMEOUT_SECS = 10.0
PREVIEW_CHARS = 120  # of a message's text in a notification
ENDPOINT_MAX = 2048
# A browser's keys, base64url: a 65-byte uncompressed P-256 point (its first byte 4, so "B")
# and a 16-byte auth secret, with or without padding.
P256DH_RE = re.compile(r"B[A-Za-z0-9_-]{86}=?")
AUTH_RE = re.compile(r"[A-Za-z0-9_-]{22}(==)?")
GONE = (404, 410)  # the push service no longer knows the subscription


def load_or_create_vapid_key(data_dir: Path) -> str:
    """The VAPID private key (PEM) kept in the data dir; created (mode 0600) on first start,
    so the subscriptions browsers made with its public key keep working across restarts."""
    path = data_dir / VAPID_KEY_FILE
    if path.exists():
        return path.read_text()
    vapid = Vapid02()
    vapid.generate_keys()
    pem: str = vapid.private_pem().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pem)
    return pem


def vapid_from(private_key: str | None) -> Vapid02:
    """The VAPID key: a PEM, or the base64url raw or DER private key `vapid --gen` and most
    push libraries print; a fresh one when None (a server without a data dir: tests)."""
    if private_key is None:
        vapid = Vapid02()
        vapid.generate_keys()
        return vapid
    text = private_key.strip()
    if text.startswith("-----BEGIN"):
        return Vapid02.from_pem(text.encode())
    return Vapid02.from_string(text)


def public_key_b64(vapid: Vapid02) -> str:
    """The application server key a browser subscribes with: the uncompressed P-256 point,
    base64url without padding."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_bytes(value: str, field: str, pattern: re.Pattern[str]) -> bytes:
    """The bytes of a base64url key of the shape `pattern` says (the OpenAPI document's)."""
    if not pattern.fullmatch(value):
        raise ValidationFailed(f"{field} is not a key of the right size.", field=field)
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def private_host(host: str) -> bool:
    """Whether the host is this machine or a private network's, by its name or IP literal: a
    server must not be made to POST into its own network by a subscription (a name that
    resolves there is not caught: a firewall rule for the push threads' egress is)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return False  # a name


def check_subscription(data: Any, *, allow_private: bool = False) -> tuple[str, str, str]:
    """(endpoint, p256dh, auth) of a PushSubscription's JSON, or ValidationFailed: an http(s)
    URL (not of a private host unless allowed), a P-256 public point (65 bytes) and a 16-byte
    auth secret."""
    data = require_object(data)
    endpoint = require_str(data, "endpoint")
    parts = urlsplit(endpoint)
    if len(endpoint) > ENDPOINT_MAX or parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValidationFailed("endpoint must be an http(s) URL.", field="endpoint")
    if not allow_private and private_host(parts.hostname):
        raise ValidationFailed("endpoint must be a public push service.", field="endpoint")
    keys = data.get("keys")
    if not isinstance(keys, dict):
        raise ValidationFailed("keys must be an object with p256dh and auth.", field="keys")
    p256dh = get_str(keys, "p256dh") or ""
    auth = get_str(keys, "auth") or ""
    point = _b64url_bytes(p256dh, "p256dh", P256DH_RE)
    if len(point) != 65 or point[0] != 4:
        raise ValidationFailed("p256dh must be an uncompressed P-256 point.", field="p256dh")
    _b64url_bytes(auth, "auth", AUTH_RE)
    return endpoint, p256dh, auth


class PushService:
    """Sends push payloads to a user's subscriptions, in the background."""

    def __init__(
        self,
        store: Store,
        vapid: Vapid02,
        subject: str,
        *,
        retry_first_secs: float = PUSH_RETRY_FIRST_SECS,
    ) -> None:
        self.store = store
        self.vapid = vapid
        self.public_key = public_key_b64(vapid)
        self.subject = subject
        self.retry_first_secs = retry_first_secs
        self._pool = concurrent.futures.ThreadPoolExecutor(PUSH_WORKERS, "push")
        self._tasks: set[asyncio.Task[None]] = set()

    def offer(self, user_id: str, payload: dict[str, Any]) -> None:
        """Push `payload` (a small JSON object: title, body, conversation_id...) to each of
        the user's subscriptions, in the background. The caller decides whether the user
        should be pushed to (see PushCommands.offline)."""
        task = asyncio.get_running_loop().create_task(self._offer(user_id, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _offer(self, user_id: str, payload: dict[str, Any]) -> None:
        try:
            subs = await self.store.push.of_user(user_id)
        except ChatError as exc:
            log.warning("push to user %s skipped: %s", user_id, exc)
            return
        data = json.dumps(payload, separators=(",", ":"))
        await asyncio.gather(*(self._deliver(sub, data) for sub in subs))

    async def _deliver(self, sub: Subscription, data: str) -> None:
        """One subscription: tried until it succeeds, is gone, or PUSH_ATTEMPTS ran out."""
        host = urlsplit(sub.endpoint).hostname
        delay = self.retry_first_secs
        loop = asyncio.get_running_loop()
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            status = await loop.run_in_executor(self._pool, self._send, sub, data)
            if status is not None and status < 300:
                return
            if status in GONE:
                log.info("push subscription of user %s gone at %s: deleted", sub.user_id, host)
                try:
                    await self.store.push.delete_endpoint(sub.endpoint)
                except ChatError as exc:
                    log.warning("push subscription not deleted yet: %s", exc)
                return
            if attempt < PUSH_ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        log.warning(
            "push to user %s at %s given up after %d attempts (last status %s)",
            sub.user_id,
            host,
            PUSH_ATTEMPTS,
            status,
        )

    def _send(self, sub: Subscription, data: str) -> int | None:
        """In a pool thread: one POST to the push service; its status (None: no answer)."""
        claims = {"sub": self.subject}  # aud and exp are added by pywebpush, per endpoint
        try:
            response = webpush(
                sub.info(),
                data,
                vapid_private_key=self.vapid,
                vapid_claims=claims,
                ttl=PUSH_TTL_SECS,
                timeout=PUSH_TIMEOUT_SECS,
            )
        except WebPushException as exc:
            return exc.response.status_code if exc.response is not None else None
        except Exception as exc:  # a connection refused, a timeout: the push service's
            log.debug("push attempt failed: %s", type(exc).__name__)
            return None
        status: int = response.status_code
        return status

    async def close(self) -> None:
        """Stop the pushes under way (they are best effort) and the threads."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)


ENDPOINT = {"type": "string", "maxLength": ENDPOINT_MAX, "pattern": "^https?://[^/?#]"}
KEYS = shapes.obj(
    {
        "p256dh": {"type": "string", "pattern": f"^{P256DH_RE.pattern}$"},
        "auth": {"type": "string", "pattern": f"^{AUTH_RE.pattern}$"},
    }
)


def push_payload(note: NewNotification, actor: Reply | None) -> dict[str, Any] | None:
    """What a notification's push shows, or None for the kinds that are not pushed."""
    who = actor["username"] if actor else "Someone"
    data = note.data
    if note.kind == "mention":
        title, body = f"{who} mentioned you", str(data.get("excerpt", ""))
    elif note.kind == "invitation":
        title, body = f"{who} invites you", str(data.get("game", ""))
    elif note.kind == "system":
        title, body = str(data.get("title", "")), str(data.get("body", ""))
    else:
        return None
    payload: dict[str, Any] = {"type": note.kind, "title": title, "body": body[:PREVIEW_CHARS]}
    if note.conversation_id is not None:
        payload["conversation_id"] = note.conversation_id
    return payload


class PushCommands(SelfServiceCommands):
    """push.vapid_public_key, push.subscribe, push.unsubscribe; a DM's message.new pushed to
    its offline recipients. Above every domain: a session's end reaches its subscriptions."""

    push: PushService

    def init_push(self) -> None:
        """The push sender, with the configured VAPID key (or a fresh one: see vapid_from)."""
        vapid = vapid_from(self.settings.vapid_private_key)
        self.push = PushService(
            self.store,
            vapid,
            self.settings.vapid_subject,
            retry_first_secs=self.settings.push_retry_first_secs,
        )

    @command(
        "push.vapid_public_key",
        gives=shapes.reply(public_key={"type": "string"}),
    )
    async def vapid_public_key(self, principal: Principal, data: Any) -> Reply:
        """The VAPID public key (base64url) a browser subscribes with
        (pushManager.subscribe's applicationServerKey)."""
        return {"public_key": self.push.public_key}

    @command(
        "push.subscribe",
        status=201,
        takes=Fields({"endpoint": ENDPOINT, "keys": KEYS}, ("endpoint", "keys")),
        gives=shapes.EMPTY,
    )
    async def subscribe_push(self, principal: Principal, data: Any) -> Reply:
        """Store a browser's PushSubscription for this session (replacing the endpoint's
        earlier one); it is deleted when the session ends."""
        allow = self.settings.push_private_endpoints
        endpoint, p256dh, auth = check_subscription(data, allow_private=allow)
        sub = Subscription(endpoint, principal.user_id, principal.session_id, p256dh, auth)
        await self.store.push.save(sub, utcnow())
        return {}

    @command(
        "push.unsubscribe",
        takes=Fields({"endpoint": {"type": "string", "minLength": 1, "maxLength": ENDPOINT_MAX}}),
        gives=shapes.reply(deleted={"type": "integer", "minimum": 0}),
    )
    async def unsubscribe_push(self, principal: Principal, data: Any) -> Reply:
        """Delete this session's subscription at `endpoint`, or all of them without one."""
        endpoint = get_str(require_object(data), "endpoint", required=False)
        # A query's control characters are turned into spaces and stripped before this (as
        # Tornado reads arguments): what is left empty was no endpoint either.
        if endpoint is not None and not 1 <= len(endpoint) <= ENDPOINT_MAX:
            raise ValidationFailed(
                f"endpoint must be 1-{ENDPOINT_MAX} characters.", field="endpoint"
            )
        deleted = await self.store.push.delete_session(principal.session_id, endpoint)
        return {"deleted": deleted}

    async def session_ended(self, session_id: str, reason: str | None = None) -> None:
        """A session's end (logout, revocation, password change) deletes its subscriptions:
        its browser is no longer signed in. In the background: the logout's own reply must
        not wait behind it (the session's socket closes right after session.ended)."""
        await super().session_ended(session_id, reason)
        self.in_background(self._forget_subscriptions(session_id))

    async def _forget_subscriptions(self, session_id: str) -> None:
        try:
            await self.store.push.delete_session(session_id)
        except ChatError as exc:
            log.warning("push subscriptions of an ended session not deleted yet: %s", exc)

    def offline(self, user_ids: frozenset[str] | set[str]) -> list[str]:
        """Those of these users with no attached queue anywhere (see the module's doc)."""
        return [uid for uid in user_ids if not self.presence.is_online(uid)]

    def message_published(self, message: Message, member_ids: frozenset[str]) -> None:
        """A DM's message reaches its recipient as a push while it has no tab open."""
        super().message_published(message, member_ids)
        if len(member_ids) > 2:  # a group's (a DM has two members): nothing per member
            return
        away = self.offline(member_ids - {message.sender_id})
        if away:
            self.in_background(self._push_message(message, away))

    async def _push_message(self, message: Message, user_ids: list[str]) -> None:
        conv = self.sequencer.snapshot(message.conversation_id)
        if conv is None:
            conv = await self.store.conversations.get(message.conversation_id)
        if conv is None or conv.kind != "dm":
            return
        sender = await self.known_users.get(message.sender_id)
        payload: dict[str, Any] = {
            "type": "message.new",
            "title": sender.username if sender else "New message",
            "conversation_id": conv.id,
            "message_id": message.id,
        }
        # An end-to-end encrypted conversation's text is never in a push (the flag comes with
        # encrypted conversations; a conversation without it is plain).
        if not getattr(conv, "encrypted", False):
            text = message.body or ("(attachment)" if message.attachments else "")
            payload["body"] = text[:PREVIEW_CHARS]
        for uid in user_ids:
            self.push.offer(uid, payload)

    def notified(self, user_ids: Sequence[str], note: NewNotification, actor: Reply | None) -> None:
        """A mention, an invitation or a system notification reaches the users with no tab
        open as a push too (PROTOCOL.md section 10); the other kinds wait in the list."""
        super().notified(user_ids, note, actor)
        payload = push_payload(note, actor)
        if payload is None:
            return
        for uid in self.offline(set(user_ids)):
            self.push.offer(uid, payload)

    async def close_push(self) -> None:
        """Stop the pushes under way."""
        await self.push.close()
