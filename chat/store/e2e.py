"""The key directory of end-to-end encryption (PROTOCOL.md section 11): devices and their
public keys, one-time prekeys. Nothing here is secret: private keys never leave the clients.

A device is one document, keyed by (user, device id), bound to the session that registered it
(a unique index: one device per session). Each one-time prekey is a document of its own, so that
a claim takes one with a single find_one_and_delete: the database hands each key to exactly one
claimer however many race, and it is gone in the same operation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from chat.errors import Conflict
from chat.store.base import DUPLICATE_KEY, Collections, InFlight, in_chunks, translated


@dataclasses.dataclass(frozen=True)
class SignedPrekey:
    id: int
    key: str  # base64 of the X25519 public key
    signature: str  # base64 of the Ed25519 signature over the key's 32 raw bytes


@dataclasses.dataclass(frozen=True)
class Prekey:
    id: int
    key: str


@dataclasses.dataclass(frozen=True)
class Device:
    user_id: str
    device_id: str
    session_id: str
    identity_key: str  # base64, X25519
    signing_key: str  # base64, Ed25519
    signed_prekey: SignedPrekey
    created_at: datetime


def _device_from_doc(doc: dict[str, Any]) -> Device:
    spk = doc["signed_prekey"]
    return Device(
        user_id=doc["user_id"],
        device_id=doc["device_id"],
        session_id=doc["session_id"],
        identity_key=doc["identity_key"],
        signing_key=doc["signing_key"],
        signed_prekey=SignedPrekey(spk["id"], spk["key"], spk["signature"]),
        created_at=doc["created_at"],
    )


def _prekey_docs(user_id: str, device_id: str, prekeys: Sequence[Prekey]) -> list[dict[str, Any]]:
    return [
        {
            "_id": f"{user_id}:{device_id}:{p.id}",
            "user_id": user_id,
            "device_id": device_id,
            "key_id": p.id,
            "key": p.key,
        }
        for p in prekeys
    ]


class E2eStore(Collections):
    """Devices (e2e_devices) and one-time prekeys (e2e_prekeys)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], in_flight: InFlight) -> None:
        super().__init__(in_flight)
        self._devices = db["e2e_devices"]
        self._prekeys = db["e2e_prekeys"]

    async def ensure_indexes(self) -> None:
        """One device per session; a user's devices; a device's prekeys."""
        await self._devices.create_index([("session_id", ASCENDING)], unique=True)
        await self._devices.create_index([("user_id", ASCENDING)])
        await self._prekeys.create_index([("user_id", ASCENDING), ("device_id", ASCENDING)])

    @translated
    async def device_of_session(self, session_id: str) -> Device | None:
        """The device this session registered, or None."""
        doc = await self._devices.find_one({"session_id": session_id})
        return _device_from_doc(doc) if doc else None

    @translated
    async def devices_of(self, user_ids: Sequence[str]) -> list[Device]:
        """Every device of these users, oldest first."""
        docs: list[dict[str, Any]] = []
        for chunk in in_chunks(user_ids):
            docs += [d async for d in self._devices.find({"user_id": {"$in": chunk}})]
        docs.sort(key=lambda d: (d["created_at"], d["_id"]))
        return [_device_from_doc(d) for d in docs]

    @translated
    async def put_device(self, device: Device) -> bool:
        """Store the device's public keys (replacing those of an earlier PUT by its own
        session): True when it is new. Conflict when the session is already another device,
        or the device id is another session's."""
        key = f"{device.user_id}:{device.device_id}"
        doc = {
            "user_id": device.user_id,
            "device_id": device.device_id,
            "session_id": device.session_id,
            "identity_key": device.identity_key,
            "signing_key": device.signing_key,
            "signed_prekey": dataclasses.asdict(device.signed_prekey),
        }
        try:
            result = await self._devices.update_one(
                {"_id": key, "session_id": device.session_id},
                {"$set": doc, "$setOnInsert": {"created_at": device.created_at}},
                upsert=True,
            )
        except DuplicateKeyError:
            raise Conflict(
                "This session is already another device, or this device id is another "
                "session's: one device per session.",
                field="device_id",
            ) from None
        return result.upserted_id is not None

    @translated
    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """Remove the device and its prekeys; False when it did not exist."""
        result = await self._devices.delete_one({"_id": f"{user_id}:{device_id}"})
        await self._prekeys.delete_many({"user_id": user_id, "device_id": device_id})
        return result.deleted_count == 1

    @translated
    async def prekey_count(self, user_id: str, device_id: str) -> int:
        """How many one-time prekeys of the device are left."""
        return await self._prekeys.count_documents({"user_id": user_id, "device_id": device_id})

    @translated
    async def add_prekeys(self, user_id: str, device_id: str, prekeys: Sequence[Prekey]) -> int:
        """Store these one-time prekeys (an id already stored keeps its key): how many the
        device holds now."""
        if prekeys:
            try:
                await self._prekeys.insert_many(
                    _prekey_docs(user_id, device_id, prekeys), ordered=False
                )
            except BulkWriteError as exc:
                errors = (exc.details or {}).get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
        return await self.prekey_count(user_id, device_id)

    @translated
    async def take_prekey(self, user_id: str, device_id: str) -> Prekey | None:
        """One one-time prekey of the device, deleted by the same operation that reads it
        (each is handed out once), or None when none is left."""
        doc = await self._prekeys.find_one_and_delete(
            {"user_id": user_id, "device_id": device_id}, sort=[("key_id", ASCENDING)]
        )
        return Prekey(doc["key_id"], doc["key"]) if doc else None
