"""Password hashing (bcrypt, off the event loop) and JWT issue/verify."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta

import bcrypt
import jwt

from chat.errors import Unauthorized
from chat.validation import is_id

JWT_ALGORITHM = "HS256"
VERIFIED_TOKENS_MAX = 50_000  # tokens kept with their checked claims (a few hundred bytes each)
BCRYPT_MAX_BYTES = 72
# The last second a datetime can hold (9999-12-31T23:59:59Z): a later exp cannot be a date.
LATEST_EXP = 253_402_300_799


class PasswordHasher:
    """bcrypt in an executor: a hash costs ~250 ms of CPU that the event loop must not pay."""

    def __init__(self, rounds: int, executor: Executor | None = None) -> None:
        self._rounds = rounds
        self._executor = executor
        # Verified against when the user does not exist, so both failures cost the same time.
        self._dummy_hash = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(rounds)).decode()

    async def hash(self, password: str) -> str:
        """A salted bcrypt hash of a validated (<= 72 bytes) password."""
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self._rounds)
        hashed: bytes = await loop.run_in_executor(
            self._executor, bcrypt.hashpw, password.encode(), salt
        )
        return hashed.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        """True only if the password matches; spends the same time when hashed is None."""
        raw = password.encode()
        if len(raw) > BCRYPT_MAX_BYTES:
            raw = b""  # never matches a stored hash, and bcrypt refuses long input
        target = (hashed or self._dummy_hash).encode()
        loop = asyncio.get_running_loop()
        ok: bool = await loop.run_in_executor(self._executor, bcrypt.checkpw, raw, target)
        return ok and hashed is not None


@dataclasses.dataclass(frozen=True)
class Claims:
    user_id: str
    session_id: str
    expires_at: datetime


class TokenCodec:
    """HS256 tokens carrying user id (sub) and session id (sid), with an expiry."""

    def __init__(self, secret: str, ttl_secs: int) -> None:
        self._secret = secret
        self._ttl = timedelta(seconds=ttl_secs)
        # Tokens whose signature was checked, and their claims: a client polling after every
        # event presents the same token each time (the check costs ~50 us; a lookup ~1). Kept
        # by a 16-byte digest of the token, not the token (~270 bytes): one per connection.
        self._verified: collections.OrderedDict[bytes, Claims] = collections.OrderedDict()

    def expiry(self, now: datetime | None = None) -> datetime:
        """When a token issued now stops working (second precision, as JWT's exp)."""
        now = now or datetime.now(UTC)
        return (now + self._ttl).replace(microsecond=0)

    def issue(self, user_id: str, session_id: str, expires_at: datetime) -> str:
        """A signed token; the session must be stored for it to be accepted."""
        payload = {
            "sub": user_id,
            "sid": session_id,
            "iat": int(datetime.now(UTC).timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        return jwt.encode(payload, self._secret, algorithm=JWT_ALGORITHM)

    def decode(self, token: str) -> Claims:
        """Verified claims, or Unauthorized for a forged, malformed or expired token."""
        key = hashlib.blake2b(token.encode(errors="surrogatepass"), digest_size=16).digest()
        claims = self._verified.get(key)
        if claims is None:
            claims = self._verify(token)
            self._verified[key] = claims
            if len(self._verified) > VERIFIED_TOKENS_MAX:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(key)
        if claims.expires_at <= datetime.now(UTC):  # checked at every use, as jwt.decode does
            raise Unauthorized("The session has expired; sign in again.")
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "sid", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The session has expired; sign in again.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The token is not valid.") from exc
        # The signature only says that we issued it: a token signed with our secret but
        # claims of another type or range (exp as a string, a sub that is no id) is refused.
        sub, sid, exp = payload["sub"], payload["sid"], payload["exp"]
        if not is_id(sub) or not is_id(sid) or not _is_int(exp) or not 0 < exp <= LATEST_EXP:
            raise Unauthorized("The token is not valid.")
        return Claims(user_id=sub, session_id=sid, expires_at=datetime.fromtimestamp(exp, UTC))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
