"""Start the chat server: options -> Settings, database, service, listen. Run with --help."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import io
import logging
import os
import secrets
import signal
import ssl
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from chat import service_keys
from chat.config import (
    DB_TIMEOUT_MS,
    DEFAULT_DB_NAME,
    DEFAULT_PORT,
    FRAME_BURST,
    FRAMES_PER_SEC,
    KEY_CLAIM_WINDOW_SECS,
    KEY_CLAIMS_PER_USER,
    LOG_FORMATS,
    LOGIN_FAILURES_PER_ACCOUNT,
    LOGIN_FAILURES_PER_ADDRESS,
    LOGIN_WINDOW_SECS,
    MAX_POLLS_PER_USER,
    MAX_QUEUES_PER_USER,
    MAX_SOCKET_BUFFER_BYTES,
    MAX_SOCKETS_PER_USER,
    MAX_UPLOAD_MB,
    METRICS_ADDRESS,
    MIN_SECRET_BYTES,
    NOTIFICATION_TTL_DAYS,
    PRESENCE_GRACE_SECS,
    QUEUE_GRACE_SECS,
    SERVICE_SEND_WINDOW_SECS,
    SERVICE_SENDS_PER_KEY,
    SIGNUP_WINDOW_SECS,
    SIGNUPS_PER_ADDRESS,
    TYPING_BURST,
    TYPING_PER_SEC,
    UPLOAD_WINDOW_SECS,
    UPLOADS_PER_USER,
    VAPID_SUBJECT,
    Settings,
    parse_networks,
    redact_url,
)
from chat.dbserver import DatabaseStartError, EmbeddedDatabase, make_private_dir, plan_embedded
from chat.errors import DatabaseUnavailable
from chat.logs import make_formatter
from chat.push import load_or_create_vapid_key, vapid_from

log = logging.getLogger("chat.server")

# Tornado's default accept queue (128) overflows when thousands of long-polling clients re-poll
# at once after a fan-out; dropped SYNs are retried only after 1 s, 3 s, 7 s. The kernel caps it
# at net.core.somaxconn.
LISTEN_BACKLOG = 4096

# Garbage collector thresholds (CPython's default is 700, 10, 10). Each connection keeps a few
# hundred tracked objects alive (coroutines, futures, handlers), and with the default a full
# collection ran every 1-3 s while thousands of clients connected or long-polled, each one
# walking every object: 400-500 ms with 5,000 clients, stalling every socket. Young objects
# are still collected often (gen0 every 50,000 net allocations, 30-40 ms at most); full
# collections become about 100 times rarer. See docs/performance.md.
GC_THRESHOLDS = (50_000, 20, 100)
TRACEMALLOC_TOP = 40  # allocation sites in the memory line's detail, when tracing
_SNAPSHOTS: list[tracemalloc.Snapshot] = []  # the previous memory line's, when tracing


class GcPauses:
    """The collector's pauses by generation (count, total and longest), for the memory line:
    they are what every connection waits for while they last."""

    def __init__(self) -> None:
        self._started = 0.0
        self.reset()

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info["generation"]
        pause = time.perf_counter() - self._started
        self.count[gen] += 1
        self.total[gen] += pause
        self.longest[gen] = max(self.longest[gen], pause)

    def summary(self) -> str:
        return ", ".join(
            f"gen{g} {self.count[g]} x, longest {self.longest[g] * 1000:.1f} ms, "
            f"total {self.total[g] * 1000:.0f} ms"
            for g in range(3)
        )


GC_PAUSES = GcPauses()


def tune_gc() -> None:
    """Move what start-up allocated (modules, classes, the app) out of every collection, and
    make full collections rare; called once everything is built, just before serving."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.callbacks.append(GC_PAUSES)


def log_memory() -> None:
    """On SIGUSR1: one log line with the process's memory, after a full collection (a pause of
    up to half a second with thousands of clients). Python's allocated block count tracks
    live objects; RSS also keeps what the allocator has not given back (docs/performance.md)."""
    collected = gc.collect()
    rss = "unknown"
    try:
        with open("/proc/self/statm") as statm:
            rss = f"{int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20:.1f} MiB"
    except (OSError, ValueError, IndexError):
        pass  # not Linux: the block count is the useful figure anyway
    log.info(
        "memory: rss %s, python blocks %d, gc objects %d (%d collected just now)",
        rss, sys.getallocatedblocks(), len(gc.get_objects()), collected,
    )  # fmt: skip
    if tracemalloc.is_tracing():  # python -X tracemalloc (or PYTHONTRACEMALLOC=1): where
        snapshot = tracemalloc.take_snapshot()
        previous = _SNAPSHOTS[-1] if _SNAPSHOTS else None
        # The growth since the previous line by allocation site (the first line: the sizes).
        stats = (
            snapshot.compare_to(previous, "lineno") if previous else snapshot.statistics("lineno")
        )
        for stat in stats[:TRACEMALLOC_TOP]:
            log.info("memory: %s", stat)
        _SNAPSHOTS[:] = [snapshot]


STOP_REPORT_SECS = 15.0  # a stop still under way after this long says what it waits for


def report_slow_stop() -> None:
    """Log the stack of every task still running: what a stop that hangs waits for."""
    tasks = [task for task in asyncio.all_tasks() if not task.done()]
    log.warning("still stopping after %.0f s; %d tasks running:", STOP_REPORT_SECS, len(tasks))
    for task in tasks:
        stack = io.StringIO()
        task.print_stack(limit=12, file=stack)
        log.warning("%s", stack.getvalue().rstrip())


def log_gc_pauses() -> None:
    """On SIGUSR2: one log line with the collector's pauses since the previous such line (no
    collection of its own, so that measuring does not change what is measured)."""
    log.info("gc pauses: %s", GC_PAUSES.summary())
    GC_PAUSES.reset()


# The subcommands of `chat-server` (the first argument; none means serve). Later issues add
# theirs here (for example admin), each with its own --help.
COMMANDS = {
    "serve": "run the server (the default: `chat-server --port 8888` is `serve`)",
    "admin": "grant or revoke a site role: admin grant USERNAME admin|moderator, admin revoke",
    "service-key": "create NAME (prints the key once) | list | revoke NAME: keys of services",
}


def split_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(subcommand, its arguments); SystemExit(2) naming the commands for an unknown one."""
    args = list(argv)
    if args and not args[0].startswith("-"):
        if args[0] not in COMMANDS:
            print(f"chat-server: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        return args[0], args[1:]
    return "serve", args


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """--mongo-uri and --data-dir, which every command that opens the database takes."""
    parser.add_argument(
        "--mongo-uri",
        default=os.environ.get("CHAT_MONGO_URI"),
        help="MongoDB connection string (env CHAT_MONGO_URI); its path names the database "
        f"(default '{DEFAULT_DB_NAME}'). Without it the server starts an embedded database: "
        "a mongod found on PATH, else SecantusDB, with its data under --data-dir.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CHAT_DATA_DIR", "data")),
        help="where the embedded database, its log and the generated secret live "
        "(env CHAT_DATA_DIR, default ./data)",
    )


def parse_args(argv: Sequence[str] | None, prog: str = "chat-server") -> argparse.Namespace:
    listed = "\n".join(f"  {name:<8} {meaning}" for name, meaning in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Real-time chat server: REST, WebSocket and long-polling on one port.",
        epilog=f"commands:\n{listed}\n\nchat-server COMMAND --help describes each.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="HTTP port (default %(default)s)"
    )
    add_database_options(parser)
    parser.add_argument(
        "--secret",
        default=os.environ.get("CHAT_SECRET"),
        help=f"key that signs session tokens, at least {MIN_SECRET_BYTES} bytes (env CHAT_SECRET). "
        "Without it one is generated and kept in the data dir so tokens survive restarts.",
    )
    push = parser.add_argument_group("Web Push (see docs/protocol.md)")
    push.add_argument(
        "--vapid-private-key",
        default=os.environ.get("CHAT_VAPID_PRIVATE_KEY"),
        help="the VAPID private key pushes are signed with, PEM or base64url (env "
        "CHAT_VAPID_PRIVATE_KEY). Without it one is generated and kept in the data dir "
        "(vapid-private-key.pem) so browsers' subscriptions survive restarts.",
    )
    push.add_argument(
        "--push-private-endpoints",
        action="store_true",
        help="accept push subscriptions whose endpoint is on loopback or a private network "
        "(a push service of your own there); off, the server never POSTs inside it",
    )
    push.add_argument(
        "--vapid-subject",
        default=os.environ.get("CHAT_VAPID_SUBJECT", VAPID_SUBJECT),
        help="a mailto: or https: URL push services may contact about this server (env "
        "CHAT_VAPID_SUBJECT, default %(default)s)",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="an origin allowed to open WebSockets, e.g. https://chat.example.com "
        "(repeatable; default: the same host as the request)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("CHAT_REDIS_URL"),
        help="redis://HOST:PORT/DB shared by several server processes (env CHAT_REDIS_URL): "
        "events, presence, logouts and blocks reach every process at once. Without it, one "
        "process needs nothing but the database.",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=os.environ.get("CHAT_MAX_UPLOAD_MB", str(MAX_UPLOAD_MB)),
        metavar="MIB",
        help="the largest attachment accepted, in MiB (env CHAT_MAX_UPLOAD_MB, default "
        f"{MAX_UPLOAD_MB}; 0.001 to 1024)",
    )
    parser.add_argument(
        "--queue-grace",
        type=float,
        default=QUEUE_GRACE_SECS,
        metavar="SECS",
        help="how long a disconnected client's event queue is kept for it to resume "
        "(default %(default).0f s; 1 s to a day)",
    )
    parser.add_argument(
        "--presence-grace",
        type=float,
        default=PRESENCE_GRACE_SECS,
        metavar="SECS",
        help="how long a user whose last connection closed still shows online, so that a "
        "reload does not flap (default %(default).0f s; 0 to an hour)",
    )
    limits = parser.add_argument_group("per-user and sign-in limits (see docs/protocol.md)")
    limit_options: tuple[tuple[str, type, float, str, str], ...] = (
        ("--max-queues-per-user", int, MAX_QUEUES_PER_USER, "N", "event queues one user holds"),
        ("--max-sockets-per-user", int, MAX_SOCKETS_PER_USER, "N", "WebSockets one user holds"),
        ("--max-polls-per-user", int, MAX_POLLS_PER_USER, "N", "long-polls one user holds"),
        ("--max-socket-buffer", int, MAX_SOCKET_BUFFER_BYTES, "BYTES",
         "what a WebSocket's client may leave unread before it is closed with 4413"),
        ("--login-failures-per-account", int, LOGIN_FAILURES_PER_ACCOUNT, "N",
         "failed sign-ins per account, earned back over --login-window"),
        ("--login-failures-per-address", int, LOGIN_FAILURES_PER_ADDRESS, "N",
         "failed sign-ins per client address, earned back over --login-window"),
        ("--login-window", float, LOGIN_WINDOW_SECS, "SECS", "see the two options above"),
        ("--signups-per-address", int, SIGNUPS_PER_ADDRESS, "N",
         "sign-ups per client address, earned back over --signup-window"),
        ("--signup-window", float, SIGNUP_WINDOW_SECS, "SECS", "see the option above"),
        ("--key-claims-per-user", int, KEY_CLAIMS_PER_USER, "N",
         "prekey bundles claimed per user, earned back over --key-claim-window"),
        ("--key-claim-window", float, KEY_CLAIM_WINDOW_SECS, "SECS", "see the option above"),
        ("--uploads-per-user", int, UPLOADS_PER_USER, "N",
         "attachment uploads per user, earned back over --upload-window"),
        ("--upload-window", float, UPLOAD_WINDOW_SECS, "SECS", "see the option above"),
        ("--frames-per-sec", float, FRAMES_PER_SEC, "N",
         "command frames per second one WebSocket may send, sustained"),
        ("--frame-burst", float, FRAME_BURST, "N", "... and at once"),
        ("--typing-per-sec", float, TYPING_PER_SEC, "N",
         "typing notifications per second one user may send, sustained"),
        ("--typing-burst", float, TYPING_BURST, "N", "... and at once"),
        ("--service-sends-per-key", int, SERVICE_SENDS_PER_KEY, "N",
         "system notifications per service key, earned back over --service-send-window"),
        ("--service-send-window", float, SERVICE_SEND_WINDOW_SECS, "SECS",
         "see the option above"),
        ("--notification-ttl-days", float, NOTIFICATION_TTL_DAYS, "DAYS",
         "a read notification is deleted this long after it was read"),
    )  # fmt: skip
    for name, kind, default, unit, meaning in limit_options:
        limits.add_argument(
            name, type=kind, default=default, metavar=unit, help=f"{meaning} (default %(default)s)"
        )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR[,CIDR]",
        help="reverse proxies whose X-Forwarded-For, X-Real-IP and X-Forwarded-Proto are "
        "believed, e.g. 127.0.0.1/32 (repeatable; default none: the client's address is always "
        "the TCP peer's)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log one line per request at INFO (without tokens or queue ids); "
        "default: those lines are at DEBUG, shown by --debug",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("CHAT_LOG_FORMAT", "text"),
        help="text (default) or json: one JSON object per line, with the request id and the "
        "user id where known (env CHAT_LOG_FORMAT)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="debug logging and Tornado's debug mode"
    )
    tls = parser.add_argument_group("TLS: HTTPS and WSS on --port (see docs/deploy.md)")
    for name, env, meaning, other in (
        ("--certfile", "CHAT_CERTFILE", "the server's certificate chain", "--keyfile"),
        ("--keyfile", "CHAT_KEYFILE", "the certificate's private key", "--certfile"),
    ):
        tls.add_argument(
            name,
            type=Path,
            default=os.environ.get(env),  # argparse applies type to a default string
            metavar="PEM",
            help=f"{meaning} (env {env}); with {other}",
        )
    metrics = parser.add_argument_group("Prometheus metrics (GET /metrics, never on --port)")
    metrics.add_argument(
        "--metrics-port",
        type=int,
        default=os.environ.get("CHAT_METRICS_PORT"),
        metavar="PORT",
        help="serve /metrics on this port (env CHAT_METRICS_PORT; default: not served)",
    )
    metrics.add_argument(
        "--metrics-address",
        default=os.environ.get("CHAT_METRICS_ADDRESS", METRICS_ADDRESS),
        metavar="ADDRESS",
        help="the address --metrics-port listens on (env CHAT_METRICS_ADDRESS, default "
        "%(default)s; 0.0.0.0 for every interface)",
    )
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    for rate in ("frames_per_sec", "frame_burst", "typing_per_sec", "typing_burst"):
        if not getattr(args, rate) > 0:
            parser.error(f"--{rate.replace('_', '-')} must be above 0")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        parser.error("--metrics-port must be between 1 and 65535")
    if not 1 <= args.queue_grace <= 24 * 3600:
        parser.error("--queue-grace must be between 1 s and a day")
    if not 0 <= args.presence_grace <= 3600:
        parser.error("--presence-grace must be between 0 s and an hour")
    if not 0.001 <= args.max_upload_mb <= 1024:
        parser.error("--max-upload-mb must be between 0.001 and 1024")
    try:
        args.trusted_proxy = tuple(n for v in args.trusted_proxy for n in parse_networks(v))
    except ValueError as exc:
        parser.error(f"--trusted-proxy: {exc}")
    for name, *_ in limit_options:
        if getattr(args, name[2:].replace("-", "_")) <= 0:
            parser.error(f"{name} must be positive")
    return args


class TlsConfigError(Exception):
    """The certificate or its key cannot be used; the message says which and why."""


def tls_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """A server-side SSLContext (TLS 1.2 or later, Python's default ciphers) with this
    certificate chain and key; TlsConfigError when a file is missing, unreadable, not PEM,
    or the key is not the certificate's."""
    for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise TlsConfigError(f"{option} {path}: cannot read it: {exc.strerror}") from exc
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise TlsConfigError(
            f"--certfile {certfile} / --keyfile {keyfile}: not a PEM certificate and its "
            f"private key ({reason})"
        ) from exc
    return context


def load_or_create_secret(data_dir: Path) -> str:
    """The development secret kept in the data dir; created (mode 0600) on first start."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def database_name(uri: str) -> str:
    """The database named by the URI's path, or the default."""
    name = urlsplit(uri).path.lstrip("/")
    return name or DEFAULT_DB_NAME


redact = redact_url


async def serve(settings: Settings, ssl_context: ssl.SSLContext | None = None) -> int:
    """Connect, create indexes, listen (with TLS when given a context); return the exit code
    once stopped by a signal."""
    import tornado.httpserver

    from chat.service import BusUnavailable, ChatService
    from chat.store import Store
    from handlers.app import make_app
    from handlers.metrics import make_metrics_app
    from handlers.proxy import ForwardedHTTPServer
    from handlers.socket import close_sockets

    store = Store(
        settings.mongo_uri,
        settings.db_name,
        timeout_ms=settings.db_timeout_ms,
        notification_ttl_days=settings.notification_ttl_days,
    )
    try:
        await store.ping()
        await store.ensure_indexes()
    except DatabaseUnavailable:
        print(
            f"error: cannot reach the database at {redact(settings.mongo_uri)} "
            f"within {settings.db_timeout_ms / 1000:.0f} s",
            file=sys.stderr,
        )
        await store.close()
        return 1
    service = ChatService.build(settings, store)
    try:
        await service.start_bus()
    except BusUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        await service.close()
        await store.close()
        return 1
    app = make_app(service)
    server = ForwardedHTTPServer(
        app,
        trusted_proxies=settings.trusted_proxies,
        max_body_size=8 * 1024 * 1024,
        ssl_options=ssl_context,
    )
    metrics_server = None
    try:
        server.listen(settings.port, backlog=LISTEN_BACKLOG)
        if settings.metrics_port is not None:
            metrics_server = tornado.httpserver.HTTPServer(make_metrics_app(service.metrics))
            metrics_server.listen(settings.metrics_port, address=settings.metrics_address)
    except OSError as exc:
        print(f"error: cannot listen: {exc.strerror}", file=sys.stderr)
        server.stop()
        await service.close()
        await store.close()
        return 1
    tune_gc()
    log.info("listening on %s://localhost:%d", "https" if ssl_context else "http", settings.port)
    if metrics_server is not None:
        log.info("metrics on http://%s:%d/metrics", settings.metrics_address, settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_memory)
    loop.add_signal_handler(signal.SIGUSR2, log_gc_pauses)
    faulthandler.register(signal.SIGQUIT)  # every thread's stack on stderr, and go on
    await stop.wait()
    log.info("stopping")
    # A stop that hangs says why: the tasks' stacks from the loop, and, should the loop itself
    # be stuck (or the exit after it), every thread's stack from faulthandler's own thread.
    loop.call_later(STOP_REPORT_SECS, report_slow_stop)
    faulthandler.dump_traceback_later(STOP_REPORT_SECS * 2)
    server.stop()
    if metrics_server is not None:
        metrics_server.stop()
    # Connections first (WebSockets are detached from the HTTP server, so they are closed on
    # their own), then background work; the store last, once the database operations still
    # under way have ended, so that none fails with a traceback.
    sockets = close_sockets(app.settings["chat_sockets"])
    await server.close_all_connections()
    await service.close()
    await store.close(drain_secs=settings.db_timeout_ms / 1000)
    log.info("stopped (%d WebSockets closed with 1001)", sockets)
    return 0


def parse_admin_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chat-server admin",
        description="Give or take a site role (the only way to make the first administrator). "
        "With the embedded database, stop the server first: one process holds its data dir.",
    )
    database = argparse.ArgumentParser(add_help=False)
    add_database_options(database)
    actions = parser.add_subparsers(dest="action", required=True)
    grant = actions.add_parser(
        "grant", parents=[database], help="make USERNAME an admin or a moderator"
    )
    grant.add_argument("username")
    grant.add_argument("role", choices=("admin", "moderator"))
    revoke = actions.add_parser("revoke", parents=[database], help="make USERNAME a plain user")
    revoke.add_argument("username")
    return parser.parse_args(argv)


async def set_role(uri: str, username: str, role: str) -> int:
    """Give the user the role in the database at `uri` (logged in the audit log); the exit
    code."""
    from chat.moderation import set_role_by_name
    from chat.store import Store

    store = Store(uri, database_name(uri), timeout_ms=DB_TIMEOUT_MS)
    try:
        found = await set_role_by_name(store, username, role)
    except DatabaseUnavailable:
        print(f"error: cannot reach the database at {redact(uri)}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    if not found:
        print(f"error: no user named {username!r}", file=sys.stderr)
        return 1
    print(f"{username} is now {'a plain user' if role == 'user' else role}")
    return 0


def open_database(
    mongo_uri: str | None, data_dir: Path
) -> tuple[str, EmbeddedDatabase | None] | None:
    """The database's URI: --mongo-uri's, or that of the embedded database started on
    data_dir (the caller stops it); None, the error printed, when it cannot start."""
    if mongo_uri:
        return mongo_uri, None
    try:
        embedded = plan_embedded(data_dir)
        embedded.start()
    except DatabaseStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return embedded.uri, embedded


def admin(argv: Sequence[str]) -> int:
    """`chat-server admin grant USERNAME admin|moderator` and `... revoke USERNAME`."""
    args = parse_admin_args(argv)
    role = args.role if args.action == "grant" else "user"
    data_dir: Path = args.data_dir.resolve()
    if not args.mongo_uri:
        make_private_dir(data_dir)
    opened = open_database(args.mongo_uri, data_dir)
    if opened is None:
        return 1
    uri, embedded = opened
    try:
        return asyncio.run(set_role(uri, args.username, role))
    finally:
        if embedded is not None:
            embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `chat-server` console script."""
    given = list(sys.argv[1:] if argv is None else argv)
    command, rest = split_command(given)
    if command == "admin":
        return admin(rest)
    key_action: tuple[str, str | None] | None = None
    if command == "service-key":
        action, name, rest = service_keys.split_action(rest)
        key_action = (action, name)
    args = parse_args(rest, "chat-server" if rest == given else f"chat-server {command}")
    from handlers.logs import REDACT_SECRETS

    output = logging.StreamHandler()
    output.setFormatter(make_formatter(args.log_format))
    output.addFilter(REDACT_SECRETS)  # whichever logger a line comes from
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, handlers=[output])
    ssl_context = None
    if args.certfile is not None:
        try:
            ssl_context = tls_context(args.certfile, args.keyfile)
        except TlsConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    data_dir: Path = args.data_dir.resolve()
    make_private_dir(data_dir)  # the secret, the database's credentials and files
    secret = args.secret or load_or_create_secret(data_dir)
    if len(secret.encode()) < MIN_SECRET_BYTES:
        print(f"error: the secret must be at least {MIN_SECRET_BYTES} bytes long", file=sys.stderr)
        return 2
    vapid_key = args.vapid_private_key or load_or_create_vapid_key(data_dir)
    try:
        vapid_from(vapid_key)
    except ValueError as exc:  # not a P-256 key in any form py_vapid reads
        print(f"error: --vapid-private-key is not a VAPID private key: {exc}", file=sys.stderr)
        return 2
    opened = open_database(args.mongo_uri, data_dir)
    if opened is None:
        return 1
    uri, embedded = opened
    if embedded is not None:
        log.info(
            "database: embedded %s (pid %s) on port %d, data in %s",
            embedded.kind, embedded.pid, embedded.port, embedded.data_path,
        )  # fmt: skip
    else:
        log.info("database: %s", redact(uri))
    settings = Settings(
        secret=secret,
        mongo_uri=uri,
        db_name=database_name(uri),
        port=args.port,
        data_dir=data_dir,
        debug=args.debug,
        queue_grace_secs=args.queue_grace,
        presence_grace_secs=args.presence_grace,
        allowed_origins=tuple(args.allowed_origin),
        trusted_proxies=args.trusted_proxy,
        access_log=args.access_log,
        redis_url=args.redis_url,
        max_queues_per_user=args.max_queues_per_user,
        max_sockets_per_user=args.max_sockets_per_user,
        max_polls_per_user=args.max_polls_per_user,
        max_socket_buffer_bytes=args.max_socket_buffer,
        login_failures_per_account=args.login_failures_per_account,
        login_failures_per_address=args.login_failures_per_address,
        login_window_secs=args.login_window,
        signups_per_address=args.signups_per_address,
        signup_window_secs=args.signup_window,
        key_claims_per_user=args.key_claims_per_user,
        key_claim_window_secs=args.key_claim_window,
        certfile=args.certfile,
        keyfile=args.keyfile,
        log_format=args.log_format,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        uploads_per_user=args.uploads_per_user,
        upload_window_secs=args.upload_window,
        frames_per_sec=args.frames_per_sec,
        frame_burst=args.frame_burst,
        typing_per_sec=args.typing_per_sec,
        typing_burst=args.typing_burst,
        service_sends_per_key=args.service_sends_per_key,
        service_send_window_secs=args.service_send_window,
        notification_ttl_days=args.notification_ttl_days,
        vapid_private_key=vapid_key,
        vapid_subject=args.vapid_subject,
        push_private_endpoints=args.push_private_endpoints,
    )
    try:
        if key_action is not None:
            return asyncio.run(service_keys.run(settings, *key_action))
        return asyncio.run(serve(settings, ssl_context))
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded database stopped")


if __name__ == "__main__":
    sys.exit(main())
