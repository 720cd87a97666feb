"""Web Push (chat/push.py) against a push service on loopback (tests/push_service.py)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from chat.push import load_or_create_vapid_key, public_key_b64, vapid_from
from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer, ServerFactory
from tests.push_service import BrowserKeys, PushService, check_vapid


@pytest.fixture
async def server(make_server: ServerFactory) -> RunningServer:
    """The tests' push service is on loopback."""
    return await make_server(push_private_endpoints=True)


@pytest.fixture
def push_service() -> Iterator[PushService]:
    service = PushService()
    service.start()
    yield service
    service.stop()


async def signed_in(server: RunningServer, name: str) -> tuple[ApiClient, str]:
    api = server.client()
    reply = await api.register(name)
    return api, reply["user"]["id"]


async def subscribe(api: ApiClient, push: PushService, name: str) -> BrowserKeys:
    keys = BrowserKeys.generate()
    reply = await api.post(
        "/api/push/subscriptions", {"endpoint": push.endpoint(name), "keys": keys.public()}
    )
    assert reply.status == 201, reply.body
    return keys


async def dm(alice: ApiClient, bob_id: str) -> str:
    reply = await alice.post("/api/conversations/dm", {"user_id": bob_id})
    conversation_id: str = reply.body["conversation"]["id"]
    return conversation_id


async def send(api: ApiClient, conversation_id: str, body: str) -> None:
    reply = await api.post(f"/api/conversations/{conversation_id}/messages", {"body": body})
    assert reply.status == 201, reply.body


async def subscriptions(server: RunningServer) -> list[dict[str, Any]]:
    return await server.store.db["push_subscriptions"].find({}).to_list()


async def eventually_no_subscription(server: RunningServer) -> None:
    for _ in range(100):
        if not await subscriptions(server):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the subscription is still stored")


async def test_a_dm_to_a_user_without_a_tab_is_pushed_signed_and_encrypted(
    server: RunningServer, push_service: PushService
) -> None:
    alice, _ = await signed_in(server, "alice")
    bob, bob_id = await signed_in(server, "bob")
    keys = await subscribe(bob, push_service, "bob")
    public_key = (await bob.get("/api/push/vapid-public-key")).body["public_key"]
    conversation_id = await dm(alice, bob_id)
    await send(alice, conversation_id, "are you there?")
    [push] = await push_service.wait_for("bob")
    claims = check_vapid(push, push_service.endpoint("bob"), public_key)
    assert claims["aud"] == f"http://127.0.0.1:{push_service.port}"
    payload = keys.decrypt(push.body)
    assert payload["type"] == "message.new"
    assert payload["title"] == "alice"
    assert payload["body"] == "are you there?"
    assert payload["conversation_id"] == conversation_id
    assert len(await subscriptions(server)) == 1


async def test_a_user_with_a_tab_open_gets_no_push(
    server: RunningServer, push_service: PushService
) -> None:
    alice, _ = await signed_in(server, "alice")
    bob, bob_id = await signed_in(server, "bob")
    await subscribe(bob, push_service, "bob")
    ws = await WsClient.connect(server.ws_url)
    assert bob.token is not None
    await ws.auth(bob.token)
    conversation_id = await dm(alice, bob_id)
    await send(alice, conversation_id, "you are online")
    await ws.event("message.new")
    await asyncio.sleep(0.5)  # a push would have been sent by now
    assert "bob" not in push_service.received


async def test_410_deletes_the_subscription(
    server: RunningServer, push_service: PushService
) -> None:
    alice, _ = await signed_in(server, "alice")
    bob, bob_id = await signed_in(server, "bob")
    await subscribe(bob, push_service, "bob")
    push_service.statuses["bob"] = [410]
    await send(alice, await dm(alice, bob_id), "hello")
    await push_service.wait_for("bob")
    await eventually_no_subscription(server)


async def test_500_is_retried_with_back_off(
    make_server: ServerFactory, push_service: PushService
) -> None:
    server = await make_server(push_retry_first_secs=0.05, push_private_endpoints=True)
    alice, _ = await signed_in(server, "alice")
    bob, bob_id = await signed_in(server, "bob")
    keys = await subscribe(bob, push_service, "bob")
    push_service.statuses["bob"] = [500, 500]
    await send(alice, await dm(alice, bob_id), "third time")
    pushes = await push_service.wait_for("bob", 3)
    assert keys.decrypt(pushes[-1].body)["body"] == "third time"
    await asyncio.sleep(0.3)
    assert len(push_service.received["bob"]) == 3  # the 201 ended it
    assert len(await subscriptions(server)) == 1  # a 500 does not delete it


async def test_logout_and_unsubscribe_delete_the_subscription(
    server: RunningServer, push_service: PushService
) -> None:
    bob, _ = await signed_in(server, "bob")
    await subscribe(bob, push_service, "one")
    query = urlencode({"endpoint": push_service.endpoint("one")})
    reply = await bob.delete(f"/api/push/subscriptions?{query}")
    assert reply.body == {"deleted": 1}
    # An endpoint of control characters only (read as empty), or too long: a 400, not a no-op.
    for bad in ("\b" * 2056, "x" * 2049):
        reply = await bob.delete(f"/api/push/subscriptions?{urlencode({'endpoint': bad})}")
        assert reply.status == 400 and reply.body["error"]["field"] == "endpoint", reply.body
    await subscribe(bob, push_service, "two")
    assert (await bob.post("/api/auth/logout")).status == 200
    await eventually_no_subscription(server)


async def test_group_messages_are_not_pushed(
    server: RunningServer, push_service: PushService
) -> None:
    alice, _ = await signed_in(server, "alice")
    bob, bob_id = await signed_in(server, "bob")
    await subscribe(bob, push_service, "bob")
    group = await alice.post("/api/groups", {"name": "g", "member_ids": [bob_id]})
    assert group.status == 201, group.body
    await send(alice, group.body["conversation"]["id"], "to the group")
    await send(alice, await dm(alice, bob_id), "to bob")
    [_push] = await push_service.wait_for("bob")
    await asyncio.sleep(0.3)
    assert len(push_service.received["bob"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "ftp://x/y", "keys": {"p256dh": "x", "auth": "y"}},
        {"endpoint": "https://push.example/1"},
        {"endpoint": "https://push.example/1", "keys": {"p256dh": "AAAA", "auth": "AAAA"}},
        {"endpoint": "http://127.0.0.1:1/x", "keys": BrowserKeys.generate().public()},
        {"endpoint": "https://10.1.2.3/x", "keys": BrowserKeys.generate().public()},
        {"endpoint": "https://[::1]/x", "keys": BrowserKeys.generate().public()},
        {"endpoint": "https://db.internal/x", "keys": BrowserKeys.generate().public()},
    ],
)
async def test_invalid_subscriptions_are_refused(
    make_server: ServerFactory, body: dict[str, Any]
) -> None:
    server = await make_server()  # private endpoints refused, as by default
    bob, _ = await signed_in(server, "bob")
    assert (await bob.post("/api/push/subscriptions", body)).status == 400


def test_the_vapid_key_is_made_once_in_the_data_dir(tmp_path: Path) -> None:
    pem = load_or_create_vapid_key(tmp_path)
    path = tmp_path / "vapid-private-key.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_vapid_key(tmp_path) == pem  # a restart keeps the subscriptions
    key = public_key_b64(vapid_from(pem))
    raw = vapid_from(pem).private_key.private_numbers().private_value.to_bytes(32, "big")
    as_b64 = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    assert public_key_b64(vapid_from(as_b64)) == key  # --vapid-private-key in base64url


async def test_a_mention_is_pushed_and_a_friend_request_is_not(
    server: RunningServer, push_service: PushService
) -> None:
    alice, _ = await signed_in(server, "alice")
    bob, bob_id = await signed_in(server, "bob")
    keys = await subscribe(bob, push_service, "bob")
    friend = await alice.post("/api/friends/requests", {"user_id": bob_id})
    assert friend.status == 201, friend.body
    group = await alice.post("/api/groups", {"name": "g", "member_ids": [bob_id]})
    assert group.status == 201, group.body
    conversation_id = group.body["conversation"]["id"]
    await send(alice, conversation_id, "lunch, @bob?")
    [push] = await push_service.wait_for("bob")
    payload = keys.decrypt(push.body)
    assert payload["type"] == "mention"
    assert payload["title"] == "alice mentioned you"
    assert payload["body"] == "lunch, @bob?"
    assert payload["conversation_id"] == conversation_id
    await asyncio.sleep(0.3)  # nothing else comes: neither the request nor being added
    assert len(push_service.received["bob"]) == 1
