"""End-to-end encrypted conversations (issue 18; docs/e2e.md): the key directory, envelopes,
and two reference clients (tests/e2e_client.py) chatting through a server that only ever
holds ciphertext."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import bson
import pytest

from chat.e2e import ENCRYPTED_PREVIEW
from tests.conftest import LogLines, RunningServer, ServerFactory
from tests.e2e_client import Device, b64e, content, decrypt_file, encrypt_file, pub, text_of
from tests.files_helpers import download
from tests.test_conversations import Member, Result, history, join

_keys = itertools.count(1)


class E2eMember:
    """A signed-in user with one device (its session's), sending and reading envelopes."""

    def __init__(self, member: Member, device: Device | None = None) -> None:
        self.member = member
        self.device = device or Device()
        self.known: dict[str, set[tuple[str, str]]] = {}  # conversation -> devices to encrypt for
        self.sends_409 = 0

    @property
    def id(self) -> str:
        return self.member.id

    @property
    def peer_id(self) -> tuple[str, str]:
        return (self.member.id, self.device.device_id)

    async def call(self, command: str, **fields: Any) -> Result:
        return await self.member.call(command, **fields)

    async def register(self, prekeys: int = 20) -> dict[str, Any]:
        reply = await self.call(
            "keys.devices.put", device_id=self.device.device_id, **self.device.upload(prekeys)
        )
        assert reply.ok and reply.status in (200, 201), reply  # over WebSocket: no 201
        return reply.data["device"]  # type: ignore[no-any-return]

    async def claim(self, peer: tuple[str, str]) -> None:
        reply = await self.call("keys.claim", user_id=peer[0], device_id=peer[1])
        [bundle] = reply.expect()["bundles"]
        self.device.initiate(bundle)

    def seal_for(self, peers: set[tuple[str, str]], plaintext: bytes) -> dict[Any, Any]:
        return {peer: self.device.encrypt(peer, plaintext) for peer in peers}

    async def send(
        self,
        conversation_id: str,
        text: str,
        key: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Encrypt for every device the server expects (learnt from its 409), and send; files:
        encrypted uploads, each {id, key, iv, name, type, size} (the plaintext carries them)."""
        plaintext = content(text, files=files) if files else content(text)
        attached = {"attachments": [f["id"] for f in files]} if files else {}
        key = key or f"e2e-{next(_keys)}"
        peers = self.known.get(conversation_id, set())
        for peer in peers - self.device.sessions.keys():
            await self.claim(peer)
        sealed = self.seal_for(peers, plaintext)
        for _ in range(3):
            reply = await self.call(
                "messages.send",
                conversation_id=conversation_id,
                envelopes=list(sealed.values()),
                client_msg_id=key,
                **attached,
            )
            if reply.code != "devices_changed":
                return reply.expect(201)["message"]  # type: ignore[no-any-return]
            self.sends_409 += 1
            wanted = {(d["user_id"], d["device_id"]) for d in reply.data["error"]["devices"]}
            self.known[conversation_id] = wanted
            sealed = {p: e for p, e in sealed.items() if p in wanted}
            for peer in wanted - sealed.keys():
                if peer not in self.device.sessions:
                    await self.claim(peer)
                sealed[peer] = self.device.encrypt(peer, plaintext)
        raise AssertionError("the devices kept changing")

    def read(self, message: dict[str, Any]) -> str:
        return text_of(self.open(message))

    def open(self, message: dict[str, Any]) -> bytes:
        """The plaintext of this device's envelope."""
        [envelope] = [e for e in message["envelopes"] if e["device_id"] == self.device.device_id]
        sender = (message["sender_id"], message["sender_device_id"])
        return self.device.decrypt(sender, envelope)

    async def upload_encrypted(self, data: bytes, name: str, content_type: str) -> dict[str, Any]:
        """Encrypt a file and upload the ciphertext (no name: it goes in the message)."""
        ciphertext, meta = encrypt_file(data, name, content_type)
        reply = await self.member.api.request(
            "POST", "/api/uploads?encrypted=true", raw_body=ciphertext,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        assert reply.status == 201, reply.body
        return {"id": reply.body["upload"]["id"], **meta}


class Poller:
    """A long-polling client's event stream."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.queue_id: str | None = None
        self.epoch = ""
        self.cursor = 0

    async def start(self) -> None:
        first = (await self.member.api.get("/api/events?timeout=0")).body
        self.queue_id = first["queue_id"]
        self.epoch = first["events"][0]["event"]["epoch"]

    async def events(self, kind: str, count: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            poll = await self.member.api.get(
                f"/api/events?queue_id={self.queue_id}&epoch={self.epoch}"
                f"&last_event_id={self.cursor}&timeout=5"
            )
            assert poll.status == 200, poll.body
            for item in poll.body["events"]:
                self.cursor = item["id"]
                if item["event"]["type"] == kind:
                    found.append(item["event"])
        return found


async def incoming(member: Member, poller: Poller | None, count: int) -> list[dict[str, Any]]:
    """The next `count` messages from others (a member's queues also carry its own)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        if poller is not None:
            batch = [e["message"] for e in await poller.events("message.new", 1)]
        else:
            batch = [(await member.event("message.new"))["message"]]
        found += [m for m in batch if m["sender_id"] != member.id]
    return found


async def e2e_pair(
    server: RunningServer, transport: str = "ws"
) -> tuple[E2eMember, E2eMember, str]:
    alice = E2eMember(await join(server, "ea", transport))
    bob = E2eMember(await join(server, "eb", transport))
    await alice.register()
    await bob.register()
    dm = await alice.call("conversations.open_dm", user_id=bob.id, encrypted=True)
    return alice, bob, dm.expect()["conversation"]["id"]


async def e2e_group(server: RunningServer) -> tuple[E2eMember, E2eMember, E2eMember, str]:
    """Three users with a device each in an encrypted group that the first owns."""
    alice, bob, carol = [E2eMember(await join(server, p)) for p in ("ga", "gb", "gc")]
    for who in (alice, bob, carol):
        await who.register()
    group = await alice.call(
        "groups.create", name="secret", member_ids=[bob.id, carol.id], encrypted=True
    )
    return alice, bob, carol, group.expect(201)["conversation"]["id"]


# -- the key directory ------------------------------------------------------------------------


async def test_a_device_is_listed_with_its_fingerprint_and_bound_to_its_session(
    server: RunningServer,
) -> None:
    alice = E2eMember(await join(server, "kd"))
    device = await alice.register(prekeys=5)
    assert device["one_time_prekeys"] == 5
    again = await alice.call(
        "keys.devices.put", device_id=alice.device.device_id, **alice.device.upload(0)
    )
    assert again.expect()["device"]["one_time_prekeys"] == 5  # a PUT again: 200, kept
    other = await alice.call("keys.devices.put", device_id="another", **Device().upload(0))
    assert other.status == 409 and other.field == "device_id"  # one device per session
    listed = (await alice.call("keys.user", user_id=alice.id)).expect()["devices"]
    assert [d["device_id"] for d in listed] == [alice.device.device_id]
    import hashlib

    expected = hashlib.sha256(pub(alice.device.identity)).hexdigest()
    assert listed[0]["fingerprint"] == expected
    assert (await alice.call("keys.devices.delete", device_id=alice.device.device_id)).ok
    assert (await alice.call("keys.user", user_id=alice.id)).expect()["devices"] == []


async def test_50_concurrent_claims_of_10_keys_hand_each_out_once(
    make_server: ServerFactory,
) -> None:
    # 50 claims at once on a machine that may be busy: more time than one request's default.
    server = await make_server(key_claims_per_user=100, db_timeout_ms=20_000)
    alice = E2eMember(await join(server, "cl", "rest"))
    bob = E2eMember(await join(server, "cm"))
    await bob.register(prekeys=10)
    replies = await alice.member.call_parallel(50, "keys.claim", user_id=bob.id)
    bundles = [b for r in replies for b in r.expect()["bundles"]]
    assert len(bundles) == 50
    opks = [b["one_time_prekey"]["id"] for b in bundles if b["one_time_prekey"]]
    assert sorted(opks) == list(range(1, 11))  # 10 distinct keys, once each
    assert sum(1 for b in bundles if b["one_time_prekey"] is None) == 40
    low = await bob.member.event("keys.low")
    assert low["device_id"] == bob.device.device_id and low["remaining"] < 10
    top_up = await bob.call(
        "keys.prekeys.add",
        device_id=bob.device.device_id,
        one_time_prekeys=bob.device.new_prekeys(3),
    )
    assert top_up.expect()["one_time_prekeys"] == 3


async def test_claims_over_the_rate_are_refused(make_server: ServerFactory) -> None:
    server = await make_server(key_claims_per_user=3)
    alice = await join(server, "rl", "rest")
    bob = E2eMember(await join(server, "rm"))
    await bob.register(prekeys=10)
    for _ in range(3):
        (await alice.call("keys.claim", user_id=bob.id)).expect()
    over = await alice.call("keys.claim", user_id=bob.id)
    assert over.status == 429 and over.code == "rate_limited"
    device = (await alice.call("keys.user", user_id=bob.id)).expect()["devices"][0]
    assert device["device_id"] == bob.device.device_id
    assert await server.store.e2e.prekey_count(bob.id, bob.device.device_id) == 7


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda u: {**u, "identity_key": b64e(b"k" * 31)}, "identity_key"),
        (lambda u: {**u, "signing_key": b64e(b"k" * 33)}, "signing_key"),
        (lambda u: {**u, "identity_key": "not base64!"}, "identity_key"),
        (
            lambda u: {**u, "signed_prekey": {**u["signed_prekey"], "signature": b64e(bytes(64))}},
            "signed_prekey.signature",
        ),
        (
            lambda u: {**u, "signed_prekey": {**u["signed_prekey"], "key": b64e(bytes(32))}},
            "signed_prekey.signature",
        ),
        (
            lambda u: {
                **u,
                "one_time_prekeys": [{"id": i, "key": b64e(bytes(32))} for i in range(101)],
            },
            "one_time_prekeys",
        ),
        (
            lambda u: {**u, "one_time_prekeys": [{"id": 1, "key": b64e(bytes(16))}]},
            "one_time_prekeys.key",
        ),
    ],
)
async def test_bad_keys_are_refused_and_nothing_is_stored(
    server: RunningServer, change: Any, field: str
) -> None:
    alice = await join(server, "bk", "rest")
    device = Device()
    reply = await alice.call(
        "keys.devices.put", device_id=device.device_id, **change(device.upload(2))
    )
    assert reply.status == 400 and reply.field == field, reply
    assert (await alice.call("keys.user", user_id=alice.id)).expect()["devices"] == []


# -- encrypted conversations --------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["ws", "longpoll"])
async def test_two_clients_chat_out_of_order_with_drops_and_a_ratchet_step_every_turn(
    server: RunningServer, transport: str
) -> None:
    rng = random.Random(18)
    alice, bob, dm = await e2e_pair(server, "rest" if transport == "longpoll" else "ws")
    pollers: dict[str, Poller | None] = {alice.id: None, bob.id: None}
    if transport == "longpoll":
        for who in (alice, bob):
            poller = Poller(who.member)
            await poller.start()
            pollers[who.id] = poller
    sent: list[tuple[int, str]] = []
    received: dict[int, str] = {}
    steps: list[int] = []
    ratchet_keys: set[str] = set()
    for turn in range(8):
        sender, reader = (alice, bob) if turn % 2 == 0 else (bob, alice)
        texts = [f"turn {turn} message {i}" for i in range(3)]
        batch = [await sender.send(dm, text) for text in texts]
        sent += [(m["seq"], t) for m, t in zip(batch, texts, strict=True)]
        # A retry of the last send (its reply lost) stores nothing again, publishes nothing.
        again = await sender.send(dm, "ignored", key=batch[-1]["client_msg_id"])
        assert again["id"] == batch[-1]["id"]
        news = await incoming(reader.member, pollers[reader.id], 3)
        assert sorted(m["seq"] for m in news) == sorted(m["seq"] for m in batch)
        rng.shuffle(news)
        dropped = news.pop()  # lost: read later from history
        for message in news:
            received[message["seq"]] = reader.read(message)
        page = await history(reader.member, dm, after_seq=dropped["seq"] - 1, limit=1)
        [fetched] = page["messages"]
        assert len(fetched["envelopes"]) == 1
        received[fetched["seq"]] = reader.read(fetched)
        ratchet_keys.add(fetched["envelopes"][0]["header"]["dh"])
        steps.append(reader.device.sessions[sender.peer_id].ratchet.steps)
    assert received == dict(sent)
    # Every turn is a DH ratchet step: each reader's count goes up by one, a new ratchet key.
    assert steps[0::2] == [1, 2, 3, 4] and steps[1::2] == [1, 2, 3, 4]
    assert len(set(ratchet_keys)) == 8
    # Read receipts and typing work as anywhere.
    last = sent[-1][0]
    assert (await alice.call("conversations.read", conversation_id=dm, seq=last)).ok
    assert (await bob.call("typing", conversation_id=dm)).expect()["forwarded"]
    listed = (await bob.call("conversations.list")).expect()["conversations"]
    [conv] = [c for c in listed if c["id"] == dm]
    assert conv["encrypted"] and conv["last_message"]["body"] == ENCRYPTED_PREVIEW
    assert "envelopes" not in conv["last_message"]


async def test_the_encrypted_dm_is_distinct_from_the_plain_one(server: RunningServer) -> None:
    alice, bob, dm = await e2e_pair(server)
    plain = (await alice.call("conversations.open_dm", user_id=bob.id)).expect()["conversation"]
    again = await bob.call("conversations.open_dm", user_id=alice.id, encrypted=True)
    assert plain["id"] != dm and again.expect()["conversation"]["id"] == dm
    assert "encrypted" not in plain


async def test_a_second_device_mid_conversation_gets_409_then_both_devices_read(
    server: RunningServer,
) -> None:
    alice, bob, carol, gid = await e2e_group(server)
    first = await alice.send(gid, "before the new device")
    for who in (bob, carol):
        news = await who.member.event("message.new")
        assert who.read(news["message"]) == "before the new device"
    # Carol signs in on a second device (a second session).
    login = await carol.member.api.post(
        "/api/auth/login", {"login": carol.member.name, "password": "correct horse"}
    )
    tablet = Member(server, login.body["user"], login.body["token"], "ws")
    await tablet.connect()
    carol2 = E2eMember(tablet)
    await carol2.register()
    before = alice.sends_409
    second = await bob.send(gid, "after the new device")
    assert bob.sends_409 >= 1
    third = await alice.send(gid, "alice to both of carol's")
    assert alice.sends_409 == before + 1  # told of the new device once, re-encrypted
    for reader in (carol, carol2):
        texts = []
        for _ in range(2):
            texts.append(reader.read((await reader.member.event("message.new"))["message"]))
        assert texts == ["after the new device", "alice to both of carol's"]
    # The new device sees the first message, without an envelope for it.
    page = (await history(tablet, gid))["messages"]
    assert [m["seq"] for m in page] == [first["seq"], second["seq"], third["seq"]]
    assert page[0]["no_envelope"] and page[0]["envelopes"] == []
    assert all(len(m["envelopes"]) == 1 for m in page[1:])
    # Each device's export holds its own envelopes only.
    export = await tablet.api.get(f"/api/conversations/{gid}/export")
    assert export.status == 200
    [part] = export.body["conversations"]
    assert len(part["messages"]) == 3
    for message in part["messages"]:
        assert all(e["device_id"] == carol2.device.device_id for e in message["envelopes"])


async def test_bad_envelopes_are_refused_and_nothing_is_stored(server: RunningServer) -> None:
    alice, bob, dm = await e2e_pair(server, "rest")
    stranger = E2eMember(await join(server, "es"))
    await stranger.register()
    await alice.claim(bob.peer_id)
    await alice.claim(stranger.peer_id)
    good = alice.device.encrypt(bob.peer_id, content("hello"))

    async def refused(expect_code: str, field: str | None, **fields: Any) -> None:
        reply = await alice.call("messages.send", conversation_id=dm, **fields)
        assert reply.code == expect_code and reply.field == field, reply

    await refused("validation_failed", "body", body="plain text", envelopes=[good])
    await refused("validation_failed", "body", body="plain text")
    await refused("validation_failed", "attachments", envelopes=[good], attachments=["a" * 24])
    big = {**good, "ciphertext": b64e(bytes(16 * 1024 + 1))}
    await refused("validation_failed", "envelopes.ciphertext", envelopes=[big])
    short = {**good, "header": {**good["header"], "dh": b64e(bytes(31))}}
    await refused("validation_failed", "envelopes.header.dh", envelopes=[short])
    await refused("validation_failed", "envelopes", envelopes=[good, good])
    await refused("validation_failed", "envelopes", envelopes=[good] * 201)
    foreign = alice.device.encrypt(stranger.peer_id, content("hello"))
    reply = await alice.call("messages.send", conversation_id=dm, envelopes=[good, foreign])
    assert reply.status == 409 and reply.code == "devices_changed"
    assert reply.data["error"]["devices"] == [
        {"user_id": bob.id, "device_id": bob.device.device_id}
    ]
    assert (await history(alice.member, dm))["messages"] == []
    # Envelopes in a plain conversation; an edit in an encrypted one.
    plain = (await alice.call("conversations.open_dm", user_id=bob.id)).expect()["conversation"]
    reply = await alice.call("messages.send", conversation_id=plain["id"], envelopes=[good])
    assert reply.status == 400 and reply.field == "envelopes"
    sent = await alice.send(dm, "fine")
    edit = await alice.call("messages.edit", conversation_id=dm, message_id=sent["id"], body="x")
    assert edit.status == 400 and edit.code == "encrypted_conversation"
    # A reaction would be plaintext beside the ciphertext: refused there too.
    for kind in ("reactions.add", "reactions.remove"):
        react = await bob.call(kind, conversation_id=dm, message_id=sent["id"], emoji="👍")
        assert react.status == 400 and react.code == "encrypted_conversation", kind
    # A session without a device cannot send there.
    login = await bob.member.api.post(
        "/api/auth/login", {"login": bob.member.name, "password": "correct horse"}
    )
    bare = Member(server, login.body["user"], login.body["token"], "rest")
    reply = await bare.call("messages.send", conversation_id=dm, envelopes=[])
    assert reply.status == 403 and reply.code == "no_device"


def _encodings(marker: str) -> Iterator[bytes]:
    """The marker, and what its base64 looks like at each of the three alignments."""
    data = marker.encode()
    yield data
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data)
        yield encoded[4 if pad else 0 : -4]  # the part that depends on the marker only


async def test_the_server_never_sees_plaintext(server: RunningServer) -> None:
    lines = LogLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.DEBUG)  # every line any part of the server would write
    try:
        alice, bob, dm = await e2e_pair(server)
        carol = E2eMember(await join(server, "pc"))
        await carol.register()
        group = await alice.call(
            "groups.create", name="g", member_ids=[bob.id, carol.id], encrypted=True
        )
        gid = group.expect(201)["conversation"]["id"]
        markers = [f"MARKER-{i}-zebra-quartz-{i * 7919}" for i in range(6)]
        for i, marker in enumerate(markers):
            conv = dm if i % 2 else gid
            sender = [alice, bob][i % 2]
            await sender.send(conv, marker)
        for who in (bob, carol):
            news = await incoming(who.member, None, 3)
            assert all(who.read(m) in markers for m in news)
        # A file whose name and contents hold markers: ciphertext only, in GridFS too.
        named, inside = "FILEMARKER-name-walrus-271", "FILEMARKER-bytes-okapi-314"
        markers += [named, inside]
        contents = f"{inside} {inside} {inside}".encode()
        sealed = await alice.upload_encrypted(contents, f"{named}.txt", "text/plain")
        await alice.send(dm, "a file", files=[sealed])
        [news] = await incoming(bob.member, None, 1)
        got = await download(bob.member, news["attachments"][0]["url"])
        assert decrypt_file(got.body, json.loads(bob.open(news))["files"][0]) == contents
        export = await alice.member.api.get("/api/export")
        assert export.status == 200
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    db = server.store.db
    dumps = []
    for name in await db.list_collection_names():
        async for doc in db[name].find():
            dumps.append(bson.encode(doc))
    log = "\n".join(lines.lines).encode()
    assert dumps and log
    for marker in markers:
        for form in _encodings(marker):
            assert not any(form in d for d in dumps), (marker, form)
            assert form not in log, (marker, form)
            assert form not in json.dumps(export.body).encode()


async def test_a_removed_member_device_is_no_longer_encrypted_for(server: RunningServer) -> None:
    alice, bob, carol, gid = await e2e_group(server)
    await alice.send(gid, "all three")
    (await alice.call("groups.remove_member", conversation_id=gid, user_id=carol.id)).expect()
    before = alice.sends_409
    message = await alice.send(gid, "without carol")
    assert alice.sends_409 == before + 1
    assert [e["device_id"] for e in message["envelopes"]] == []  # the sender's own: none
    news = await incoming(bob.member, None, 2)
    assert [bob.read(m) for m in news] == ["all three", "without carol"]


async def test_deleting_an_encrypted_message_erases_its_envelopes(server: RunningServer) -> None:
    alice, bob, dm = await e2e_pair(server, "rest")
    sent = await alice.send(dm, "regret")
    gone = await alice.call("messages.delete", conversation_id=dm, message_id=sent["id"])
    assert gone.expect()["message"]["deleted"]
    doc = await server.store.db["messages"].find_one({"client_msg_id": sent["client_msg_id"]})
    assert doc is not None and "envelopes" not in doc
    [shown] = (await history(bob.member, dm))["messages"]
    assert shown["deleted"] and shown["envelopes"] == [] and "no_envelope" not in shown


async def test_a_signed_out_device_is_no_longer_encrypted_for(server: RunningServer) -> None:
    alice, bob, dm = await e2e_pair(server, "rest")
    await alice.send(dm, "while bob is signed in")
    assert (await bob.member.api.post("/api/auth/logout")).status == 200
    assert (await alice.call("keys.user", user_id=bob.id)).expect()["devices"] == []
    before = alice.sends_409
    message = await alice.send(dm, "after bob signed out")
    assert alice.sends_409 == before + 1 and message["seq"] == 2
