"""Friend requests and friends over REST and WebSocket, with live events checked on the
receiving client; the races between accept and cancel and between mutual requests.

The helpers at the top (Person, TRANSPORTS) are shared by test_social_search.py and
test_social_blocks.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.client import WsClient
from tests.conftest import RunningServer, ServerFactory

TRANSPORTS = ("rest", "ws")

# The REST face of each social command: method and path template.
ROUTES: dict[str, tuple[str, str]] = {
    "users.search": ("GET", "/api/users"),
    "users.by_code": ("GET", "/api/users/by-code/{code}"),
    "friends.list": ("GET", "/api/friends"),
    "friends.request": ("POST", "/api/friends/requests"),
    "friends.requests": ("GET", "/api/friends/requests"),
    "friends.accept": ("POST", "/api/friends/requests/{request_id}/accept"),
    "friends.decline": ("POST", "/api/friends/requests/{request_id}/decline"),
    "friends.cancel": ("DELETE", "/api/friends/requests/{request_id}"),
    "friends.remove": ("DELETE", "/api/friends/{user_id}"),
    "blocks.add": ("PUT", "/api/blocks/{user_id}"),
    "blocks.remove": ("DELETE", "/api/blocks/{user_id}"),
    "blocks.list": ("GET", "/api/blocks"),
    "presence.subscribe": ("POST", "/api/presence/subscribe"),
}


# Sockets the tests opened, closed after each test by `drain_sockets`.
OPEN_SOCKETS: list[WsClient] = []


async def close_socket(ws: WsClient) -> None:
    """Close and read to the end: Tornado's client reads no further (not even the server's
    close frame) while an unread message waits, which would leave the socket open."""
    ws.close()
    with contextlib.suppress(TimeoutError):
        await ws.wait_closed(timeout=5)


@pytest.fixture(autouse=True)
async def drain_sockets(make_server: ServerFactory) -> AsyncIterator[None]:
    """Close every socket a Person opened, before the servers stop (import it to use it)."""
    yield
    while OPEN_SOCKETS:
        await close_socket(OPEN_SOCKETS.pop())


@dataclasses.dataclass
class Result:
    """A command's outcome, the same shape whichever transport carried it."""

    ok: bool
    status: int | None  # the HTTP status over REST; None over WebSocket
    data: Any
    code: str | None = None
    field: str | None = None

    def expect(self, status: int) -> Any:
        """The data of a success with this REST status (any success over WebSocket)."""
        assert self.ok, (self.code, self.data)
        assert self.status in (status, None), (self.status, self.data)
        return self.data

    def fails(self, status: int, code: str) -> None:
        assert not self.ok, self.data
        assert self.code == code, (self.code, self.data)
        assert self.status in (status, None), self.status


class Person:
    """A signed-in user with an HTTP client and a live WebSocket that receives its events."""

    def __init__(self, server: RunningServer, user: dict[str, Any], token: str) -> None:
        self.server = server
        self.user = user
        self.id: str = user["id"]
        self.name: str = user["username"]
        self.code: str = user["friend_code"]
        self.token = token
        self.api = server.client(token)
        self.ws: WsClient | None = None
        self.queue_id: str | None = None

    @classmethod
    async def join(cls, server: RunningServer, name: str, *, online: bool = True) -> Person:
        api = server.client()
        reply = await api.register(name)
        api.close()
        person = cls(server, reply["user"], reply["token"])
        if online:
            await person.connect()
        return person

    async def connect(self) -> WsClient:
        """Open a socket (the user goes online) and keep it for events and WS commands."""
        ws = await WsClient.connect(self.server.ws_url)
        hello = await ws.auth(self.token)
        self.ws, self.queue_id = ws, hello["queue_id"]
        OPEN_SOCKETS.append(ws)
        return ws

    async def disconnect(self) -> None:
        """Close the socket and wait for the server to close its side."""
        assert self.ws is not None
        OPEN_SOCKETS.remove(self.ws)
        await close_socket(self.ws)
        self.ws = None

    async def call(self, transport: str, command: str, **fields: Any) -> Result:
        """Run the command over REST or over this person's socket."""
        if transport == "ws":
            assert self.ws is not None, "offline"
            reply = await self.ws.command(command, **fields)
            if reply["ok"]:
                return Result(True, None, reply["data"])
            error = reply["error"]
            return Result(False, None, reply, error["code"], error.get("field"))
        method, template = ROUTES[command]
        path_fields = {k: v for k, v in fields.items() if "{" + k + "}" in template}
        rest = {k: v for k, v in fields.items() if k not in path_fields}
        path = template.format(**{k: quote(str(v), safe="") for k, v in path_fields.items()})
        if method in ("GET", "DELETE"):
            if rest:
                path += "?" + urlencode(rest)
            response = await self.api.request(method, path)
        else:
            response = await self.api.request(method, path, rest)
        if 200 <= response.status < 300:
            return Result(True, response.status, response.body)
        error = response.body["error"]
        return Result(False, response.status, response.body, error["code"], error.get("field"))

    async def rest(self, command: str, **fields: Any) -> Result:
        return await self.call("rest", command, **fields)

    async def event(self, event_type: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next live event of this type on the socket (the payload)."""
        assert self.ws is not None
        frame = await self.ws.event(event_type, timeout=timeout)
        payload: dict[str, Any] = frame["event"]
        return payload

    async def no_event(self, event_type: str | None = None, within: float = 0.3) -> None:
        """Fail if an event (of this type) arrives within the time given."""
        assert self.ws is not None
        try:
            frame = await self.ws.event(event_type, timeout=within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event: {frame}")

    def pending_events(self) -> list[dict[str, Any]]:
        """Event payloads read from the socket but not consumed yet."""
        assert self.ws is not None
        return [f["event"] for f in self.ws.frames if f.get("type") == "event"]


async def people(server: RunningServer, *names: str, online: bool = True) -> list[Person]:
    return [await Person.join(server, name, online=online) for name in names]


def public_user_shape(user: dict[str, Any]) -> None:
    """What one user may see of another: never the email or the friend code."""
    assert "email" not in user and "friend_code" not in user, user
    assert "password_hash" not in json.dumps(user)


async def become_friends(a: Person, b: Person) -> None:
    request = (await a.rest("friends.request", user_id=b.id)).expect(201)["request"]
    (await b.rest("friends.accept", request_id=request["id"])).expect(200)


async def friend_ids(person: Person) -> list[str]:
    friends = (await person.rest("friends.list")).expect(200)["friends"]
    return [f["id"] for f in friends]


async def pending(person: Person) -> tuple[list[str], list[str]]:
    """Ids of the person's incoming and outgoing pending requests."""
    requests = (await person.rest("friends.requests")).expect(200)["requests"]
    return [r["id"] for r in requests["incoming"]], [r["id"] for r in requests["outgoing"]]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each command-level test runs once over REST and once over WebSocket."""
    param: str = request.param
    return param


# -- requests, accept, friends list, remove ---------------------------------------------


async def test_request_accept_list_remove(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    sent = (await alice.call(transport, "friends.request", user_id=bob.id)).expect(201)
    request = sent["request"]
    assert request["from_user_id"] == alice.id and request["to_user_id"] == bob.id
    assert request["status"] == "pending" and request["created_at"].endswith("Z")
    assert request["from_user"]["username"] == "alice" and request["to_user"]["id"] == bob.id
    public_user_shape(request["from_user"])
    public_user_shape(request["to_user"])

    # Bob is told live, with the sender as a public user.
    live = await bob.event("friend.request")
    assert live["request"] == request
    # The sender's own tabs learn about it too (their outgoing list).
    assert (await alice.event("friend.request"))["request"]["id"] == request["id"]

    listed = (await bob.call(transport, "friends.requests")).expect(200)["requests"]
    assert [r["id"] for r in listed["incoming"]] == [request["id"]] and listed["outgoing"] == []
    assert listed["incoming"][0] == request
    assert await pending(alice) == ([], [request["id"]])

    accepted = (await bob.call(transport, "friends.accept", request_id=request["id"])).expect(200)
    assert accepted["request"]["id"] == request["id"]
    assert accepted["request"]["status"] == "accepted"
    assert accepted["user"]["id"] == alice.id and accepted["user"]["presence"] == "online"
    public_user_shape(accepted["user"])
    # Both are told; each gets the other, with current presence.
    for me, other in ((alice, bob), (bob, alice)):
        event = await me.event("friend.accepted")
        assert event["request"]["id"] == request["id"]
        assert event["user"]["id"] == other.id and event["user"]["presence"] == "online"
        public_user_shape(event["user"])

    for me, other in ((alice, bob), (bob, alice)):
        friends = (await me.call(transport, "friends.list")).expect(200)["friends"]
        assert [f["id"] for f in friends] == [other.id]
        assert friends[0]["presence"] == "online" and "last_seen" in friends[0]
        assert friends[0]["friends_since"].endswith("Z")
        public_user_shape(friends[0])
        assert await pending(me) == ([], [])

    removed = (await alice.call(transport, "friends.remove", user_id=bob.id)).expect(200)
    assert removed["user"] == {"id": bob.id, "username": "bob"}
    assert (await alice.event("friend.removed"))["user"] == {"id": bob.id, "username": "bob"}
    assert (await bob.event("friend.removed"))["user"] == {"id": alice.id, "username": "alice"}
    assert await friend_ids(alice) == [] and await friend_ids(bob) == []
    again = await bob.call(transport, "friends.remove", user_id=alice.id)
    again.fails(404, "not_found")


async def test_request_by_friend_code_in_any_form(server: RunningServer, transport: str) -> None:
    alice, bob, carol, dave = await people(server, "alice", "bob", "carol", "dave")
    forms = {
        bob: bob.code,  # as shown: K7QX-M2PD
        carol: carol.code.replace("-", "").lower(),
        dave: " " + dave.code.lower() + " ",
    }
    for target, code in forms.items():
        sent = await alice.call(transport, "friends.request", friend_code=code)
        assert sent.expect(201)["request"]["to_user_id"] == target.id
        assert (await target.event("friend.request"))["request"]["from_user_id"] == alice.id
    unknown = await alice.call(transport, "friends.request", friend_code="2222-2222")
    unknown.fails(404, "not_found")
    malformed = await alice.call(transport, "friends.request", friend_code="not a code!")
    malformed.fails(404, "not_found")


async def test_request_rules(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")

    async def request(**fields: Any) -> Result:
        return await alice.call(transport, "friends.request", **fields)

    (await request(user_id=alice.id)).fails(400, "validation_failed")
    selfie = await request(friend_code=alice.code)
    selfie.fails(400, "validation_failed")
    assert selfie.field == "friend_code"
    (await request()).fails(400, "validation_failed")
    (await request(user_id=bob.id, friend_code=bob.code)).fails(400, "validation_failed")
    (await request(user_id="0" * 24)).fails(404, "not_found")
    (await request(user_id="not-an-id")).fails(400, "validation_failed")
    (await request(user_id="abc123")).fails(404, "not_found")
    (await request(user_id=12)).fails(400, "validation_failed")

    first = (await request(user_id=bob.id)).expect(201)["request"]
    await bob.event("friend.request")
    # A second request to the same person is a conflict, not a duplicate.
    (await request(user_id=bob.id)).fails(409, "conflict")
    (await request(friend_code=bob.code)).fails(409, "conflict")
    assert await pending(bob) == ([first["id"]], [])
    await bob.no_event("friend.request")

    # Only the recipient answers, only the sender cancels.
    (await alice.call(transport, "friends.accept", request_id=first["id"])).fails(404, "not_found")
    (await alice.call(transport, "friends.decline", request_id=first["id"])).fails(404, "not_found")
    (await bob.call(transport, "friends.cancel", request_id=first["id"])).fails(404, "not_found")
    (await bob.call(transport, "friends.accept", request_id="f" * 24)).fails(404, "not_found")
    (await bob.call(transport, "friends.accept", request_id="zz")).fails(404, "not_found")

    (await bob.call(transport, "friends.accept", request_id=first["id"])).expect(200)
    (await request(user_id=bob.id)).fails(409, "conflict")  # already friends
    back = await bob.call(transport, "friends.request", user_id=alice.id)
    back.fails(409, "conflict")
    assert await friend_ids(alice) == [bob.id]


async def test_asking_back_accepts(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    first = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
    await bob.event("friend.request")
    back = await bob.call(transport, "friends.request", user_id=alice.id)
    data = back.expect(200)  # 200, not 201: no new request, a friendship
    assert data["request"]["id"] == first["id"] and data["request"]["status"] == "accepted"
    assert data["user"]["id"] == alice.id
    assert (await alice.event("friend.accepted"))["user"]["id"] == bob.id
    assert (await bob.event("friend.accepted"))["user"]["id"] == alice.id
    assert await friend_ids(alice) == [bob.id] and await friend_ids(bob) == [alice.id]
    assert await pending(alice) == ([], []) and await pending(bob) == ([], [])


async def test_decline_tells_the_sender(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
    declined = (await bob.call(transport, "friends.decline", request_id=request["id"])).expect(200)
    assert declined["request"]["id"] == request["id"]
    assert declined["request"]["status"] == "declined"
    event = await alice.event("friend.request.cancelled")
    assert event["request"]["id"] == request["id"] and event["request"]["status"] == "declined"
    assert await pending(alice) == ([], []) and await pending(bob) == ([], [])
    assert await friend_ids(alice) == []
    (await bob.call(transport, "friends.accept", request_id=request["id"])).fails(404, "not_found")
    # Declined is not forever: Alice may ask again.
    (await alice.rest("friends.request", user_id=bob.id)).expect(201)


async def test_cancel_tells_the_recipient(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
    await bob.event("friend.request")
    cancelled = (await alice.call(transport, "friends.cancel", request_id=request["id"])).expect(
        200
    )
    assert cancelled["request"]["status"] == "cancelled"
    event = await bob.event("friend.request.cancelled")
    assert event["request"]["id"] == request["id"] and event["request"]["status"] == "cancelled"
    # Accepting a request that was cancelled meanwhile: gone.
    (await bob.call(transport, "friends.accept", request_id=request["id"])).fails(404, "not_found")
    (await alice.call(transport, "friends.cancel", request_id=request["id"])).fails(
        404, "not_found"
    )
    assert await friend_ids(bob) == [] and await pending(bob) == ([], [])
    await bob.no_event("friend.accepted")


async def test_requests_listed_newest_first(server: RunningServer) -> None:
    alice, bob, carol, dave = await people(server, "alice", "bob", "carol", "dave", online=False)
    r1 = (await bob.rest("friends.request", user_id=alice.id)).expect(201)["request"]
    r2 = (await carol.rest("friends.request", user_id=alice.id)).expect(201)["request"]
    r3 = (await alice.rest("friends.request", user_id=dave.id)).expect(201)["request"]
    assert await pending(alice) == ([r2["id"], r1["id"]], [r3["id"]])


async def test_friend_request_reaches_a_long_polling_client(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob", online=False)
    first = await bob.api.get("/api/events")
    queue_id = first.body["queue_id"]
    poll = asyncio.ensure_future(
        bob.api.get(f"/api/events?queue_id={queue_id}&last_event_id=0&timeout=10")
    )
    await asyncio.sleep(0.1)
    request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
    response = await poll
    events = [item["event"] for item in response.body["events"]]
    assert {"type": "friend.request", "request": request} in events


# -- concurrency ---------------------------------------------------------------------


async def test_concurrent_accept_and_cancel_have_one_outcome(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob")
    outcomes: set[str] = set()
    for _ in range(6):
        request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
        await bob.event("friend.request")
        accept, cancel = await asyncio.gather(
            bob.rest("friends.accept", request_id=request["id"]),
            alice.rest("friends.cancel", request_id=request["id"]),
        )
        assert accept.ok != cancel.ok, (accept, cancel)  # exactly one wins
        loser = cancel if accept.ok else accept
        loser.fails(404, "not_found")
        friends = await friend_ids(alice)
        assert await pending(alice) == ([], []) and await pending(bob) == ([], [])
        if accept.ok:
            outcomes.add("accepted")
            assert friends == [bob.id] and await friend_ids(bob) == [alice.id]
            await alice.event("friend.accepted")
            await bob.event("friend.accepted")
            (await alice.rest("friends.remove", user_id=bob.id)).expect(200)
            await alice.event("friend.removed")
            await bob.event("friend.removed")
        else:
            outcomes.add("cancelled")
            assert friends == [] and await friend_ids(bob) == []
            await bob.event("friend.request.cancelled")
        assert not [e for e in bob.pending_events() if e["type"].startswith("friend.")]
    assert outcomes  # at least one round ran; which side wins each race is up to timing


async def test_concurrent_mutual_requests_make_one_friendship(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob")
    for _ in range(5):
        ab, ba = await asyncio.gather(
            alice.rest("friends.request", user_id=bob.id),
            bob.rest("friends.request", user_id=alice.id),
        )
        # One created the request, the other accepted it by asking back.
        assert sorted([ab.status, ba.status]) == [200, 201], (ab, ba)
        assert await friend_ids(alice) == [bob.id] and await friend_ids(bob) == [alice.id]
        assert await pending(alice) == ([], []) and await pending(bob) == ([], [])
        assert (await alice.event("friend.accepted"))["user"]["id"] == bob.id
        assert (await bob.event("friend.accepted"))["user"]["id"] == alice.id
        (await bob.rest("friends.remove", user_id=alice.id)).expect(200)
    count = await server.store.db["friendships"].count_documents({})
    assert count == 0


async def test_concurrent_accepts_of_one_request(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob")
    request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
    results = await asyncio.gather(
        *(bob.rest("friends.accept", request_id=request["id"]) for _ in range(4))
    )
    assert sorted(r.status or 0 for r in results) == [200, 404, 404, 404]
    assert await friend_ids(bob) == [alice.id]
    await bob.event("friend.accepted")
    await bob.no_event("friend.accepted")


# -- presence through friendship -------------------------------------------------------


async def test_friends_see_each_others_presence(make_server: ServerFactory) -> None:
    server = await make_server(presence_grace_secs=0.05)
    alice, bob, carol = await people(server, "alice", "bob", "carol")
    await become_friends(alice, bob)
    await alice.event("friend.accepted")

    await bob.disconnect()
    offline = await alice.event("presence")
    assert offline["user_id"] == bob.id and offline["status"] == "offline"
    assert offline["last_seen"] is not None
    friends = (await alice.rest("friends.list")).expect(200)["friends"]
    assert friends[0]["presence"] == "offline" and friends[0]["last_seen"] == offline["last_seen"]
    await bob.connect()
    online = await alice.event("presence")
    assert online["user_id"] == bob.id and online["status"] == "online"
    # Carol is nobody's friend: she sees none of it.
    await carol.no_event("presence", within=0.2)

    (await alice.rest("friends.remove", user_id=bob.id)).expect(200)
    await alice.event("friend.removed")
    await bob.disconnect()
    await asyncio.sleep(0.2)
    await bob.connect()
    await alice.no_event("presence", within=0.3)


async def test_new_friend_gets_current_offline_presence(server: RunningServer) -> None:
    alice, bob = await people(server, "alice", "bob", online=False)
    await alice.connect()
    request = (await alice.rest("friends.request", user_id=bob.id)).expect(201)["request"]
    accepted = (await bob.rest("friends.accept", request_id=request["id"])).expect(200)
    assert accepted["user"]["presence"] == "online"  # Alice is connected
    event = await alice.event("friend.accepted")
    assert event["user"]["id"] == bob.id and event["user"]["presence"] == "offline"


async def test_presence_audience_includes_friends(server: RunningServer) -> None:
    alice, bob, carol = await people(server, "alice", "bob", "carol", online=False)
    await become_friends(alice, bob)
    await become_friends(carol, alice)
    service = server.service
    assert await service.presence_audience(alice.id) >= {bob.id, carol.id}
    assert carol.id not in await service.presence_audience(bob.id)
    (await alice.rest("friends.remove", user_id=carol.id)).expect(200)
    assert carol.id not in await service.presence_audience(alice.id)
