"""Live events per device (docs/e2e.md, *What each device receives*): a live message.new in an
encrypted conversation gives each session only its own device's envelope, over WebSocket and
long-polling, in one process and across processes sharing their queues in Redis."""

from __future__ import annotations

from typing import Any

from chat.e2e import DEVICE_OF_SESSION
from tests.client import ApiClient, WsClient
from tests.conftest import RunningServer
from tests.e2e_client import Device
from tests.test_conversations import Member, join
from tests.test_e2e import E2eMember, Poller
from tests.test_processes import redis_server, redis_url
from tests.test_processes_delivery import Poller as HostPoller
from tests.test_processes_delivery import processes

__all__ = ["processes", "redis_server", "redis_url"]  # the fixtures, shared


async def second_session(server: RunningServer, member: Member, transport: str) -> Member:
    """The same user signed in again: another session, so another device."""
    login = await member.api.post(
        "/api/auth/login", {"login": member.name, "password": "correct horse"}
    )
    other = Member(server, login.body["user"], login.body["token"], transport)
    await other.connect()
    return other


def mine_only(event: dict[str, Any], device_id: str | None) -> None:
    """The message as a device must see it live: its own envelope, or none and no_envelope;
    nothing of which session is which device."""
    assert DEVICE_OF_SESSION not in event
    message = event["message"]
    assert message["encrypted"]
    kept = [e["device_id"] for e in message["envelopes"]]
    if device_id is None:
        assert kept == [] and message["no_envelope"] is True, message
    else:
        assert kept == [device_id] and "no_envelope" not in message, message


async def test_each_device_gets_only_its_own_envelope_live(server: RunningServer) -> None:
    alice = E2eMember(await join(server, "da", "ws"))
    phone = E2eMember(await join(server, "db", "ws"))
    laptop = E2eMember(await second_session(server, phone.member, "ws"))
    bare = await second_session(server, phone.member, "ws")  # a session without a device
    for who in (alice, phone, laptop):
        await who.register()
    # The laptop also long-polls (a queue of its own, the same session, so the same device).
    poller = Poller(laptop.member)
    await poller.start()
    dm = await alice.call("conversations.open_dm", user_id=phone.id, encrypted=True)
    conversation_id = dm.expect()["conversation"]["id"]
    await alice.send(conversation_id, "for each device its own")
    for reader in (phone, laptop):
        event = await reader.member.event("message.new")
        mine_only(event, reader.device.device_id)
        assert reader.read(event["message"]) == "for each device its own"
    [polled] = await poller.events("message.new", 1)
    mine_only(polled, laptop.device.device_id)
    mine_only(await bare.event("message.new"), None)
    # Alice's own socket (the sending device) gets the message back without any envelope.
    echo = await alice.member.event("message.new")
    assert DEVICE_OF_SESSION not in echo
    assert echo["message"]["envelopes"] == [] and "no_envelope" not in echo["message"]


async def _account(host: str, name: str) -> tuple[ApiClient, dict[str, Any]]:
    api = ApiClient(f"http://{host}")
    reply = await api.register(name)
    api.close()
    return ApiClient(f"http://{host}", reply["token"]), reply


async def _device(api: ApiClient) -> Device:
    device = Device()
    reply = await api.put(f"/api/keys/devices/{device.device_id}", device.upload(5))
    assert reply.status == 201, reply.body
    return device


async def test_each_device_gets_only_its_own_envelope_across_processes(
    processes: list[tuple[Any, str]],
) -> None:
    a, b, c = (host for _, host in processes)
    alice_api, _ = await _account(a, "xda")
    bob_api, bob = await _account(b, "xdb")
    login = await ApiClient(f"http://{c}").post(
        "/api/auth/login", {"login": bob["user"]["username"], "password": "correct horse"}
    )
    tablet_api = ApiClient(f"http://{c}", login.body["token"])
    sender = await _device(alice_api)
    phone, tablet = await _device(bob_api), await _device(tablet_api)
    ws = await WsClient.connect(f"ws://{b}/ws")
    await ws.auth(bob["token"])
    poller = HostPoller(c, login.body["token"])
    await poller.poll(timeout=0)  # its queue, opened on the third process
    dm = await alice_api.post(
        "/api/conversations/dm", {"user_id": bob["user"]["id"], "encrypted": True}
    )
    conversation_id = dm.body["conversation"]["id"]
    bob_id = bob["user"]["id"]
    envelopes = []
    for device in (phone, tablet):
        bundle = await alice_api.post(
            "/api/keys/claim", {"user_id": bob_id, "device_id": device.device_id}
        )
        sender.initiate(bundle.body["bundles"][0])
        envelopes.append(sender.encrypt((bob_id, device.device_id), b'{"body": "x"}'))
    sent = await alice_api.post(
        f"/api/conversations/{conversation_id}/messages",
        {"envelopes": envelopes, "client_msg_id": "across"},
    )
    assert sent.status == 201, sent.body
    mine_only((await ws.event("message.new", timeout=8))["event"], phone.device_id)
    mine_only(await poller.event("message.new"), tablet.device_id)


async def test_a_message_for_no_device_at_all_is_marked_live(server: RunningServer) -> None:
    alice = E2eMember(await join(server, "na", "ws"))
    bob = await join(server, "nb", "ws")  # no device anywhere: nothing to encrypt for
    await alice.register()
    dm = await alice.call("conversations.open_dm", user_id=bob.id, encrypted=True)
    await alice.send(dm.expect()["conversation"]["id"], "to nobody's device")
    mine_only(await bob.event("message.new"), None)
    echo = await alice.member.event("message.new")
    assert echo["message"]["envelopes"] == [] and "no_envelope" not in echo["message"]
