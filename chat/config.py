"""Settings: built once by server.py (or a test) and passed down; nothing else reads options."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORT = 8888
DEFAULT_DB_NAME = "chat"
MIN_SECRET_BYTES = 32  # HS256 keys shorter than the hash output make forging cheaper
TOKEN_TTL_SECS = 7 * 24 * 3600  # a week: a chat tab stays signed in across a normal week
BCRYPT_ROUNDS = 12  # about 250 ms a hash on one core: slow for attackers, fine at sign-in
QUEUE_GRACE_SECS = 120.0  # a reload or a network drop must not lose events
QUEUE_MAX_EVENTS = 10_000  # unacknowledged events a queue holds before it is dropped
PRESENCE_GRACE_SECS = 10.0  # a page reload must not flap online/offline
# Several processes: each beats this often, and is taken for dead (its users released, those
# who did not reconnect elsewhere announced offline) after PRESENCE_ALIVE_SECS without a beat.
PRESENCE_BEAT_SECS = 5.0
PRESENCE_ALIVE_SECS = 20.0
HEARTBEAT_SECS = 25.0  # below the 30-60 s idle timeouts of common proxies
AUTH_TIMEOUT_SECS = 10.0  # an unauthenticated socket is closed after this
MAX_GROUP_SIZE = 1000
# Prekey bundles one user may claim (chat/e2e.py), earned back over the window: a few per
# contact added, far below what drains a device's 100 one-time prekeys.
KEY_CLAIMS_PER_USER = 30
KEY_CLAIM_WINDOW_SECS = 60.0
# A session checked in the database is trusted this long without checking again, so a
# long-polling client (which authenticates every poll) costs a read per interval, not per
# poll. A logout in this process takes effect at once regardless.
SESSION_CHECK_SECS = 5.0
# Conversations' last activity is written to their documents this often, not per message
# (chat/activity.py): another process sees a conversation move up the list within it.
ACTIVITY_FLUSH_SECS = 2.0
ACTIVITY_REWRITE_SECS = 60.0  # ... and any one conversation's at most this often
DB_TIMEOUT_MS = 3000  # a request fails with 503 instead of hanging when the database is gone
# What one signed-in user may hold at once: far above a person with many tabs, far below what
# exhausts memory (each queue holds up to QUEUE_MAX_EVENTS events, each socket a write buffer).
MAX_QUEUES_PER_USER = 200  # event queues, attached or in their grace period
MAX_SOCKETS_PER_USER = 50  # authenticated WebSockets
MAX_POLLS_PER_USER = 50  # long-polls held at once
# Bytes written to one WebSocket and not yet taken by its client: past this the client is a
# slow consumer and is closed (it resumes losslessly). Two full history pages fit.
MAX_SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
# Failed sign-ins: each account, and each client address, gets this many at once, earned back
# evenly over the window (10 per 5 min: then one every 30 s; 50 for an office behind one NAT).
LOGIN_FAILURES_PER_ACCOUNT = 10
LOGIN_FAILURES_PER_ADDRESS = 50
LOGIN_WINDOW_SECS = 300.0
SIGNUPS_PER_ADDRESS = 20  # sign-up attempts per client address, earned back over the window
SIGNUP_WINDOW_SECS = 3600.0
LOG_FORMATS = ("text", "json")  # --log-format: text for people, json for log collectors
# Where --metrics-port listens unless --metrics-address says otherwise: the metrics name the
# deployment's traffic, which need not be public.
METRICS_ADDRESS = "127.0.0.1"
NOTIFICATION_TTL_DAYS = 90.0  # a read notification is kept this long after it is read
# System notifications one service key may send, earned back over the window: a tournament
# server announcing rounds stays far below; a runaway loop is stopped.
SERVICE_SENDS_PER_KEY = 60
SERVICE_SEND_WINDOW_SECS = 60.0
MAX_UPLOAD_MB = 25  # an attachment's size at most (--max-upload-mb)
# Uploads per user: this many at once, earned back over the window (a person sharing an
# album of photos, not a script filling the database).
UPLOADS_PER_USER = 60
# Command frames of one WebSocket: this many per second sustained, bursts of FRAME_BURST (far
# above a person's typing; a resume or a reconnect storm fits in the burst).
FRAMES_PER_SEC = 20.0
FRAME_BURST = 60.0
# Typing notifications forwarded per user across conversations: per second, and bursts.
TYPING_PER_SEC = 2.0
TYPING_BURST = 10.0
UPLOAD_WINDOW_SECS = 600.0
# Who runs this server, in each VAPID token (RFC 8292): push services write here about abuse.
VAPID_SUBJECT = "mailto:admin@localhost"
PUSH_RETRY_FIRST_SECS = 1.0  # a failed push is retried after this, then twice as long...

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
    presence_beat_secs: float = PRESENCE_BEAT_SECS
    presence_alive_secs: float = PRESENCE_ALIVE_SECS
    heartbeat_secs: float = HEARTBEAT_SECS
    auth_timeout_secs: float = AUTH_TIMEOUT_SECS
    max_group_size: int = MAX_GROUP_SIZE
    db_timeout_ms: int = DB_TIMEOUT_MS
    session_check_secs: float = SESSION_CHECK_SECS
    activity_flush_secs: float = ACTIVITY_FLUSH_SECS
    activity_rewrite_secs: float = ACTIVITY_REWRITE_SECS
    max_queues_per_user: int = MAX_QUEUES_PER_USER
    max_sockets_per_user: int = MAX_SOCKETS_PER_USER
    max_polls_per_user: int = MAX_POLLS_PER_USER
    max_socket_buffer_bytes: int = MAX_SOCKET_BUFFER_BYTES
    login_failures_per_account: int = LOGIN_FAILURES_PER_ACCOUNT
    login_failures_per_address: int = LOGIN_FAILURES_PER_ADDRESS
    login_window_secs: float = LOGIN_WINDOW_SECS
    signups_per_address: int = SIGNUPS_PER_ADDRESS
    signup_window_secs: float = SIGNUP_WINDOW_SECS
    key_claims_per_user: int = KEY_CLAIMS_PER_USER
    key_claim_window_secs: float = KEY_CLAIM_WINDOW_SECS
    max_upload_bytes: int = MAX_UPLOAD_MB * 1024 * 1024
    uploads_per_user: int = UPLOADS_PER_USER
    upload_window_secs: float = UPLOAD_WINDOW_SECS
    frames_per_sec: float = FRAMES_PER_SEC
    frame_burst: float = FRAME_BURST
    typing_per_sec: float = TYPING_PER_SEC
    typing_burst: float = TYPING_BURST
    notification_ttl_days: float = NOTIFICATION_TTL_DAYS
    service_sends_per_key: int = SERVICE_SENDS_PER_KEY
    service_send_window_secs: float = SERVICE_SEND_WINDOW_SECS
    # Origins allowed to open a WebSocket; empty means "same host as the request".
    allowed_origins: tuple[str, ...] = ()
    # Peers whose X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are believed (reverse
    # proxies in front of this server); empty means none: every client is its TCP peer.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # One log line per request at INFO; off, the lines are at DEBUG (shown by --debug only).
    access_log: bool = False
    # Several processes share notices through this Redis (chat/broker/); None: one process.
    redis_url: str | None = None
    # TLS in this server: HTTPS and WSS on `port` (server.py loads them into an SSLContext).
    certfile: Path | None = None
    keyfile: Path | None = None
    log_format: str = "text"  # one of LOG_FORMATS
    # GET /metrics (Prometheus) on a port of its own; None: not served at all.
    metrics_port: int | None = None
    metrics_address: str = METRICS_ADDRESS
    # Web Push (chat/push.py): the VAPID private key (PEM or base64url); None: a key made at
    # start-up and lost at exit (server.py passes the data dir's, or --vapid-private-key).
    vapid_private_key: str | None = None
    vapid_subject: str = VAPID_SUBJECT
    push_retry_first_secs: float = PUSH_RETRY_FIRST_SECS
    # Subscriptions whose endpoint is on loopback or a private network (a push service of
    # one's own there; the tests'): off, a client cannot aim the server's POSTs inside.
    push_private_endpoints: bool = False

    @property
    def tls(self) -> bool:
        """Whether this server speaks TLS itself (--certfile and --keyfile)."""
        return self.certfile is not None

    def __post_init__(self) -> None:
        if len(self.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes long")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both a certificate file and its key file")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"the log format is one of {', '.join(LOG_FORMATS)}")


def redact_url(uri: str) -> str:
    """The URI without its password, for logs and error messages."""
    parts = urlsplit(uri)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri
