"""DMs, messages, history, the conversation list, read pointers, typing and access, over REST
and over WebSocket frames, with live events checked on the receiving clients.

The helpers at the top (Member, Result, join, TRANSPORTS) are shared by test_groups.py,
test_export.py and test_conv_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from bson import ObjectId

from handlers.app import COMMAND_ROUTES
from tests.client import OPEN_CLIENTS, ApiClient, WsClient
from tests.conftest import RunningServer

TRANSPORTS = ("rest", "ws")

# Error code -> HTTP status, to hold WebSocket error replies to the same statuses as REST.
STATUS_OF_CODE = {
    "validation_failed": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "blocked": 403,
    "dm_not_allowed": 403,
    "not_found": 404,
    "conflict": 409,
    "devices_changed": 409,
    "no_device": 403,
    "encrypted_conversation": 400,
    "too_many_reactions": 409,
    "too_large": 413,
    "group_full": 413,
    "rate_limited": 429,
    "database_unavailable": 503,
}


def rest_route(command: str) -> tuple[str, str]:
    """(HTTP method, path pattern) of a command, from the application's own route table."""
    for path, methods in COMMAND_ROUTES:
        for method, name in methods.items():
            if name == command:
                return method.upper(), path
    raise KeyError(command)


@dataclasses.dataclass
class Result:
    """A command's outcome, the same whichever transport carried it."""

    status: int  # the HTTP status; over WebSocket the one the reply's code stands for
    data: Any
    code: str | None = None
    field: str | None = None

    @property
    def ok(self) -> bool:
        return self.code is None

    def expect(self, status: int = 200) -> Any:
        assert self.ok and self.status == status, (self.status, self.code, self.data)
        return self.data

    def fails(self, status: int, code: str | None = None, field: str | None = None) -> None:
        assert self.status == status, (self.status, self.code, self.data)
        if code is not None:
            assert self.code == code, (self.code, self.data)
        if field is not None:
            assert self.field == field, (self.field, self.data)


class Member:
    """A signed-in user: an HTTP client, a WebSocket that receives its events, and the
    transport its commands go over."""

    def __init__(
        self, server: RunningServer, user: dict[str, Any], token: str, transport: str
    ) -> None:
        self.server = server
        self.id: str = user["id"]
        self.name: str = user["username"]
        self.token = token
        self.transport = transport
        self.api: ApiClient = server.client(token)
        self.ws: WsClient | None = None

    async def connect(self) -> WsClient:
        """A new authenticated socket (another tab); the first becomes self.ws."""
        ws = await WsClient.connect(self.server.ws_url)
        await ws.auth(self.token)
        if self.ws is None:
            self.ws = ws
        return ws

    async def call(self, command: str, **fields: Any) -> Result:
        """Run a command over this member's transport."""
        if self.transport == "ws":
            return await self.call_ws(command, **fields)
        return await self.call_rest(command, **fields)

    async def call_rest(self, command: str, **fields: Any) -> Result:
        method, pattern = rest_route(command)

        def fill(match: re.Match[str]) -> str:
            return quote(str(fields.pop(match.group(1))), safe="")

        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", fill, pattern)
        if method in ("GET", "DELETE"):
            if fields:
                path += "?" + urlencode(fields)
            response = await self.api.request(method, path)
        else:
            response = await self.api.request(method, path, fields)
        error = response.body.get("error") if isinstance(response.body, dict) else None
        if error:
            return Result(response.status, response.body, error["code"], error.get("field"))
        return Result(response.status, response.body)

    async def call_ws(self, command: str, ws: WsClient | None = None, **fields: Any) -> Result:
        ws = ws or self.ws or await self.connect()
        reply = await ws.command(command, **fields)
        if reply["ok"]:
            status = self.server.service.commands[command].status
            return Result(status, reply["data"])
        error = reply["error"]
        return Result(
            STATUS_OF_CODE.get(error["code"], 500), reply, error["code"], error.get("field")
        )

    async def call_parallel(self, n: int, command: str, **fields: Any) -> list[Result]:
        """The same command n times at once (over WebSocket: from n tabs, since one socket's
        replies are read in turn)."""
        if self.transport == "ws":
            tabs = [await self.connect() for _ in range(n)]
            calls = [self.call_ws(command, ws=tab, **fields) for tab in tabs]
        else:
            calls = [self.call_rest(command, **fields) for _ in range(n)]
        return list(await asyncio.gather(*calls))

    async def event(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The payload of this member's next event of this type."""
        assert self.ws is not None
        frame = await self.ws.event(kind, timeout=timeout)
        return frame["event"]  # type: ignore[no-any-return]

    async def no_event(self, kind: str, wait: float = 0.3) -> None:
        """Assert no event of this type arrives within `wait` seconds."""
        assert self.ws is not None
        with pytest.raises(TimeoutError):
            frame = await self.ws.event(kind, timeout=wait)
            raise AssertionError(f"unexpected event: {frame}")


_names = itertools.count(1)


@pytest.fixture(autouse=True)
async def close_sockets_cleanly() -> AsyncIterator[None]:
    """Finish each socket's close handshake inside the test's loop, so that none is left for
    the garbage collector (a ResourceWarning, which this suite turns into an error)."""
    yield
    sockets = [c for c in OPEN_CLIENTS if isinstance(c, WsClient)]
    for ws in sockets:
        ws.close()
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.wait_closed(timeout=2)


async def join(
    server: RunningServer, prefix: str, transport: str = "rest", *, online: bool = True
) -> Member:
    """Register a fresh user; online: with a live socket receiving its events."""
    api = server.client()
    reply = await api.register(f"{prefix}{next(_names)}")
    api.close()
    member = Member(server, reply["user"], reply["token"], transport)
    if online:
        await member.connect()
    return member


async def open_dm(a: Member, b: Member) -> dict[str, Any]:
    conversation: dict[str, Any] = (await a.call("conversations.open_dm", user_id=b.id)).expect()[
        "conversation"
    ]
    return conversation


async def send(member: Member, conversation_id: str, body: str, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = (
        await member.call("messages.send", conversation_id=conversation_id, body=body, **extra)
    ).expect(201)["message"]
    return message


async def history(member: Member, conversation_id: str, **args: Any) -> dict[str, Any]:
    page: dict[str, Any] = (
        await member.call("messages.history", conversation_id=conversation_id, **args)
    ).expect()
    return page


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


# -- DMs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_open_dm_is_idempotent_and_works_with_an_offline_user(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport, online=False)  # never connected
    first = await open_dm(alice, bob)
    assert first["kind"] == "dm" and first["name"] is None
    assert sorted(m["user_id"] for m in first["members"]) == sorted([alice.id, bob.id])
    assert {m["username"] for m in first["members"]} == {alice.name, bob.name}
    assert all(m["role"] == "member" for m in first["members"])
    assert first["last_message"] is None and first["unread_count"] == 0
    assert first["created_at"].endswith("Z") and first["last_activity_at"].endswith("Z")
    assert (await open_dm(alice, bob))["id"] == first["id"]
    assert (await open_dm(bob, alice))["id"] == first["id"]
    # An offline user can be written to; the message waits in history.
    await send(alice, first["id"], "are you there?")
    page = await history(bob, first["id"])
    assert [m["body"] for m in page["messages"]] == ["are you there?"]


async def test_concurrent_open_dm_yields_one_conversation(server: RunningServer) -> None:
    alice = await join(server, "alice", "rest", online=False)
    bob = await join(server, "bob", "ws")
    calls = [open_dm(alice, bob) for _ in range(4)] + [open_dm(bob, alice) for _ in range(4)]
    ids = {c["id"] for c in await asyncio.gather(*calls)}
    assert len(ids) == 1
    assert await server.store.db["conversations"].count_documents({"kind": "dm"}) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_open_dm_refuses_self_unknown_and_malformed_users(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    (await alice.call("conversations.open_dm", user_id=alice.id)).fails(
        400, "validation_failed", "user_id"
    )
    (await alice.call("conversations.open_dm", user_id=str(ObjectId()))).fails(404, "not_found")
    (await alice.call("conversations.open_dm", user_id="zzzz")).fails(404, "not_found")
    (await alice.call("conversations.open_dm")).fails(400, "validation_failed", "user_id")
    (await alice.call("conversations.open_dm", user_id=7)).fails(400, "validation_failed")


# -- sending --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_send_stores_replies_and_delivers_to_every_tab(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    alice_tab2 = await alice.connect()
    dm = await open_dm(alice, bob)
    message = await send(alice, dm["id"], "  hello bob  ", client_msg_id="c-1")
    assert message["body"] == "hello bob"  # trimmed, as stored
    assert message["conversation_id"] == dm["id"] and message["sender_id"] == alice.id
    assert message["seq"] == 1 and message["client_msg_id"] == "c-1"
    assert isinstance(message["id"], str) and message["created_at"].endswith("Z")
    assert set(message) == {
        "id",
        "conversation_id",
        "seq",
        "sender_id",
        "body",
        "client_msg_id",
        "created_at",
    }
    assert (await bob.event("message.new"))["message"] == message
    assert (await alice.event("message.new"))["message"] == message
    assert (await alice_tab2.event("message.new"))["event"]["message"] == message
    stored = await server.store.db["messages"].find_one({"client_msg_id": "c-1"})
    assert stored is not None and stored["seq"] == 1
    second = await send(bob, dm["id"], "hi alice")
    assert second["seq"] == 2 and second["client_msg_id"]  # a key is made when none is given


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_send_validates_the_body_and_the_key(server: RunningServer, transport: str) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    dm = await open_dm(alice, bob)
    cid = dm["id"]
    for body in ("", "   \n ", "x" * 4001):
        (await alice.call("messages.send", conversation_id=cid, body=body)).fails(
            400, "validation_failed", "body"
        )
    (await alice.call("messages.send", conversation_id=cid)).fails(400, "validation_failed", "body")
    (await alice.call("messages.send", conversation_id=cid, body=5)).fails(400, "validation_failed")
    for key in ("", "k" * 65, "caf\u00e9", "tab\there"):
        (await alice.call("messages.send", conversation_id=cid, body="x", client_msg_id=key)).fails(
            400, "validation_failed", "client_msg_id"
        )
    assert (await send(alice, cid, "y" * 4000))["body"] == "y" * 4000
    # The refused sends left no trace: the first event and the first seq are the valid one.
    first = (await bob.event("message.new"))["message"]
    assert first["body"] == "y" * 4000 and first["seq"] == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_retried_send_returns_the_stored_message(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    dm = await open_dm(alice, bob)
    first = await send(alice, dm["id"], "once", client_msg_id="retry-1")
    again = await send(alice, dm["id"], "once", client_msg_id="retry-1")
    assert again == first
    # Concurrent retries of a new key: still one message.
    replies = await alice.call_parallel(
        5, "messages.send", conversation_id=dm["id"], body="twice?", client_msg_id="retry-2"
    )
    results = [r.expect(201)["message"] for r in replies]
    assert len({r["id"] for r in results}) == 1
    assert (await bob.event("message.new"))["message"]["id"] == first["id"]
    assert (await bob.event("message.new"))["message"]["id"] == results[0]["id"]
    await bob.no_event("message.new")
    page = await history(bob, dm["id"])
    assert [m["body"] for m in page["messages"]] == ["once", "twice?"]
    # The key belongs to the sender: another user may use the same one.
    assert (await send(bob, dm["id"], "mine", client_msg_id="retry-1"))["sender_id"] == bob.id
    # Reusing a key in another conversation is a conflict, not a silent no-op.
    carol = await join(server, "carol", transport)
    other = await open_dm(alice, carol)
    (
        await alice.call(
            "messages.send", conversation_id=other["id"], body="x", client_msg_id="retry-1"
        )
    ).fails(409, "conflict", "client_msg_id")


async def test_concurrent_sends_get_unique_increasing_seqs_seen_by_all_in_order(
    server: RunningServer,
) -> None:
    owner = await join(server, "owner", "rest")
    senders = [await join(server, f"s{t}-", t) for t in ("rest", "ws", "rest", "ws")]
    watcher = await join(server, "watch", "rest")
    group = (
        await owner.call(
            "groups.create",
            name="busy",
            member_ids=[s.id for s in senders] + [watcher.id],
        )
    ).expect(201)["conversation"]
    per_sender = 25

    async def burst(member: Member) -> list[dict[str, Any]]:
        return [await send(member, group["id"], f"{member.name} {i}") for i in range(per_sender)]

    async def burst_parallel(member: Member) -> list[dict[str, Any]]:
        # Many sends of one client in flight at once (REST: concurrent requests; WebSocket:
        # five tabs), so that inserts finish out of seq order and the ordering is exercised.
        replies = await member.call_parallel(
            per_sender, "messages.send", conversation_id=group["id"], body=member.name
        )
        return [r.expect(201)["message"] for r in replies]

    sent = await asyncio.gather(
        burst(senders[0]),
        burst(senders[1]),
        burst_parallel(senders[2]),
        burst_parallel(senders[3]),
    )
    all_seqs = sorted(m["seq"] for batch in sent for m in batch)
    total = per_sender * len(senders)
    assert all_seqs == list(range(1, total + 1))  # unique, no gap without a failure
    for batch in sent[:2]:
        assert seqs(batch) == sorted(seqs(batch))  # one client's sequential sends increase
    for member in [owner, watcher, *senders]:
        received = [(await member.event("message.new"))["message"]["seq"] for _ in range(total)]
        assert received == list(range(1, total + 1)), member.name
        await member.no_event("message.new", wait=0.05)


# -- history --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_history_pages_newest_first_returned_oldest_first(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport, online=False)
    bob = await join(server, "bob", transport, online=False)
    dm = await open_dm(alice, bob)
    cid = dm["id"]
    await server.store.conversations.import_messages(
        cid, alice.id, [f"m{i}" for i in range(1, 121)], "imp-"
    )
    newest = await history(bob, cid)
    assert seqs(newest["messages"]) == list(range(71, 121)) and newest["has_more"] is True
    older = await history(bob, cid, before_seq=71)
    assert seqs(older["messages"]) == list(range(21, 71)) and older["has_more"] is True
    oldest = await history(bob, cid, before_seq=21)
    assert seqs(oldest["messages"]) == list(range(1, 21)) and oldest["has_more"] is False
    forward = await history(bob, cid, after_seq=100, limit=10)
    assert seqs(forward["messages"]) == list(range(101, 111)) and forward["has_more"] is True
    tail = await history(bob, cid, after_seq=110, limit=10)
    assert seqs(tail["messages"]) == list(range(111, 121)) and tail["has_more"] is False
    assert (await history(bob, cid, after_seq=120))["messages"] == []
    window = await history(bob, cid, after_seq=10, before_seq=15)
    assert seqs(window["messages"]) == [11, 12, 13, 14] and window["has_more"] is False
    assert seqs((await history(bob, cid, limit=1))["messages"]) == [120]
    assert len((await history(bob, cid, limit=100))["messages"]) == 100
    for bad in ({"limit": 0}, {"limit": 101}, {"before_seq": 0}, {"after_seq": -1}):
        (await bob.call("messages.history", conversation_id=cid, **bad)).fails(
            400, "validation_failed", next(iter(bad))
        )
    (await bob.call("messages.history", conversation_id=cid, limit="ten")).fails(400)


async def test_history_skips_seq_gaps(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    await server.store.conversations.import_messages(cid, alice.id, ["a"] * 30, "a-")
    # A burst of seqs whose messages were never stored (allocated, then the insert failed).
    await server.store.db["conversations"].update_one(
        {"_id": ObjectId(cid)}, {"$inc": {"last_seq": 200}}
    )
    await server.store.conversations.import_messages(cid, alice.id, ["b"] * 30, "b-")
    page = await history(bob, cid)
    assert seqs(page["messages"]) == list(range(11, 31)) + list(range(231, 261))
    assert page["has_more"] is True
    rest = await history(bob, cid, before_seq=11)
    assert seqs(rest["messages"]) == list(range(1, 11)) and rest["has_more"] is False
    forward = await history(bob, cid, after_seq=25, limit=10)
    assert seqs(forward["messages"]) == [26, 27, 28, 29, 30, 231, 232, 233, 234, 235]
    listed = (await bob.call("conversations.list")).expect()["conversations"][0]
    assert listed["last_message"]["seq"] == 260 and listed["unread_count"] == 60


async def test_paging_back_through_1000_messages_while_another_client_sends(
    server: RunningServer,
) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob", online=False)
    cid = (await open_dm(alice, bob))["id"]
    await server.store.conversations.import_messages(
        cid, alice.id, [f"old {i}" for i in range(1000)], "old-"
    )
    stop = asyncio.Event()
    sent: list[int] = []

    async def keep_sending(member: Member) -> None:
        n = 0
        while not stop.is_set():
            sent.append((await send(member, cid, f"live {member.name} {n}"))["seq"])
            n += 1

    async def keep_reading_the_newest() -> list[list[int]]:
        # A client catching up reads the newest page again and again while messages arrive:
        # each of those pages must be a gapless tail too (a message still being stored must
        # not let a later one show first).
        tails = []
        while not stop.is_set():
            tails.append(seqs((await history(alice, cid, limit=20))["messages"]))
        return tails

    senders = [asyncio.create_task(keep_sending(m)) for m in (alice, bob, alice, bob)]
    reader = asyncio.create_task(keep_reading_the_newest())
    try:
        await asyncio.sleep(0.05)
        pages = [await history(bob, cid, limit=50)]
        while pages[-1]["has_more"]:
            await asyncio.sleep(0.005)  # let the senders interleave with the pages
            pages.append(
                await history(bob, cid, limit=50, before_seq=pages[-1]["messages"][0]["seq"])
            )
    finally:
        stop.set()
        await asyncio.gather(*senders)
        tails = await reader
    backwards = [s for page in reversed(pages) for s in seqs(page["messages"])]
    assert len(sent) > 10  # the senders really ran during the paging
    assert len(tails) > 10
    for tail in tails:
        assert tail == list(range(tail[0], tail[0] + 20)), tail
    assert backwards == list(range(1, backwards[-1] + 1))  # no gap, no duplicate
    assert len(pages) >= 20
    # Forward from the first page's end: exactly what was sent after it.
    forward: list[int] = []
    cursor = backwards[-1]
    while True:
        page = await history(bob, cid, after_seq=cursor, limit=50)
        forward += seqs(page["messages"])
        if not page["has_more"]:
            break
        cursor = forward[-1]
    assert backwards + forward == list(range(1, 1001 + len(sent)))


# -- the conversation list, read pointers, typing -------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_conversation_list_newest_first_with_last_message_and_unread(
    server: RunningServer, transport: str
) -> None:
    me = await join(server, "me", transport)
    friends = [await join(server, f"f{i}-", "rest") for i in range(3)]
    dms = [await open_dm(me, f) for f in friends]
    group = (await me.call("groups.create", name="all", member_ids=[f.id for f in friends])).expect(
        201
    )["conversation"]
    await send(friends[0], dms[0]["id"], "one")
    await send(friends[0], dms[0]["id"], "two")
    await send(me, dms[0]["id"], "mine")  # not unread for me
    await send(friends[2], dms[2]["id"], "three")
    await send(friends[1], group["id"], "to the group")
    listed = (await me.call("conversations.list")).expect()
    convs = listed["conversations"]
    assert [c["id"] for c in convs] == [group["id"], dms[2]["id"], dms[0]["id"], dms[1]["id"]]
    assert listed["has_more"] is False and listed["next_before"] is None
    by_id = {c["id"]: c for c in convs}
    assert by_id[dms[0]["id"]]["unread_count"] == 2
    assert by_id[dms[0]["id"]]["last_message"]["body"] == "mine"
    assert by_id[dms[1]["id"]]["unread_count"] == 0 and by_id[dms[1]["id"]]["last_message"] is None
    assert by_id[group["id"]]["unread_count"] == 1
    assert len(by_id[group["id"]]["members"]) == 4
    # The friend sees its own messages as read.
    theirs = (await friends[0].call("conversations.list")).expect()["conversations"]
    assert {c["id"]: c["unread_count"] for c in theirs} == {dms[0]["id"]: 1, group["id"]: 1}
    # Reading clears the count.
    (await me.call("conversations.read", conversation_id=dms[0]["id"], seq=3)).expect()
    listed = (await me.call("conversations.list")).expect()["conversations"]
    assert {c["id"]: c["unread_count"] for c in listed}[dms[0]["id"]] == 0
    # Pages: newest first, then on from the cursor, nothing missed or repeated.
    first = (await me.call("conversations.list", limit=3)).expect()
    assert first["has_more"] is True and len(first["conversations"]) == 3
    rest = (await me.call("conversations.list", limit=3, before=first["next_before"])).expect()
    assert [c["id"] for c in first["conversations"] + rest["conversations"]] == [
        c["id"] for c in listed
    ]
    assert rest["has_more"] is False
    (await me.call("conversations.list", before="garbage")).fails(400, "validation_failed")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_read_pointer_moves_forward_only_and_sends_receipts(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    for i in range(5):
        await send(alice, cid, f"m{i}")
    reply = (await bob.call("conversations.read", conversation_id=cid, seq=3)).expect()
    assert reply == {"conversation_id": cid, "seq": 3, "unread_count": 2}
    receipt = await alice.event("conversation.read")
    assert receipt == {
        "type": "conversation.read",
        "conversation_id": cid,
        "user_id": bob.id,
        "seq": 3,
    }
    assert (await bob.event("conversation.read"))["seq"] == 3  # the reader's other tabs too
    # Backwards: nothing moves, nobody is told.
    back = (await bob.call("conversations.read", conversation_id=cid, seq=1)).expect()
    assert back["seq"] == 3
    await alice.no_event("conversation.read")
    # Past the end: clamped to the last message.
    ahead = (await bob.call("conversations.read", conversation_id=cid, seq=999)).expect()
    assert ahead == {"conversation_id": cid, "seq": 5, "unread_count": 0}
    assert (await alice.event("conversation.read"))["seq"] == 5
    (await bob.call("conversations.read", conversation_id=cid)).fails(
        400, "validation_failed", "seq"
    )
    (await bob.call("conversations.read", conversation_id=cid, seq=-1)).fails(400)
    listed = (await bob.call("conversations.list")).expect()["conversations"][0]
    assert listed["read_seq"] == 5 and listed["unread_count"] == 0
    # The others see where bob is: receipts after a reload.
    seen_by_alice = (await alice.call("conversations.list")).expect()["conversations"][0]
    assert seen_by_alice["reads"][bob.id] == 5


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_typing_reaches_the_others_and_is_rate_limited(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    cid = (await open_dm(alice, bob))["id"]
    assert (await alice.call("typing", conversation_id=cid)).expect() == {"forwarded": True}
    event = await bob.event("typing")
    assert event == {"type": "typing", "conversation_id": cid, "user_id": alice.id}
    await alice.no_event("typing", wait=0.05)  # not echoed to the typist
    # Repeated at once: accepted, not forwarded (once per interval is all a client needs).
    assert (await alice.call("typing", conversation_id=cid)).expect() == {"forwarded": False}
    await bob.no_event("typing")
    assert await server.store.db["messages"].count_documents({}) == 0  # never stored


async def test_typing_across_many_conversations_hits_the_per_user_rate(
    server: RunningServer,
) -> None:
    alice = await join(server, "alice", "rest")
    others = [await join(server, f"o{i}-", online=False) for i in range(16)]
    dms = [await open_dm(alice, o) for o in others]
    # At once: the per-user bucket refills while the calls take their time.
    results = list(
        await asyncio.gather(*(alice.call("typing", conversation_id=dm["id"]) for dm in dms))
    )
    assert sum(r.ok for r in results) >= 10  # the burst
    limited = [r for r in results if not r.ok]
    assert limited and all(r.status == 429 and r.code == "rate_limited" for r in limited)


async def test_presence_reaches_dm_partners(server: RunningServer) -> None:
    alice = await join(server, "alice", online=False)
    bob = await join(server, "bob")
    stranger = await join(server, "stranger")
    await open_dm(alice, bob)
    await alice.connect()
    event = await bob.event("presence")
    assert event["user_id"] == alice.id and event["status"] == "online"
    await stranger.no_event("presence")


# -- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_outsiders_get_nothing_from_any_command(
    server: RunningServer, transport: str
) -> None:
    alice = await join(server, "alice", transport)
    bob = await join(server, "bob", transport)
    eve = await join(server, "eve", transport)
    dm = await open_dm(alice, bob)
    group = (await alice.call("groups.create", name="secret", member_ids=[bob.id])).expect(201)
    gid = group["conversation"]["id"]
    await send(alice, dm["id"], "private")
    for cid in (dm["id"], gid, str(ObjectId()), "0" * 24, "nothex"):
        attempts = [
            await eve.call("messages.history", conversation_id=cid),
            await eve.call("messages.history", conversation_id=cid, after_seq=0),
            await eve.call("messages.send", conversation_id=cid, body="hi"),
            await eve.call("conversations.read", conversation_id=cid, seq=1),
            await eve.call("typing", conversation_id=cid),
            await eve.call("groups.get", conversation_id=cid),
            await eve.call("groups.update", conversation_id=cid, name="mine"),
            await eve.call("groups.add_members", conversation_id=cid, user_ids=[eve.id]),
            await eve.call("groups.remove_member", conversation_id=cid, user_id=bob.id),
            await eve.call("groups.remove_member", conversation_id=cid, user_id=eve.id),
            await eve.call("groups.set_role", conversation_id=cid, user_id=bob.id, role="admin"),
        ]
        for result in attempts:
            result.fails(404, "not_found")
            assert "private" not in str(result.data)
        export = await eve.api.get(f"/api/conversations/{cid}/export")
        assert export.status == 404 and export.error_code == "not_found"
    # Unchanged, and nothing leaked to eve's socket or list or export.
    assert (await alice.call("groups.get", conversation_id=gid)).expect()["conversation"][
        "name"
    ] == "secret"
    assert (await eve.call("conversations.list")).expect()["conversations"] == []
    everything = await eve.api.get("/api/export")
    assert everything.status == 200 and everything.body["conversations"] == []
    assert eve.ws is not None
    await asyncio.sleep(0.1)
    kinds = [f["event"]["type"] for f in eve.ws.frames if f.get("type") == "event"]
    assert not [k for k in kinds if k.startswith(("message", "group", "conversation", "typing"))]
    # Without a token: 401 everywhere.
    anonymous = server.client()
    assert (await anonymous.get(f"/api/conversations/{dm['id']}/messages")).status == 401
    assert (await anonymous.get(f"/api/conversations/{dm['id']}/export")).status == 401
    assert (await anonymous.get("/api/conversations")).status == 401
    anonymous.close()


async def test_blocked_pair_cannot_dm(server: RunningServer) -> None:
    alice = await join(server, "alice")
    bob = await join(server, "bob")
    cid = (await open_dm(alice, bob))["id"]
    await send(alice, cid, "before the block")
    assert (await bob.api.put(f"/api/blocks/{alice.id}")).status == 200
    (await alice.call("messages.send", conversation_id=cid, body="hey")).fails(403, "blocked")
    (await bob.call("messages.send", conversation_id=cid, body="hey")).fails(403, "blocked")
    (await alice.call("conversations.open_dm", user_id=bob.id)).fails(403, "blocked")
    (await alice.call("typing", conversation_id=cid)).fails(403, "blocked")
    assert (await bob.event("message.new"))["message"]["body"] == "before the block"
    await bob.no_event("message.new")
    # History stays readable by both: the block stops new messages, it does not erase.
    assert [m["body"] for m in (await history(alice, cid))["messages"]] == ["before the block"]
    assert (await bob.api.delete(f"/api/blocks/{alice.id}")).status == 200
    await send(alice, cid, "after the block")
