"""Hostile input on both transports: JSON nested thousands deep, integers of thousands of
digits, lone surrogates, invalid UTF-8 frames and validly signed tokens with claims of the
wrong type. Each gets a 400/401 in the contract's shape (or a close code), never a 500, and
the server goes on serving."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from typing import Any

import jwt
import pytest

from tests.client import ApiClient, WsClient
from tests.conftest import TEST_SECRET, RunningServer

DEEP = 5000  # the hostile test's depth: past Python's recursion limit
HUGE = "1" * 5000  # past Python's 4,300-digit limit on int()
SURROGATE = "\\ud800"  # a lone surrogate, as a JSON escape (the text itself is ASCII)


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


async def two_users(server: RunningServer) -> tuple[ApiClient, dict[str, Any], str]:
    """alice (signed in), bob's register reply, and the DM between them."""
    alice = server.client()
    await alice.register("alice")
    bob = server.client()
    bob_reply = await bob.register("bob")
    dm = await alice.post("/api/conversations/dm", {"user_id": bob_reply["user"]["id"]})
    assert dm.status == 200, dm.body
    return alice, bob_reply, dm.body["conversation"]["id"]


async def still_serving(api: ApiClient) -> None:
    me = await api.get("/api/me")
    assert me.status == 200, me.body


# -- REST -------------------------------------------------------------------------------


def register_body(**overrides: str) -> str:
    fields = {"username": '"carol"', "email": '"carol@example.com"', "password": '"long enough"'}
    fields.update(overrides)
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (deep_array(DEEP), "bad_request"),
        (deep_object(DEEP), "bad_request"),
        (register_body(username=deep_array(DEEP)), "bad_request"),
        (register_body(username=deep_array(32)), "bad_request"),  # 33 deep: one past the limit
        (register_body(username=deep_array(31)), "validation_failed"),  # 32 deep: parsed
        (register_body(username=HUGE), "bad_request"),
        (register_body(username="-" + HUGE), "bad_request"),
        (register_body(username="1" * 20), "bad_request"),  # past a 64-bit integer
        (register_body(username="9223372036854775808"), "bad_request"),  # 2**63
        (register_body(username="NaN"), "bad_request"),  # not JSON, though Python reads it
        (register_body(username="Infinity"), "bad_request"),
        (register_body(username="1e400"), "bad_request"),  # Python reads it as inf
        (register_body(password=f'"long enough{SURROGATE}"'), "bad_request"),
        (register_body(email=f'"carol{SURROGATE}@example.com"'), "bad_request"),
        (register_body(username=f'"carol{SURROGATE}"'), "bad_request"),
        (register_body(username='"\\udc00"'), "bad_request"),  # a lone low surrogate
        ('{"\\ud800": 1, "username": "carol"}', "bad_request"),  # in a key
        (register_body(username=f'["{SURROGATE}"]'), "bad_request"),  # inside a list
    ],
)
async def test_hostile_rest_bodies_are_400(server: RunningServer, body: str, code: str) -> None:
    api = server.client()
    response = await api.post("/api/auth/register", raw_body=body.encode())
    assert response.status == 400, response.body
    assert response.error_code == code, response.body
    # Nothing was stored, and the server goes on: the same name signs up normally.
    assert (await api.register("carol"))["user"]["username"] == "carol"
    api.close()


async def test_paired_surrogates_and_raw_utf8_are_fine(server: RunningServer) -> None:
    alice, _, conv = await two_users(server)
    # A pair of escapes is one valid character (U+1F600), as is the raw UTF-8 form.
    body = '{"body": "smile \\ud83d\\ude00 \U0001f600", "client_msg_id": "m1"}'
    sent = await alice.post(f"/api/conversations/{conv}/messages", raw_body=body.encode())
    assert sent.status == 201, sent.body
    assert sent.body["message"]["body"] == "smile \U0001f600 \U0001f600"
    # Encoded surrogates (CESU-8 / WTF-8 bytes) are not UTF-8.
    raw = b'{"body": "\xed\xa0\x80", "client_msg_id": "m2"}'
    bad = await alice.post(f"/api/conversations/{conv}/messages", raw_body=raw)
    assert bad.status == 400 and bad.error_code == "bad_request", bad.body


async def test_hostile_values_in_an_authenticated_body(server: RunningServer) -> None:
    alice, bob, conv = await two_users(server)
    path = f"/api/conversations/{conv}/messages"
    for body in (
        f'{{"body": "hi {SURROGATE}", "client_msg_id": "m1"}}',
        f'{{"body": "hi", "client_msg_id": "m{SURROGATE}"}}',
        f'{{"body": "hi", "client_msg_id": "m1", "extra": {deep_array(DEEP)}}}',
        f'{{"body": "hi", "client_msg_id": "m1", "extra": {HUGE}}}',
    ):
        response = await alice.post(path, raw_body=body.encode())
        assert response.status == 400 and response.error_code == "bad_request", response.body
    for path, body in (
        (f"/api/conversations/{conv}/read", f'{{"seq": {HUGE}}}'),
        ("/api/groups", f'{{"name": "g{SURROGATE}", "member_ids": ["{bob["user"]["id"]}"]}}'),
        ("/api/friends/requests", f'{{"user_id": "{SURROGATE}"}}'),
    ):
        response = await alice.post(path, raw_body=body.encode())
        assert response.status == 400 and response.error_code == "bad_request", response.body
    history = await alice.get(f"/api/conversations/{conv}/messages")
    assert history.status == 200 and history.body["messages"] == []  # nothing was stored
    await still_serving(alice)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"before_seq={HUGE}", "before_seq"),
        (f"after_seq={HUGE}", "after_seq"),
        (f"after_seq=-{HUGE}", "after_seq"),
        ("after_seq=9223372036854775808", "after_seq"),  # 2**63: past what the database holds
        (f"limit={HUGE}", "limit"),
        ("limit=%C2%B2", "limit"),  # "²": a digit to str.isdigit(), not to int()
        ("limit=%D9%A1", "limit"),  # U+0661 (Arabic-Indic one): int() reads it; we do not
        ("limit=1_0", "limit"),  # int() reads "1_0" as 10
    ],
)
async def test_hostile_query_integers_are_400(
    server: RunningServer, query: str, field: str
) -> None:
    alice, _, conv = await two_users(server)
    response = await alice.get(f"/api/conversations/{conv}/messages?{query}")
    assert response.status == 400, response.body
    assert response.error_code == "validation_failed" and response.body["error"]["field"] == field
    await still_serving(alice)


async def test_hostile_long_poll_integers_are_400(server: RunningServer) -> None:
    api = server.client()
    await api.register("alice")
    for query, field in (
        (f"last_event_id={HUGE}", "last_event_id"),
        (f"timeout={HUGE}", "timeout"),
        ("timeout=%C2%B2", "timeout"),
    ):
        response = await api.get(f"/api/events?{query}")
        assert response.status == 400, response.body
        assert response.error_code == "validation_failed", response.body
        assert response.body["error"]["field"] == field
    polled = await api.get("/api/events?timeout=0")
    assert polled.status == 200 and polled.body["events"][0]["event"]["type"] == "hello"


async def test_query_integers_within_limits_still_work(server: RunningServer) -> None:
    alice, _, conv = await two_users(server)
    for query in ("limit=5", "limit=+5", "limit=%205", "after_seq=9223372036854775807"):
        response = await alice.get(f"/api/conversations/{conv}/messages?{query}")
        assert response.status == 200, (query, response.body)


# -- WebSocket frames -------------------------------------------------------------------


async def signed_in_socket(server: RunningServer) -> tuple[WsClient, ApiClient, str]:
    alice, _, conv = await two_users(server)
    assert alice.token is not None
    ws = await WsClient.connect(server.ws_url)
    await ws.auth(alice.token)
    return ws, alice, conv


@pytest.mark.parametrize(
    "frame",
    [
        deep_array(DEEP),
        '{"type": "me", "ref": "r", "x": ' + deep_array(DEEP) + "}",
        '{"type": "me", "ref": "r", "x": ' + deep_object(DEEP) + "}",
        '{"type": "me", "ref": "r", "x": ' + deep_array(32) + "}",  # 33 deep
        '{"type": "me", "ref": "r", "x": ' + HUGE + "}",
        '{"type": "ack", "last_event_id": ' + HUGE + "}",
        '{"type": "ack", "last_event_id": 9223372036854775808}',
        '{"type": "me", "ref": "r", "x": NaN}',
        '{"type": "me", "ref": 1e400}',  # echoed back as ref, inf would be no JSON at all
        '{"type": "me", "ref": "r", "x": "' + SURROGATE + '"}',
        '{"type": "me' + SURROGATE + '", "ref": "r"}',
        '{"type": "me", "ref": "r", "' + SURROGATE + '": 1}',
    ],
)
async def test_hostile_frames_get_bad_request(server: RunningServer, frame: str) -> None:
    ws, alice, _ = await signed_in_socket(server)
    await ws.conn.write_message(frame)
    reply = await ws.next_frame("reply")
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert (await ws.command("me"))["ok"] is True  # the socket goes on serving
    await still_serving(alice)


async def test_hostile_command_fields_over_websocket(server: RunningServer) -> None:
    ws, _, conv = await signed_in_socket(server)
    for frame in (
        f'{{"type": "messages.send", "ref": "s1", "conversation_id": "{conv}",'
        f' "body": "hi {SURROGATE}", "client_msg_id": "m1"}}',
        f'{{"type": "conversations.read", "ref": "s2", "conversation_id": "{conv}",'
        f' "seq": {HUGE}}}',
        f'{{"type": "auth.login", "ref": "s3", "login": "alice", "password": "x{SURROGATE}"}}',
    ):
        await ws.conn.write_message(frame)
        reply = await ws.next_frame("reply")
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    sent = await ws.command("messages.send", conversation_id=conv, body="hi", client_msg_id="m1")
    assert sent["ok"] is True and sent["data"]["message"]["seq"] == 1


async def test_a_lone_surrogate_in_ref_leaves_the_socket_working(server: RunningServer) -> None:
    ws, _, conv = await signed_in_socket(server)
    # The bad frame and valid commands queued behind it, sent at once.
    await ws.conn.write_message('{"type": "me", "ref": "' + SURROGATE + '"}')
    await ws.send({"type": "me", "ref": "after1"})
    await ws.send(
        {
            "type": "messages.send",
            "ref": "after2",
            "conversation_id": conv,
            "body": "still here",
            "client_msg_id": "m1",
        }
    )
    bad = await ws.next_frame("reply")
    assert bad["ok"] is False and bad["error"]["code"] == "bad_request" and bad["ref"] is None
    first = await ws.next_frame("reply")
    assert first["ref"] == "after1" and first["ok"] is True
    second = await ws.next_frame("reply")
    assert second["ref"] == "after2" and second["ok"] is True
    assert (await ws.command("me"))["ok"] is True


async def test_a_huge_last_event_id_on_the_ws_url_starts_a_new_queue(
    server: RunningServer,
) -> None:
    api = server.client()
    token = (await api.register("alice"))["token"]
    for value in (HUGE, "%C2%B2"):
        ws = await WsClient.connect(f"{server.ws_url}?token={token}&last_event_id={value}")
        hello = await ws.next_frame("hello")
        assert hello["resumed"] is False and hello["last_event_id"] == 0
        assert (await ws.command("me"))["ok"] is True
        ws.close()
    await still_serving(api)


# -- invalid UTF-8 text frames: a raw client, since WebSocket libraries refuse to send one --


class RawSocket:
    """A WebSocket client written by hand over TCP, to send frames no library would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        mask = os.urandom(4)
        assert len(payload) < 126
        header = bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)])
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def read(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload); (-1, b"") at end of stream."""
        try:
            first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        except asyncio.IncompleteReadError:
            return -1, b""
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def read_until_close(self) -> tuple[int | None, list[bytes]]:
        """Read until the server's close frame: its code (None if the TCP stream just ended
        without one) and the text frames read before it."""
        texts: list[bytes] = []
        while True:
            opcode, payload = await self.read()
            if opcode == -1:
                return None, texts
            if opcode == 0x8:
                code = int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else None
                return code, texts
            if opcode == 0x1:
                texts.append(payload)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.mark.parametrize(
    "chunks",
    [
        [b'{"type": "me", "ref": "\xff"}'],
        [b'{"type": "me", "ref": "\xed\xa0\x80"}'],  # an encoded surrogate is not UTF-8
        [b'{"type": "me", "ref": "\xc3'],  # cut in the middle of a character
        [b'{"type": "me", "ref": "\xe2\x82', b'"}'],  # in a fragmented message
    ],
)
async def test_invalid_utf8_text_frame_closes_with_1007(
    server: RunningServer, chunks: list[bytes]
) -> None:
    raw = await RawSocket.connect(server.port)
    try:
        raw.send(0x1, b'{"type": "me", "ref": "first"}')  # a valid frame first: answered
        opcode, payload = await raw.read()
        assert opcode == 0x1 and json.loads(payload)["ref"] == "first"
        for i, chunk in enumerate(chunks):
            raw.send(0x1 if i == 0 else 0x0, chunk, fin=i == len(chunks) - 1)
        raw.send(0x1, b'{"type": "me", "ref": "after"}')  # not processed: the socket failed
        code, texts = await raw.read_until_close()
        assert code == 1007
        assert texts == []  # neither the bad frame nor the one after it was answered
    finally:
        await raw.close()
    # The server goes on: a new socket works.
    ws = await WsClient.connect(server.ws_url)
    assert (await ws.command("me"))["error"]["code"] == "unauthorized"


# -- validly signed tokens with claims of the wrong type ------------------------------------


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, TEST_SECRET, algorithm="HS256")


def signed_raw(payload: bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}') -> str:
    """A token over exactly these bytes (pyjwt would re-serialize a dict)."""
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(header) + b"." + b64(payload)
    signature = hmac.new(TEST_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


async def bad_claim_tokens(api: ApiClient) -> list[str]:
    reply = await api.register("mallory")
    claims = jwt.decode(reply["token"], TEST_SECRET, algorithms=["HS256"])
    sub, sid, exp = claims["sub"], claims["sid"], claims["exp"]
    base = {"sub": sub, "sid": sid, "iat": claims["iat"], "exp": exp}
    tokens = [
        signed({**base, "exp": str(exp)}),  # a string that int() reads
        signed({**base, "exp": "soon"}),
        signed({**base, "exp": [exp]}),
        signed({**base, "exp": {"t": exp}}),
        signed({**base, "exp": None}),
        signed({**base, "exp": True}),
        signed({**base, "exp": float(exp) + 0.5}),
        signed({**base, "exp": 10**30}),  # past any datetime
        signed({**base, "exp": 1e300}),
        signed({**base, "iat": "yesterday"}),
        signed({**base, "iat": [1]}),
        signed({**base, "nbf": [1]}),
        signed({"sid": sid, "exp": exp}),  # missing sub
        signed({"sub": sub, "exp": exp}),  # missing sid
        signed({"sub": sub, "sid": sid}),  # missing exp
        signed({**base, "sub": 42}),
        signed({**base, "sid": ["x"]}),
        signed({**base, "sub": sub + "\ud800"}),
        signed({**base, "sid": "\udfff"}),
        signed_raw(b"[1, 2]"),  # a payload that is not an object
        signed_raw(b'{"sub": "' + sub.encode() + b'", "x": ' + deep_array(DEEP).encode() + b"}"),
        signed_raw(b'{"sub": "' + sub.encode() + b'", "x": ' + HUGE.encode() + b"}"),
        signed_raw(json.dumps(base).encode(), header=deep_array(DEEP).encode()),
        signed_raw(json.dumps(base).encode(), header=b'{"alg":"HS256","x":' + HUGE.encode() + b"}"),
    ]
    return tokens


async def test_signed_tokens_with_bad_claims_are_401_over_rest(server: RunningServer) -> None:
    api = server.client()
    for i, token in enumerate(await bad_claim_tokens(api)):
        response = await api.get("/api/me", token=token)
        assert response.status == 401, (i, response.body)
        assert response.error_code == "unauthorized", (i, response.body)
    await still_serving(api)


async def test_signed_tokens_with_bad_claims_close_the_socket_with_4401(
    server: RunningServer,
) -> None:
    api = server.client()
    for i, token in enumerate(await bad_claim_tokens(api)):
        ws = await WsClient.connect(server.ws_url)
        await ws.send({"type": "auth", "token": token})
        assert await ws.wait_closed() == 4401, i
        ws.close()
    await still_serving(api)
