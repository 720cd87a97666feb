"""End-to-end encrypted conversations (PROTOCOL.md section 11; docs/e2e.md).

The server is a key directory and a mailbox of ciphertext. A device is bound to the session
that registered it (one device per session), so every send, event and history read of that
session is by and for that device. The directory stores public keys only: an identity key
(X25519), a signing key (Ed25519), a signed prekey whose signature the server checks, and
one-time prekeys, each handed out once by a claim (X3DH). An encrypted conversation's message
is one envelope per recipient device; the server checks their shapes and that they address
exactly the members' current devices, never their content, and gives each device its own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from chat import shapes
from chat.commands import Principal, Reply, StatusReply, command
from chat.conversations import ExportPart
from chat.errors import ChatError, Conflict, Forbidden, NotFound, RateLimited, ValidationFailed
from chat.events import Event
from chat.lifecycle import LifecycleCommands
from chat.limits import AttemptLimiter, Attempts
from chat.messages import MessageCommands
from chat.models import iso, utcnow
from chat.store.conversations import Conversation
from chat.store.e2e import Device, Prekey, SignedPrekey
from chat.store.messages import Message
from chat.validation import ID, Fields, Schema, check_id, get_int, require_id, require_object

KEY_BYTES = 32  # X25519 and Ed25519 public keys
SIGNATURE_BYTES = 64  # Ed25519
MAX_PREKEYS = 100  # one-time prekeys stored per device
PREKEYS_LOW = 10  # keys.low goes to a device when fewer than this remain
MAX_CIPHERTEXT_BYTES = 16 * 1024  # per envelope, decoded
MIN_CIPHERTEXT_BYTES = 16  # an AES-GCM tag at least
MAX_ENVELOPES = shapes.MAX_ENVELOPES
MAX_KEY_ID = 2**32 - 1
ENVELOPE_TYPES = ("prekey", "message")
ENCRYPTED_PREVIEW = "Encrypted message"  # what the conversation list says of the last one
# An encrypted message.new carries, beside the message with its user's envelopes, which of that
# user's sessions is which device: the transport of each session keeps its own (for_session).
DEVICE_OF_SESSION = "device_of_session"
# device id -> session id, as the last send that encrypted for the device found it: the binding
# lasts as long as the session (docs/e2e.md), and a send reads it afresh just before publishing.
SESSIONS_KEPT = 50_000

DEVICE_PATH = Fields({"device_id": ID}, ("device_id",))
PREKEYS: Schema = {
    "type": "array",
    "maxItems": MAX_PREKEYS,
    "items": shapes.ref("Prekey"),
}
DEVICE_VIEW = shapes.ref("Device")


class DevicesChanged(Conflict):
    """The envelopes do not address exactly the members' current devices (Signal's 409
    "mismatched devices"): the client claims bundles for the new ones and sends again."""

    code = "devices_changed"

    def __init__(self, devices: list[dict[str, str]], missing: int, extra: int) -> None:
        super().__init__(
            f"The conversation's devices changed ({missing} without an envelope, {extra} "
            "envelopes for no current device): encrypt for the devices listed and send again.",
            field="envelopes",
        )
        self.devices = devices

    def to_dict(self) -> dict[str, Any]:
        """The error shape plus devices: every (user_id, device_id) to encrypt for."""
        body = super().to_dict()
        body["error"]["devices"] = self.devices
        return body


class NoDevice(Forbidden):
    code = "no_device"


class EncryptedConversation(ChatError):
    """What the server would have to read (an edit's new body) in an encrypted conversation."""

    code = "encrypted_conversation"
    status = 400


def fingerprint(identity_key: str) -> str:
    """SHA-256 of the identity key's raw bytes, hex: what two people compare."""
    return hashlib.sha256(base64.b64decode(identity_key)).hexdigest()


def device_view(device: Device, *, prekeys: int | None = None) -> dict[str, Any]:
    """A device as the directory lists it (public keys only)."""
    shown: dict[str, Any] = {
        "user_id": device.user_id,
        "device_id": device.device_id,
        "identity_key": device.identity_key,
        "signing_key": device.signing_key,
        "fingerprint": fingerprint(device.identity_key),
        "signed_prekey": dataclasses.asdict(device.signed_prekey),
        "created_at": iso(device.created_at),
    }
    if prekeys is not None:
        shown["one_time_prekeys"] = prekeys
    return shown


# -- input ------------------------------------------------------------------------------------


def b64(value: Any, field: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
    """Standard base64 (padded) of `size` bytes, or of at most `max_size`."""
    if not isinstance(value, str):
        raise ValidationFailed(f"{field} must be a base64 string.", field=field)
    if max_size is not None and len(value) > (max_size + 2) // 3 * 4:
        raise ValidationFailed(f"{field} is over {max_size} bytes.", field=field)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(f"{field} is not valid base64.", field=field) from None
    if size is not None and len(raw) != size:
        raise ValidationFailed(f"{field} must be {size} bytes, not {len(raw)}.", field=field)
    return raw


def key_id(data: dict[str, Any], field: str, path: str) -> int:
    value = get_int(data, field, maximum=MAX_KEY_ID)
    if value is None or isinstance(data.get(field), str):
        raise ValidationFailed(f"{path} must be an integer.", field=path)
    return value


def require(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed(f"{path} must be an object.", field=path)
    return data


def parse_prekeys(value: Any, field: str) -> list[Prekey]:
    """A list of one-time prekeys {id, key} (X25519 public keys), distinct ids."""
    if not isinstance(value, list):
        raise ValidationFailed(f"{field} must be a list.", field=field)
    if len(value) > MAX_PREKEYS:
        raise ValidationFailed(f"{field} has more than {MAX_PREKEYS} keys.", field=field)
    found: dict[int, Prekey] = {}
    for item in value:
        item = require(item, field)
        kid = key_id(item, "id", f"{field}.id")
        b64(item.get("key"), f"{field}.key", size=KEY_BYTES)
        if kid in found:
            raise ValidationFailed(f"{field} repeats id {kid}.", field=field)
        found[kid] = Prekey(kid, item["key"])
    return list(found.values())


def parse_signed_prekey(value: Any, signing_key: bytes) -> SignedPrekey:
    """The signed prekey, its Ed25519 signature over the key's raw bytes verified."""
    spk = require(value, "signed_prekey")
    kid = key_id(spk, "id", "signed_prekey.id")
    raw = b64(spk.get("key"), "signed_prekey.key", size=KEY_BYTES)
    signature = b64(spk.get("signature"), "signed_prekey.signature", size=SIGNATURE_BYTES)
    try:
        Ed25519PublicKey.from_public_bytes(signing_key).verify(signature, raw)
    except InvalidSignature:
        raise ValidationFailed(
            "The signed prekey's signature does not verify with the signing key.",
            field="signed_prekey.signature",
        ) from None
    return SignedPrekey(kid, spk["key"], spk["signature"])


def parse_header(value: Any, kind: str, path: str) -> dict[str, Any]:
    """A Double Ratchet header {dh, pn, n}, plus X3DH's {ik, ek, spk_id, opk_id} on a prekey
    message; only these fields are kept."""
    header = require(value, path)
    b64(header.get("dh"), f"{path}.dh", size=KEY_BYTES)
    shown: dict[str, Any] = {
        "dh": header["dh"],
        "pn": key_id(header, "pn", f"{path}.pn"),
        "n": key_id(header, "n", f"{path}.n"),
    }
    if kind == "prekey":
        for name in ("ik", "ek"):
            b64(header.get(name), f"{path}.{name}", size=KEY_BYTES)
            shown[name] = header[name]
        shown["spk_id"] = key_id(header, "spk_id", f"{path}.spk_id")
        shown["opk_id"] = (
            None if header.get("opk_id") is None else key_id(header, "opk_id", f"{path}.opk_id")
        )
    return shown


def parse_envelopes(value: Any) -> list[dict[str, Any]]:
    """The envelopes of a send, shapes checked (never content), one per device at most."""
    if not isinstance(value, list):
        raise ValidationFailed("envelopes must be a list.", field="envelopes")
    if len(value) > MAX_ENVELOPES:
        raise ValidationFailed(f"envelopes has more than {MAX_ENVELOPES} items.", field="envelopes")
    seen: set[tuple[str, str]] = set()
    envelopes = []
    for item in value:
        item = require(item, "envelopes")
        user_id = check_id(item.get("user_id") or "", "envelopes.user_id")
        device_id = check_id(item.get("device_id") or "", "envelopes.device_id")
        kind = item.get("type")
        if kind not in ENVELOPE_TYPES:
            raise ValidationFailed(
                "envelopes.type must be prekey or message.", field="envelopes.type"
            )
        header = parse_header(item.get("header"), kind, "envelopes.header")
        raw = b64(item.get("ciphertext"), "envelopes.ciphertext", max_size=MAX_CIPHERTEXT_BYTES)
        if not MIN_CIPHERTEXT_BYTES <= len(raw) <= MAX_CIPHERTEXT_BYTES:
            raise ValidationFailed(
                f"envelopes.ciphertext must be {MIN_CIPHERTEXT_BYTES}-{MAX_CIPHERTEXT_BYTES} "
                "bytes.",
                field="envelopes.ciphertext",
            )
        if (user_id, device_id) in seen:
            raise ValidationFailed("Two envelopes for one device.", field="envelopes")
        seen.add((user_id, device_id))
        envelopes.append(
            {
                "user_id": user_id,
                "device_id": device_id,
                "type": kind,
                "header": header,
                "ciphertext": item["ciphertext"],
            }
        )
    return envelopes


def for_device(shown: dict[str, Any], device_id: str | None) -> dict[str, Any]:
    """A message as one device is shown it: its own envelope only; no_envelope when there is
    none for it (a device newer than the message; the sender's own device keeps its text)."""
    if not shown.get("encrypted"):
        return shown
    mine = [e for e in shown.get("envelopes", ()) if e["device_id"] == device_id]
    shown = {**shown, "envelopes": mine}
    if not mine and shown.get("sender_device_id") != device_id and not shown.get("deleted"):
        shown["no_envelope"] = True
    return shown


def for_session(event: Event, session_id: str) -> Event:
    """The event as one session's transport delivers it: an encrypted message.new with this
    session's device's envelope only (none and no_envelope for a session without a device),
    and without the map of sessions. Every other event is returned as it is."""
    sessions = event.get(DEVICE_OF_SESSION)
    if sessions is None:
        return event
    message = for_device(event["message"], sessions.get(session_id))
    return {**{k: v for k, v in event.items() if k != DEVICE_OF_SESSION}, "message": message}


# -- commands ---------------------------------------------------------------------------------


class E2eCommands(LifecycleCommands, MessageCommands):
    """keys.*: the key directory; the envelopes of encrypted conversations' messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_claims: Attempts = AttemptLimiter(
            self.settings.key_claims_per_user, self.settings.key_claim_window_secs
        )
        self._session_of: dict[str, str] = {}  # device id -> session id (SESSIONS_KEPT)

    async def _own_device(self, principal: Principal, device_id: str) -> Device:
        """The device this session registered, which must be device_id."""
        device = await self.store.e2e.device_of_session(principal.session_id)
        if device is None or device.device_id != device_id:
            raise NotFound("This session has no such device.", field="device_id")
        return device

    async def live_devices(self, user_ids: list[str]) -> list[Device]:
        """The users' devices whose sessions are live: a device goes with its session (a
        logout, a revocation, an expiry), as a Matrix device goes with its access token, so
        nobody encrypts for a browser that can no longer read."""
        devices = await self.store.e2e.devices_of(user_ids)
        sessions = await asyncio.gather(*(self.store.sessions.get(d.session_id) for d in devices))
        now = utcnow()
        live = [
            d
            for d, s in zip(devices, sessions, strict=True)
            if s is not None and not s.revoked and s.expires_at > now
        ]
        self._note_sessions(live)
        return live

    def _note_sessions(self, devices: list[Device]) -> None:
        """Remember each device's session for the events of the send under way (the oldest
        entries go past SESSIONS_KEPT)."""
        kept = self._session_of
        for device in devices:
            kept.pop(device.device_id, None)
            kept[device.device_id] = device.session_id
        while len(kept) > SESSIONS_KEPT:
            del kept[next(iter(kept))]

    async def _device_id(self, principal: Principal) -> str | None:
        device = await self.store.e2e.device_of_session(principal.session_id)
        return device.device_id if device is not None else None

    @command(
        "keys.devices.put",
        takes=Fields(
            {
                "device_id": ID,
                "identity_key": shapes.B64,
                "signing_key": shapes.B64,
                "signed_prekey": shapes.ref("SignedPrekey"),
                "one_time_prekeys": PREKEYS,
            },
            ("device_id", "identity_key", "signing_key", "signed_prekey"),
        ),
        gives=shapes.reply(device=DEVICE_VIEW),
        also=(201,),
        errors=(409,),
    )
    async def put_device(self, principal: Principal, data: Any) -> Reply:
        """Register this session's device (201), or replace its keys (200): one device per
        session. The signed prekey's signature is checked; at most MAX_PREKEYS one-time
        prekeys are stored."""
        data = require_object(data)
        device_id = require_id(data, "device_id")
        b64(data.get("identity_key"), "identity_key", size=KEY_BYTES)
        signing = b64(data.get("signing_key"), "signing_key", size=KEY_BYTES)
        signed = parse_signed_prekey(data.get("signed_prekey"), signing)
        field = "one_time_prekeys"
        prekeys = parse_prekeys(data[field], field) if field in data else []
        me = principal.user_id
        held = await self.store.e2e.prekey_count(me, device_id)
        self._check_room(held, prekeys)
        device = Device(
            me, device_id, principal.session_id, data["identity_key"], data["signing_key"],
            signed, utcnow(),
        )  # fmt: skip
        new = await self.store.e2e.put_device(device)
        count = await self.store.e2e.add_prekeys(me, device_id, prekeys)
        reply = {"device": device_view(device, prekeys=count)}
        return StatusReply(201, reply) if new else reply

    @staticmethod
    def _check_room(held: int, prekeys: list[Prekey]) -> None:
        if held + len(prekeys) > MAX_PREKEYS:
            raise ValidationFailed(
                f"A device stores at most {MAX_PREKEYS} one-time prekeys ({held} held).",
                field="one_time_prekeys",
            )

    @command(
        "keys.prekeys.add",
        takes=Fields(
            {"device_id": ID, "one_time_prekeys": PREKEYS}, ("device_id", "one_time_prekeys")
        ),
        gives=shapes.reply(one_time_prekeys={"type": "integer", "minimum": 0}),
        errors=(404,),
    )
    async def add_prekeys(self, principal: Principal, data: Any) -> Reply:
        """Add one-time prekeys to this session's device (what keys.low asks for)."""
        data = require_object(data)
        device = await self._own_device(principal, require_id(data, "device_id"))
        prekeys = parse_prekeys(data.get("one_time_prekeys"), "one_time_prekeys")
        held = await self.store.e2e.prekey_count(device.user_id, device.device_id)
        self._check_room(held, prekeys)
        count = await self.store.e2e.add_prekeys(device.user_id, device.device_id, prekeys)
        return {"one_time_prekeys": count}

    @command("keys.devices.delete", takes=DEVICE_PATH, gives=shapes.EMPTY, errors=(404,))
    async def delete_device(self, principal: Principal, data: Any) -> Reply:
        """Remove one of the caller's devices and its keys (a lost browser, from another)."""
        device_id = require_id(require_object(data), "device_id")
        if not await self.store.e2e.delete_device(principal.user_id, device_id):
            raise NotFound("No such device.", field="device_id")
        return {}

    @command(
        "keys.user",
        takes=Fields({"user_id": ID}, ("user_id",)),
        gives=shapes.reply(user_id=ID, devices=shapes.list_of(DEVICE_VIEW)),
        errors=(404,),
    )
    async def user_keys(self, principal: Principal, data: Any) -> Reply:
        """A user's devices with their public keys and identity-key fingerprints (for safety
        numbers), oldest first."""
        user_id = require_id(require_object(data), "user_id")
        if await self.store.users.get(user_id) is None:
            raise NotFound("No such user.", field="user_id")
        devices = await self.live_devices([user_id])
        return {"user_id": user_id, "devices": [device_view(d) for d in devices]}

    @command(
        "keys.claim",
        takes=Fields({"user_id": ID, "device_id": ID}, ("user_id",)),
        gives=shapes.reply(user_id=ID, bundles=shapes.list_of(shapes.ref("Bundle"))),
        errors=(404, 429),
    )
    async def claim_keys(self, principal: Principal, data: Any) -> Reply:
        """A prekey bundle for each device of user_id (or only device_id), each with at most
        one one-time prekey, handed out once and deleted in the same operation; the caller's
        own device is left out. Rate-limited per caller."""
        data = require_object(data)
        user_id = require_id(data, "user_id")
        only = require_id(data, "device_id") if "device_id" in data else None
        wait = await self.key_claims.take(principal.user_id)
        if wait:
            raise RateLimited("Too many key claims; slow down.", retry_after_secs=wait)
        devices = await self.live_devices([user_id])
        if not devices and await self.store.users.get(user_id) is None:
            raise NotFound("No such user.", field="user_id")
        mine = await self._device_id(principal) if user_id == principal.user_id else None
        bundles = []
        for device in devices:
            if (only is not None and device.device_id != only) or (
                user_id == principal.user_id and device.device_id == mine
            ):
                continue
            prekey = await self.store.e2e.take_prekey(user_id, device.device_id)
            bundles.append(
                {
                    "user_id": user_id,
                    "device_id": device.device_id,
                    "identity_key": device.identity_key,
                    "signing_key": device.signing_key,
                    "signed_prekey": dataclasses.asdict(device.signed_prekey),
                    "one_time_prekey": dataclasses.asdict(prekey) if prekey else None,
                }
            )
            if prekey is not None:
                await self._maybe_low(device)
        return {"user_id": user_id, "bundles": bundles}

    async def _maybe_low(self, device: Device) -> None:
        """keys.low to the device's user when fewer than PREKEYS_LOW one-time prekeys remain."""
        left = await self.store.e2e.prekey_count(device.user_id, device.device_id)
        if left < PREKEYS_LOW:
            self.publish(
                [device.user_id],
                {"type": "keys.low", "device_id": device.device_id, "remaining": left},
            )

    # -- encrypted conversations ----------------------------------------------

    async def seal(
        self, principal: Principal, conv: Conversation, data: dict[str, Any]
    ) -> tuple[str | None, tuple[dict[str, Any], ...]]:
        """The sending device and the envelopes: exactly one for every current device of
        every member but the sending one (DevicesChanged otherwise); no body."""
        if not conv.encrypted:
            return await super().seal(principal, conv, data)
        if data.get("body") is not None:
            raise ValidationFailed(
                "An encrypted conversation's message has no body: send envelopes.", field="body"
            )
        if "envelopes" not in data:
            raise ValidationFailed(
                "envelopes is required in an encrypted conversation.", field="envelopes"
            )
        envelopes = parse_envelopes(data["envelopes"])
        device = await self.store.e2e.device_of_session(principal.session_id)
        if device is None:
            raise NoDevice("Register this session's device (PUT /api/keys/devices) first.")
        current = {(d.user_id, d.device_id) for d in await self.live_devices(conv.member_ids)}
        current.discard((principal.user_id, device.device_id))
        given = {(e["user_id"], e["device_id"]) for e in envelopes}
        if given != current:
            devices = [{"user_id": u, "device_id": d} for u, d in sorted(current)]
            raise DevicesChanged(devices, len(current - given), len(given - current))
        return device.device_id, tuple(envelopes)

    def present(self, message: Message, user_id: str) -> dict[str, Any]:
        """An encrypted message with the envelopes of this user's devices (each device keeps
        its own: history and exports give it only that one)."""
        shown = super().present(message, user_id)
        if message.sender_device is not None:
            shown["envelopes"] = [e for e in message.envelopes if e["user_id"] == user_id]
        return shown

    def message_event(self, message: Message, user_id: str) -> Event:
        """An encrypted message.new for one user, with the session of each device its envelopes
        address: one event per user as for any message (and in Redis as it is), each session's
        transport keeping its own device's envelope (for_session)."""
        event = super().message_event(message, user_id)
        if message.sender_device is not None:
            devices = [e["device_id"] for e in event["message"]["envelopes"]]
            if user_id == message.sender_id:  # the sending device: no envelope, its own text
                devices.append(message.sender_device)
            kept = self._session_of
            event[DEVICE_OF_SESSION] = {kept[d]: d for d in devices if d in kept}
        return event

    def present_for_export(self, message: Message) -> dict[str, Any]:
        """Every envelope, for export_batches to keep the reader device's."""
        shown = super().present_for_export(message)
        if message.sender_device is not None:
            shown["envelopes"] = list(message.envelopes)
        return shown

    async def history(self, principal: Principal, data: Any) -> Reply:
        """messages.history, each encrypted message with this device's envelope only."""
        page = await super().history(principal, data)
        if any(m.get("encrypted") for m in page["messages"]):
            device_id = await self._device_id(principal)
            page["messages"] = [for_device(m, device_id) for m in page["messages"]]
        return page

    async def render(
        self, conv: Conversation, user_id: str, blocked: set[str] | None = None
    ) -> dict[str, Any]:
        """An encrypted conversation's last message says ENCRYPTED_PREVIEW, without envelopes."""
        shown = await super().render(conv, user_id, blocked)
        last = shown.get("last_message")
        if conv.encrypted and last:
            last = {k: v for k, v in last.items() if k != "envelopes"}
            shown["last_message"] = {**last, "body": ENCRYPTED_PREVIEW}
        return shown

    async def export_plan(
        self, principal: Principal, conversation_id: str | None
    ) -> tuple[dict[str, Any], list[ExportPart]]:
        """The plan, each part noting the reader's device (whose envelopes it holds)."""
        user, parts = await super().export_plan(principal, conversation_id)
        device_id = await self._device_id(principal)
        return user, [dataclasses.replace(p, reader_device=device_id) for p in parts]

    async def export_batches(self, part: ExportPart) -> AsyncIterator[list[dict[str, Any]]]:
        """The messages, each encrypted one with the reader device's envelope only."""
        async for batch in super().export_batches(part):
            yield [for_device(m, part.reader_device) for m in batch]

    async def edit_message(self, principal: Principal, data: Any) -> Reply:
        """messages.edit, refused in an encrypted conversation (docs/e2e.md)."""
        data = require_object(data)
        conversation_id = require_id(data, "conversation_id")
        conv, _ = await self.access_conversation(principal, conversation_id, write=True)
        if conv.encrypted:
            raise EncryptedConversation(
                "Messages of an encrypted conversation cannot be edited: send a new message."
            )
        return await super().edit_message(principal, data)
