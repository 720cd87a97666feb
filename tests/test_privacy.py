"""Privacy settings and message requests, over REST and WebSocket frames: who may start a DM
(everyone, or friends only), a stranger's DM as a request until answered, and accepting."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer, ServerFactory
from tests.test_conversations import TRANSPORTS, Member, join, open_dm, send


async def befriend(a: Member, b: Member) -> None:
    request = (await a.call("friends.request", user_id=b.id)).expect(201)["request"]
    (await b.call("friends.accept", request_id=request["id"])).expect()


async def listed(member: Member, conversation_id: str) -> dict[str, object]:
    convs = (await member.call("conversations.list")).expect()["conversations"]
    [conv] = [c for c in convs if c["id"] == conversation_id]
    return conv  # type: ignore[no-any-return]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_settings_default_and_change(server: RunningServer, transport: str) -> None:
    alice = await join(server, "alice", transport)
    assert (await alice.call("settings.get")).expect() == {"settings": {"dm_policy": "everyone"}}
    changed = (await alice.call("settings.update", dm_policy="friends")).expect()
    assert changed == {"settings": {"dm_policy": "friends"}}
    assert (await alice.call("settings.get")).expect()["settings"]["dm_policy"] == "friends"
    (await alice.call("settings.update", dm_policy="nobody")).fails(
        400, "validation_failed", "dm_policy"
    )
    # A refused change changes nothing; an empty one answers the settings.
    assert (await alice.call("settings.update")).expect()["settings"]["dm_policy"] == "friends"
    (await alice.call("settings.update", dm_policy="everyone")).expect()
    assert (await alice.call("settings.get")).expect()["settings"]["dm_policy"] == "everyone"


async def test_settings_need_a_session(server: RunningServer) -> None:
    api = server.client()
    response = await api.get("/api/me/settings")
    assert response.status == 401 and response.error_code == "unauthorized"
    response = await api.patch("/api/me/settings", {"dm_policy": "friends"})
    assert response.status == 401 and response.error_code == "unauthorized"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_friends_only_refuses_a_stranger_and_lets_friends_in(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    stranger = await join(server, "stranger", transport)
    friend = await join(server, "friend", transport)
    (await alice.call("settings.update", dm_policy="friends")).expect()
    (await stranger.call("conversations.open_dm", user_id=alice.id)).fails(
        403, "dm_not_allowed", "user_id"
    )
    await befriend(friend, alice)
    conv = await open_dm(friend, alice)
    await send(friend, conv["id"], "hi, friend here")
    assert (await listed(alice, conv["id"]))["request"] is False
    # alice may still write to the stranger (her setting is about who starts with her).
    mine = await open_dm(alice, stranger)
    await send(alice, mine["id"], "hello stranger")
    assert (await listed(stranger, mine["id"]))["request"] is True


async def test_friends_only_refuses_a_first_message_in_a_dm_opened_before(
    server: RunningServer,
) -> None:
    """A DM opened while alice took messages from everyone, written to after she changed it."""
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    conv = await open_dm(bob, alice)
    (await alice.call("settings.update", dm_policy="friends")).expect()
    result = await bob.call(
        "messages.send", conversation_id=conv["id"], body="hi", client_msg_id="a"
    )
    result.fails(403, "dm_not_allowed")
    assert (await server.store.db["messages"].count_documents({})) == 0
    await alice.no_event("message.new")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_strangers_dm_is_a_request_until_the_recipient_replies(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    conv = await open_dm(bob, alice)
    await send(bob, conv["id"], "hello, we met at the meetup")
    event = await alice.event("message.new")
    assert event["message"]["body"] == "hello, we met at the meetup"
    seen = await listed(alice, conv["id"])
    assert seen["request"] is True and seen["unread_count"] == 1
    assert (await listed(bob, conv["id"]))["request"] is False  # the sender's side is normal
    await send(bob, conv["id"], "are you there?")  # a second message is still a request
    assert (await listed(alice, conv["id"]))["request"] is True
    # Replying accepts: alice's other tabs are told.
    await send(alice, conv["id"], "hi bob")
    accepted = await alice.event("conversation.accepted")
    assert accepted["conversation_id"] == conv["id"]
    assert (await listed(alice, conv["id"]))["request"] is False
    # Settled for good: alice going friends-only later does not close this conversation.
    (await alice.call("settings.update", dm_policy="friends")).expect()
    await send(bob, conv["id"], "still here")
    assert (await listed(alice, conv["id"]))["request"] is False
    (await bob.call("conversations.open_dm", user_id=alice.id)).expect()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_accepting_a_request(server: RunningServer, transport: str) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    conv = await open_dm(bob, alice)
    await send(bob, conv["id"], "hello")
    accepted = (await alice.call("conversations.accept", conversation_id=conv["id"])).expect()
    assert accepted["conversation"]["id"] == conv["id"]
    assert accepted["conversation"]["request"] is False
    assert (await alice.event("conversation.accepted"))["conversation_id"] == conv["id"]
    assert (await listed(alice, conv["id"]))["request"] is False
    # Idempotent; no second event.
    (await alice.call("conversations.accept", conversation_id=conv["id"])).expect()
    await alice.no_event("conversation.accepted")
    # An accepted stranger may write on after alice turns friends-only.
    (await alice.call("settings.update", dm_policy="friends")).expect()
    await send(bob, conv["id"], "thanks")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_accept_refuses_groups_and_outsiders(server: RunningServer, transport: str) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    eve = await join(server, "eve", transport)
    await befriend(alice, bob)
    group = (await alice.call("groups.create", name="G", member_ids=[bob.id])).expect(201)
    gid = group["conversation"]["id"]
    (await bob.call("conversations.accept", conversation_id=gid)).fails(404, "not_found")
    conv = await open_dm(bob, alice)
    (await eve.call("conversations.accept", conversation_id=conv["id"])).fails(404, "not_found")
    (await eve.call("conversations.accept", conversation_id="nope")).fails(404, "not_found")
    assert (await listed(alice, gid))["request"] is False


async def test_a_pending_stranger_is_stopped_by_friends_only(server: RunningServer) -> None:
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    conv = await open_dm(bob, alice)
    await send(bob, conv["id"], "first")
    (await alice.call("settings.update", dm_policy="friends")).expect()
    result = await bob.call(
        "messages.send", conversation_id=conv["id"], body="x", client_msg_id="2"
    )
    result.fails(403, "dm_not_allowed")
    # alice can still answer, which settles the DM; then bob may write again.
    await send(alice, conv["id"], "ok, hi")
    await send(bob, conv["id"], "thanks")
    # And a friendship settles a stranger's DM at its next message.
    carol = await join(server, "carol")
    (await alice.call("settings.update", dm_policy="everyone")).expect()
    cconv = await open_dm(carol, alice)
    await send(carol, cconv["id"], "hey")
    assert (await listed(alice, cconv["id"]))["request"] is True
    await befriend(carol, alice)
    await send(carol, cconv["id"], "friends now")
    assert (await listed(alice, cconv["id"]))["request"] is False


async def test_a_request_survives_a_new_server_process(make_server: ServerFactory) -> None:
    """The state is stored, not only remembered: a second process on the same database
    answers the same."""
    first = await make_server()
    alice = await join(first, "alice")
    bob = await join(first, "bob")
    conv = await open_dm(bob, alice)
    await send(bob, conv["id"], "hello")
    second = await make_server()
    alice2 = Member(second, {"id": alice.id, "username": alice.name}, alice.token, "rest")
    assert (await listed(alice2, conv["id"]))["request"] is True
    (await alice2.call("conversations.accept", conversation_id=conv["id"])).expect()
    assert (await listed(alice, conv["id"]))["request"] is False


async def test_a_dm_from_before_these_rules_stays_a_conversation(
    make_server: ServerFactory,
) -> None:
    """A DM with messages and no stored state (written before privacy settings existed) is
    not turned into a request by its next message."""
    server = await make_server()
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    conv = await open_dm(bob, alice)
    await send(bob, conv["id"], "from before")
    await server.store.db["dm_states"].delete_many({})  # as before this feature
    second = await make_server()  # a process that never saw this DM
    bob2 = Member(second, {"id": bob.id, "username": bob.name}, bob.token, "rest")
    alice2 = Member(second, {"id": alice.id, "username": alice.name}, alice.token, "rest")
    await send(bob2, conv["id"], "and after")
    assert (await listed(alice2, conv["id"]))["request"] is False
