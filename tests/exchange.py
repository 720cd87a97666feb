"""One conversation over both transports, against any server address: over TLS, through nginx,
or to a server process whose log is scanned afterwards for the secrets the exchange carried."""

from __future__ import annotations

import dataclasses
import secrets
import ssl
from typing import Any

from tests.client import ApiClient, WsClient

PASSWORD = "correct horse staple"


@dataclasses.dataclass
class Exchanged:
    """What went over the wire that a log must never show, and what came back."""

    tokens: list[str]
    queue_ids: list[str]
    password: str
    conversation_id: str
    # The X-Request-Id of every REST response, in order.
    request_ids: list[str] = dataclasses.field(default_factory=list)

    @property
    def secrets(self) -> list[str]:
        return [*self.tokens, *self.queue_ids, self.password]


async def chat_exchange(
    base_url: str,
    ws_url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
) -> Exchanged:
    """Alice (long-polling) and Bob (WebSocket) sign up, become friends, open their DM and
    send each other a message; each sees the other's. Alice then signs in again (her
    password in a body) and polls with her queue id on the URL. `headers` go with every
    REST request; `origin` is the WebSocket's Origin header (a browser's; none by default)."""
    suffix = secrets.token_hex(3)
    alice = ApiClient(base_url, ssl_context=ssl_context)
    bob = ApiClient(base_url, ssl_context=ssl_context)
    extra = dict(headers or {})
    request_ids: list[str] = []

    async def call(client: ApiClient, method: str, path: str, body: Any = None) -> Any:
        response = await client.request(method, path, body, headers=extra)
        assert response.status < 300, (method, path, response.status, response.body)
        request_ids.append(response.headers.get("X-Request-Id", ""))
        return response.body

    a = await call(alice, "POST", "/api/auth/register", _account(f"alice{suffix}"))
    b = await call(bob, "POST", "/api/auth/register", _account(f"bob{suffix}"))
    alice.token, bob.token = a["token"], b["token"]
    request = await call(alice, "POST", "/api/friends/requests", {"user_id": b["user"]["id"]})
    await call(bob, "POST", f"/api/friends/requests/{request['request']['id']}/accept")
    dm = (await call(alice, "POST", "/api/conversations/dm", {"user_id": b["user"]["id"]}))[
        "conversation"
    ]["id"]

    ws_headers = {"Origin": origin} if origin else {}
    ws = await WsClient.connect(ws_url, ssl_context=ssl_context, headers=ws_headers)
    hello = await ws.auth(bob.token)
    first = await call(alice, "GET", "/api/events?timeout=0")
    queue_id, epoch = first["queue_id"], first["events"][0]["event"]["epoch"]

    await call(alice, "POST", f"/api/conversations/{dm}/messages", {"body": "hello Bob"})
    assert (await ws.event("message.new"))["event"]["message"]["body"] == "hello Bob"
    reply = await ws.command("messages.send", conversation_id=dm, body="hello Alice")
    assert reply["ok"], reply
    bodies: list[str] = []
    cursor = 0
    while "hello Alice" not in bodies:
        poll = await call(
            alice, "GET", f"/api/events?queue_id={queue_id}&epoch={epoch}&last_event_id={cursor}"
        )
        for item in poll["events"]:
            cursor = item["id"]
            if item["event"]["type"] == "message.new":
                bodies.append(item["event"]["message"]["body"])
    assert bodies == ["hello Bob", "hello Alice"]
    again = await call(alice, "POST", "/api/auth/login", {"login": a["user"]["username"],
                                                         "password": PASSWORD})  # fmt: skip
    ws.close()
    await ws.wait_closed()
    alice.close()
    bob.close()
    return Exchanged(
        tokens=[a["token"], b["token"], again["token"]],
        queue_ids=[queue_id, hello["queue_id"]],
        password=PASSWORD,
        conversation_id=dm,
        request_ids=request_ids,
    )


def _account(username: str) -> dict[str, str]:
    return {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
