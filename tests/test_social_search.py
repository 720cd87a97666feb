"""The user directory, username prefix search and friend-code lookup, over REST and WebSocket."""

from __future__ import annotations

import pytest

from chat.store import Store
from chat.store.accounts import prefix_upper_bound
from tests.conftest import RunningServer
from tests.test_social import (  # noqa: F401 (drain_sockets is an autouse fixture)
    TRANSPORTS,
    Person,
    drain_sockets,
    people,
    public_user_shape,
)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    param: str = request.param
    return param


async def names(person: Person, transport: str, **fields: object) -> list[str]:
    result = await person.call(transport, "users.search", **fields)
    users = result.expect(200)["users"]
    for user in users:
        public_user_shape(user)
    return [u["username"] for u in users]


async def test_prefix_search_ignores_case_and_includes_whole_names(
    server: RunningServer, transport: str
) -> None:
    await people(server, "Bob", "bobby", "BOBCAT", "bob.x", "bobax", "rob", online=False)
    [zed] = await people(server, "zed")
    everyone_bob = ["Bob", "bob.x", "bobax", "bobby", "BOBCAT"]  # username order, any case
    for q in ("bob", "BOB", "bOb", "  bob "):
        # A prefix that is also a whole name finds that name first.
        assert await names(zed, transport, q=q) == everyone_bob, q
    assert await names(zed, transport, q="b") == everyone_bob
    assert await names(zed, transport, q="BOBBY") == ["bobby"]
    assert await names(zed, transport, q="bobbyz") == []
    # "." and "-" are literal characters of usernames, not patterns.
    assert await names(zed, transport, q="bob.") == ["bob.x"]
    assert await names(zed, transport, q="bo.") == []
    assert await names(zed, transport, q="r") == ["rob"]
    # The caller is not in its own results.
    assert await names(zed, transport, q="z") == []


async def test_unicode_and_pattern_input_match_nobody(
    server: RunningServer, transport: str
) -> None:
    await people(server, "kate", "bob", "ivan", online=False)
    [zed] = await people(server, "zed")
    odd = [
        "\u212a",  # KELVIN SIGN: lower() makes it "k", but no username starts with it
        "\u0130",  # I WITH DOT: lower() makes it "i" plus a combining dot
        "böb",
        "b\u00f6",
        "😀",
        "b*",
        ".*",
        "^b",
        "b%",
        "b_",
        "b o",
        "b" * 33,
    ]
    for q in odd:
        result = await zed.call(transport, "users.search", q=q)
        assert result.expect(200) == {"users": [], "has_more": False, "next_after": None}, q
    assert await names(zed, transport, q="K") == ["kate"]


async def test_directory_pages_through_everyone_with_presence(
    server: RunningServer, transport: str
) -> None:
    offline = await people(server, "dora", "Carl", "eve", "ann", "Fred", online=False)
    online = await people(server, "bea", "gus")
    me = online[0]
    seen: list[dict[str, object]] = []
    after = None
    for _ in range(10):
        fields: dict[str, object] = {"limit": 2}
        if after is not None:
            fields["after"] = after
        page = (await me.call(transport, "users.search", **fields)).expect(200)
        seen += page["users"]
        after = page["next_after"]
        if not page["has_more"]:
            assert after is None
            break
        assert len(page["users"]) == 2 and after == str(page["users"][-1]["username"]).lower()
    usernames = [u["username"] for u in seen]
    assert usernames == ["ann", "Carl", "dora", "eve", "Fred", "gus"]  # everyone but me, once
    presence = {u["username"]: u["presence"] for u in seen}
    assert presence["gus"] == "online"
    assert {presence[p.name] for p in offline} == {"offline"}
    for user in seen:
        assert set(user) == {"id", "username", "last_seen", "presence"}


async def test_search_pages_within_a_prefix(server: RunningServer, transport: str) -> None:
    await people(server, "baa", "Bbb", "bcc", "bdd", "caa", online=False)
    [me] = await people(server, "mee")
    first = (await me.call(transport, "users.search", q="B", limit=3)).expect(200)
    assert [u["username"] for u in first["users"]] == ["baa", "Bbb", "bcc"]
    assert first["has_more"] is True and first["next_after"] == "bcc"
    rest = (await me.call(transport, "users.search", q="b", limit=3, after="bcc")).expect(200)
    assert [u["username"] for u in rest["users"]] == ["bdd"]
    assert rest["has_more"] is False and rest["next_after"] is None
    # A cursor before the prefix starts at the prefix; one past it ends the list.
    assert await names(me, transport, q="b", after="a") == ["baa", "Bbb", "bcc", "bdd"]
    assert await names(me, transport, q="b", after="c") == []


async def test_search_validation(server: RunningServer, transport: str) -> None:
    [me] = await people(server, "mee")
    for bad in (0, 101, "x", -1):
        result = await me.call(transport, "users.search", limit=bad)
        result.fails(400, "validation_failed")
        assert result.field == "limit"
    long_cursor = await me.call(transport, "users.search", after="a" * 65)
    long_cursor.fails(400, "validation_failed")
    assert long_cursor.field == "after"
    if transport == "ws":  # only JSON frames can carry a non-string
        wrong = await me.call("ws", "users.search", q=5)
        wrong.fails(400, "validation_failed")
        assert wrong.field == "q"


async def test_lookup_by_friend_code(server: RunningServer, transport: str) -> None:
    alice, bob = await people(server, "alice", "bob")
    for code in (bob.code, bob.code.lower(), bob.code.replace("-", ""), bob.code.lower()[1:]):
        result = await alice.call(transport, "users.by_code", code=code)
        if code == bob.code.lower()[1:]:
            result.fails(404, "not_found")  # a code missing a character is nobody's
            continue
        user = result.expect(200)["user"]
        assert user["id"] == bob.id and user["presence"] == "online"
        public_user_shape(user)
    (await alice.call(transport, "users.by_code", code="2222-2222")).fails(404, "not_found")
    (await alice.call(transport, "users.by_code", code="0O1I-LLLL")).fails(404, "not_found")
    (await alice.call(transport, "users.by_code", code="é😀")).fails(404, "not_found")
    if transport == "ws":  # the REST path cannot be empty
        empty = await alice.call("ws", "users.by_code", code=" - ")
        empty.fails(400, "validation_failed")
        assert empty.field == "code"


async def test_store_search_keeps_pages_full_past_excluded_users(store: Store) -> None:
    ids = []
    for i in range(8):
        user = await store.users.create(f"user{i}", f"user{i}@example.com", "x")
        ids.append(user.id)
    users, more = await store.users.search("user", after=None, limit=4, exclude=set(ids[:3]))
    assert [u.username for u in users] == ["user3", "user4", "user5", "user6"] and more
    users, more = await store.users.search("", after="user5", limit=4, exclude={ids[7]})
    assert [u.username for u in users] == ["user6"] and not more


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound("abc") == "abd"
    assert prefix_upper_bound("a-") == "a."
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff") is None
    assert prefix_upper_bound("a\ud7ff") == "a\ue000"  # never a surrogate
