"""A reference client of end-to-end encryption (docs/e2e.md), in Python with `cryptography`:
X3DH (Signal's specification, with a separate Ed25519 key signing the prekey) and the Double
Ratchet (header {dh, pn, n}; AES-256-GCM with the associated data and the header as its
associated data; HKDF-SHA-256 for the root chain, HMAC-SHA-256 for the sending and receiving
chains; bounded skipped message keys). The browser client (static/js/e2e/) must interoperate
with it byte for byte: the constants below are the protocol's.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import secrets
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

X3DH_INFO = b"chat-e2e X3DH"
RATCHET_INFO = b"chat-e2e ratchet"
MESSAGE_INFO = b"chat-e2e message"
MAX_SKIP = 1000  # message keys skipped in one chain at most
MAX_SKIPPED_KEYS = 2000  # kept at most per session, the oldest dropped first


class DecryptError(Exception):
    """The envelope cannot be decrypted (tampered, unknown session, too many skipped)."""


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def raw(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def pub(key: X25519PrivateKey) -> bytes:
    return raw(key.public_key())


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    return mac.finalize()


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """The root chain: (new root key, new chain key)."""
    out = hkdf(dh_out, rk, RATCHET_INFO, 64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """A sending or receiving chain: (next chain key, message key)."""
    return hmac_sha256(ck, b"\x02"), hmac_sha256(ck, b"\x01")


def header_bytes(header: dict[str, Any]) -> bytes:
    """The header as associated data: the ratchet key's 32 bytes, pn and n as 32-bit big-endian."""
    return b64d(header["dh"]) + struct.pack(">II", header["pn"], header["n"])


def seal(mk: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """AES-256-GCM under a key and nonce derived from the message key (each used once)."""
    out = hkdf(mk, bytes(32), MESSAGE_INFO, 44)
    return AESGCM(out[:32]).encrypt(out[32:], plaintext, ad)


def unseal(mk: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    out = hkdf(mk, bytes(32), MESSAGE_INFO, 44)
    try:
        return AESGCM(out[:32]).decrypt(out[32:], ciphertext, ad)
    except InvalidTag as exc:
        raise DecryptError("the envelope does not authenticate") from exc


class Ratchet:
    """Signal's Double Ratchet for one pair of devices."""

    def __init__(self, rk: bytes, ad: bytes, dhs: X25519PrivateKey) -> None:
        self.rk = rk
        self.ad = ad  # X3DH's: both identity keys
        self.dhs = dhs
        self.dhr: bytes | None = None
        self.cks: bytes | None = None
        self.ckr: bytes | None = None
        self.ns = self.nr = self.pn = 0
        self.skipped: collections.OrderedDict[tuple[bytes, int], bytes] = collections.OrderedDict()
        self.steps = 0  # DH ratchet steps taken (tests check one per turn)

    @classmethod
    def initiator(cls, sk: bytes, ad: bytes, their_spk: bytes) -> Ratchet:
        ratchet = cls(sk, ad, X25519PrivateKey.generate())
        ratchet.dhr = their_spk
        dh = ratchet.dhs.exchange(X25519PublicKey.from_public_bytes(their_spk))
        ratchet.rk, ratchet.cks = kdf_rk(sk, dh)
        return ratchet

    @classmethod
    def responder(cls, sk: bytes, ad: bytes, spk: X25519PrivateKey) -> Ratchet:
        return cls(sk, ad, spk)

    def encrypt(self, plaintext: bytes) -> tuple[dict[str, Any], bytes]:
        assert self.cks is not None, "a responder sends after it received"
        self.cks, mk = kdf_ck(self.cks)
        header = {"dh": b64e(pub(self.dhs)), "pn": self.pn, "n": self.ns}
        self.ns += 1
        return header, seal(mk, plaintext, self.ad + header_bytes(header))

    def decrypt(self, header: dict[str, Any], ciphertext: bytes) -> bytes:
        """The plaintext; the state is left as it was when the envelope fails."""
        saved = (self.rk, self.dhs, self.dhr, self.cks, self.ckr, self.ns, self.nr, self.pn,
                 self.steps, collections.OrderedDict(self.skipped))  # fmt: skip
        try:
            return self._decrypt(header, ciphertext)
        except Exception:
            (self.rk, self.dhs, self.dhr, self.cks, self.ckr, self.ns, self.nr, self.pn,
             self.steps, self.skipped) = saved  # fmt: skip
            raise

    def _decrypt(self, header: dict[str, Any], ciphertext: bytes) -> bytes:
        dh, n, pn = b64d(header["dh"]), int(header["n"]), int(header["pn"])
        ad = self.ad + header_bytes(header)
        mk = self.skipped.pop((dh, n), None)
        if mk is not None:
            return unseal(mk, ciphertext, ad)
        if dh != self.dhr:
            self._skip(pn)
            self._dh_step(dh)
        self._skip(n)
        assert self.ckr is not None
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr += 1
        return unseal(mk, ciphertext, ad)

    def _skip(self, until: int) -> None:
        if self.ckr is None:
            return
        if until - self.nr > MAX_SKIP:
            raise DecryptError("too many skipped messages")
        while self.nr < until:
            assert self.dhr is not None
            self.ckr, mk = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1
            while len(self.skipped) > MAX_SKIPPED_KEYS:
                self.skipped.popitem(last=False)

    def _dh_step(self, dh: bytes) -> None:
        self.pn, self.ns, self.nr = self.ns, 0, 0
        self.dhr = dh
        their = X25519PublicKey.from_public_bytes(dh)
        self.rk, self.ckr = kdf_rk(self.rk, self.dhs.exchange(their))
        self.dhs = X25519PrivateKey.generate()
        self.rk, self.cks = kdf_rk(self.rk, self.dhs.exchange(their))
        self.steps += 1


@dataclasses.dataclass
class Session:
    ratchet: Ratchet
    x3dh: dict[str, Any] | None  # the X3DH part of the header, until the peer answers
    ek: str  # the initiator's ephemeral key: a prekey envelope with it joins this session


class Device:
    """One device's keys (private ones stay here) and its sessions with other devices."""

    def __init__(self, device_id: str | None = None) -> None:
        self.device_id = device_id or secrets.token_hex(8)
        self.identity = X25519PrivateKey.generate()
        self.signing = Ed25519PrivateKey.generate()
        self.spk_id = 1
        self.spk = X25519PrivateKey.generate()
        self.prekeys: dict[int, X25519PrivateKey] = {}
        self._next_prekey = 1
        self.sessions: dict[tuple[str, str], Session] = {}

    def signed_prekey(self) -> dict[str, Any]:
        spk = pub(self.spk)
        return {"id": self.spk_id, "key": b64e(spk), "signature": b64e(self.signing.sign(spk))}

    def new_prekeys(self, count: int) -> list[dict[str, Any]]:
        made = []
        for _ in range(count):
            key = X25519PrivateKey.generate()
            self.prekeys[self._next_prekey] = key
            made.append({"id": self._next_prekey, "key": b64e(pub(key))})
            self._next_prekey += 1
        return made

    def upload(self, prekeys: int = 20) -> dict[str, Any]:
        """The body of PUT /api/keys/devices/{device_id}."""
        return {
            "identity_key": b64e(pub(self.identity)),
            "signing_key": b64e(raw(self.signing.public_key())),
            "signed_prekey": self.signed_prekey(),
            "one_time_prekeys": self.new_prekeys(prekeys),
        }

    # -- X3DH -------------------------------------------------------------------

    def initiate(self, bundle: dict[str, Any]) -> Session:
        """A session with the bundle's device (X3DH as the initiator)."""
        spk = bundle["signed_prekey"]
        spk_raw = b64d(spk["key"])
        signing = Ed25519PublicKey.from_public_bytes(b64d(bundle["signing_key"]))
        signing.verify(b64d(spk["signature"]), spk_raw)  # InvalidSignature: refuse it
        ik_b = b64d(bundle["identity_key"])
        ek = X25519PrivateKey.generate()
        dh = [
            self.identity.exchange(X25519PublicKey.from_public_bytes(spk_raw)),
            ek.exchange(X25519PublicKey.from_public_bytes(ik_b)),
            ek.exchange(X25519PublicKey.from_public_bytes(spk_raw)),
        ]
        opk = bundle.get("one_time_prekey")
        if opk is not None:
            dh.append(ek.exchange(X25519PublicKey.from_public_bytes(b64d(opk["key"]))))
        sk = hkdf(b"\xff" * 32 + b"".join(dh), bytes(32), X3DH_INFO, 32)
        ad = pub(self.identity) + ik_b
        x3dh = {
            "ik": b64e(pub(self.identity)),
            "ek": b64e(pub(ek)),
            "spk_id": spk["id"],
            "opk_id": opk["id"] if opk is not None else None,
        }
        session = Session(Ratchet.initiator(sk, ad, spk_raw), x3dh, x3dh["ek"])
        self.sessions[(bundle["user_id"], bundle["device_id"])] = session
        return session

    def respond(self, peer: tuple[str, str], header: dict[str, Any]) -> Session:
        """The session a prekey envelope starts (X3DH as the responder); its one-time prekey
        is used up."""
        if header["spk_id"] != self.spk_id:
            raise DecryptError("unknown signed prekey")
        ik_a = X25519PublicKey.from_public_bytes(b64d(header["ik"]))
        ek_a = X25519PublicKey.from_public_bytes(b64d(header["ek"]))
        dh = [self.spk.exchange(ik_a), self.identity.exchange(ek_a), self.spk.exchange(ek_a)]
        if header.get("opk_id") is not None:
            opk = self.prekeys.pop(header["opk_id"], None)
            if opk is None:
                raise DecryptError("the one-time prekey was used already")
            dh.append(opk.exchange(ek_a))
        sk = hkdf(b"\xff" * 32 + b"".join(dh), bytes(32), X3DH_INFO, 32)
        ad = b64d(header["ik"]) + pub(self.identity)
        session = Session(Ratchet.responder(sk, ad, self.spk), None, header["ek"])
        self.sessions[peer] = session
        return session

    # -- messages ---------------------------------------------------------------

    def encrypt(self, peer: tuple[str, str], plaintext: bytes) -> dict[str, Any]:
        """An envelope for the peer device (a session with it must exist)."""
        session = self.sessions[peer]
        header, ciphertext = session.ratchet.encrypt(plaintext)
        kind = "message"
        if session.x3dh is not None:
            header, kind = {**header, **session.x3dh}, "prekey"
        return {
            "user_id": peer[0],
            "device_id": peer[1],
            "type": kind,
            "header": header,
            "ciphertext": b64e(ciphertext),
        }

    def decrypt(self, peer: tuple[str, str], envelope: dict[str, Any]) -> bytes:
        """The plaintext of an envelope from the peer device."""
        header = envelope["header"]
        session = self.sessions.get(peer)
        fresh = False
        if envelope["type"] == "prekey" and (session is None or session.ek != header["ek"]):
            previous = session
            session, fresh = self.respond(peer, header), True
        if session is None:
            raise DecryptError("no session with this device")
        try:
            plaintext = session.ratchet.decrypt(header, b64d(envelope["ciphertext"]))
        except Exception:
            if fresh:  # a forged prekey envelope must not replace a working session
                if previous is None:
                    del self.sessions[peer]
                else:
                    self.sessions[peer] = previous
            raise
        if envelope["type"] == "message":
            session.x3dh = None  # the peer answered: it has the session
        return plaintext


def content(text: str, **extra: Any) -> bytes:
    """What a message's plaintext is: JSON, as the browser client writes it."""
    return json.dumps({"body": text, **extra}).encode()


def text_of(plaintext: bytes) -> str:
    body: str = json.loads(plaintext)["body"]
    return body


# -- files ----------------------------------------------------------------------------------------

FILE_KEY_BITS = 256
FILE_IV_BYTES = 12


def encrypt_file(data: bytes, name: str, content_type: str) -> tuple[bytes, dict[str, Any]]:
    """A file for an encrypted conversation: AES-256-GCM under a random key and IV (each file
    its own), as WebCrypto writes it (the tag after the ciphertext). The ciphertext is what is
    uploaded; the rest goes in the message's plaintext, with the upload's id."""
    key, iv = AESGCM.generate_key(FILE_KEY_BITS), secrets.token_bytes(FILE_IV_BYTES)
    meta = {"key": b64e(key), "iv": b64e(iv), "name": name, "type": content_type, "size": len(data)}
    return AESGCM(key).encrypt(iv, data, None), meta


def decrypt_file(ciphertext: bytes, meta: dict[str, Any]) -> bytes:
    """The file's bytes; DecryptError when they do not authenticate."""
    try:
        return AESGCM(b64d(meta["key"])).decrypt(b64d(meta["iv"]), ciphertext, None)
    except InvalidTag as exc:
        raise DecryptError("the file does not authenticate") from exc
