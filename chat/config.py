"""Settings: built once by server.py (or a test) and passed down; nothing else reads options."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

DEFAULT_PORT = 8888
DEFAULT_DB_NAME = "chat"
MIN_SECRET_BYTES = 32  # HS256 keys shorter than the hash output make forging cheaper
TOKEN_TTL_SECS = 7 * 24 * 3600  # a week: a chat tab stays signed in across a normal week
BCRYPT_ROUNDS = 12  # about 250 ms a hash on one core: slow for attackers, fine at sign-in
QUEUE_GRACE_SECS = 120.0  # a reload or a network drop must not lose events
QUEUE_MAX_EVENTS = 10_000  # unacknowledged events a queue holds before it is dropped
PRESENCE_GRACE_SECS = 10.0  # a page reload must not flap online/offline
HEARTBEAT_SECS = 25.0  # below the 30-60 s idle timeouts of common proxies
AUTH_TIMEOUT_SECS = 10.0  # an unauthenticated socket is closed after this
MAX_GROUP_SIZE = 1000
# A session checked in the database is trusted this long without checking again, so a
# long-polling client (which authenticates every poll) costs a read per interval, not per
# poll. A logout in this process takes effect at once regardless.
SESSION_CHECK_SECS = 5.0
DB_TIMEOUT_MS = 3000  # a request fails with 503 instead of hanging when the database is gone

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated networks ("10.0.0.0/8,::1"; a bare address is one host); ValueError
    names the first that is not one."""
    networks = []
    for part in value.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{part.strip()!r} is not an IP address or network") from exc
    return tuple(networks)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every tunable of one server instance; immutable once built."""

    secret: str
    mongo_uri: str
    db_name: str = DEFAULT_DB_NAME
    port: int = DEFAULT_PORT
    data_dir: Path = Path("data")
    debug: bool = False
    token_ttl_secs: int = TOKEN_TTL_SECS
    bcrypt_rounds: int = BCRYPT_ROUNDS
    queue_grace_secs: float = QUEUE_GRACE_SECS
    queue_max_events: int = QUEUE_MAX_EVENTS
    presence_grace_secs: float = PRESENCE_GRACE_SECS
    heartbeat_secs: float = HEARTBEAT_SECS
    auth_timeout_secs: float = AUTH_TIMEOUT_SECS
    max_group_size: int = MAX_GROUP_SIZE
    db_timeout_ms: int = DB_TIMEOUT_MS
    session_check_secs: float = SESSION_CHECK_SECS
    # Origins allowed to open a WebSocket; empty means "same host as the request".
    allowed_origins: tuple[str, ...] = ()
    # Peers whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are believed (reverse
    # proxies in front of this server); empty means none: every client is its TCP peer.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # One log line per request at INFO; off, the lines are at DEBUG (shown by --debug only).
    access_log: bool = False

    def __post_init__(self) -> None:
        if len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes long")
