"""The embedded default database: a mongod on PATH, else a SecantusDB process.

Both run as child processes spoken to over the MongoDB wire protocol; nothing here imports
them. SecantusDB is GPL-2.0, which is why it stays a separate process.

What the process promises, whichever it is:
- durable: an acknowledged journaled write is on disk (SecantusDB only with --sync-on-commit);
- private: it requires credentials (generated on first start, kept in the data dir, 0600), and
  its files are readable by this user only;
- bound to us: it dies with the server (a parent-death signal), and a start on a data dir whose
  database outlived an earlier server (killed before it could stop it) stops that one first.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote_plus

log = logging.getLogger(__name__)

START_TIMEOUT_SECS = 30.0  # a cold WiredTiger start with recovery can take a few seconds
STOP_TIMEOUT_SECS = 10.0
SECANTUS_EXECUTABLE = "secantusd-py"
CREDENTIALS_FILE = "database-credentials.json"  # in the data dir, mode 0600
LOCK_FILE = "server.lock"  # in the data dir: held by the one server that uses it
USER_EXISTS = 51003  # createUser's error code for a user that already exists
DATABASE_USER = "chat"
PRIVATE_UMASK = 0o077  # the database's files and logs: this user only
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child gets when its parent dies (Linux)


class DatabaseStartError(RuntimeError):
    """The embedded database could not be started or did not answer in time."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_secantus() -> str | None:
    """secantusd-py from this interpreter's environment first, then PATH."""
    beside = Path(sys.executable).parent / SECANTUS_EXECUTABLE
    if beside.exists():
        return str(beside)
    return shutil.which(SECANTUS_EXECUTABLE)


def _die_with_parent(parent_pid: int) -> None:
    """In the child, before exec: be sent SIGTERM when the server dies, even by SIGKILL, so
    the database never outlives it holding its data dir's lock."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def leftover_processes(data_path: str) -> list[int]:
    """Pids of this user's database processes serving `data_path`: what an earlier server left
    running (Linux: read from /proc; elsewhere none are found)."""
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        args = [a.decode(errors="replace") for a in argv]
        for flag in ("--storage-path", "--dbpath"):
            if flag in args[:-1] and args[args.index(flag) + 1] == data_path:
                found.append(int(entry.name))
    return found


def _stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout`; returns once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"  # a zombie (not our child to reap) no longer holds files


def _lock_data_dir(path: Path) -> int:
    """An exclusive lock on the data dir (a file descriptor to keep open), or
    DatabaseStartError when another live server holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise DatabaseStartError(
            f"the data dir {path.parent} is in use by another server (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by this user only (0600), replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def make_private_dir(path: Path) -> None:
    """Create the directory (and parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


class EmbeddedDatabase:
    """A database server process this program started and must stop."""

    def __init__(
        self,
        kind: str,
        argv: list[str],
        port: int,
        data_path: str,
        log_path: Path,
        *,
        remove_data_on_stop: bool = False,
        credentials_path: Path | None = None,
        lock_path: Path | None = None,
    ) -> None:
        self.kind = kind
        self.remove_data_on_stop = remove_data_on_stop
        self.argv = argv
        self.port = port
        self.data_path = data_path
        self.log_path = log_path
        # Where the generated credentials live; None: no authentication (a throwaway
        # in-memory database, which cannot keep a user across the restart that enables it).
        self.credentials_path = credentials_path
        self._credentials: tuple[str, str] | None = None
        # Held from start to stop, so that a database found serving the data dir while we hold
        # it can only be a leftover of a server that died (the kernel frees a dead one's lock).
        self.lock_path = lock_path
        self._lock: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The connection string of the running server (with its credentials)."""
        if self._credentials is None:
            return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        user, password = (quote_plus(part) for part in self._credentials)
        return (
            f"mongodb://{user}:{password}@127.0.0.1:{self.port}/"
            "?directConnection=true&authSource=admin"
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start the process and return once it accepts connections; raise if it cannot, or
        if another server holds the data dir. A database left running on the same data dir
        by an earlier server is stopped first; on the first start with authentication, its
        user is created, then it is restarted with authentication required. Call it from the
        main thread: the process is sent SIGTERM when the thread that started it ends."""
        make_private_dir(self.log_path.parent)
        if self.lock_path is not None and self._lock is None:
            self._lock = _lock_data_dir(self.lock_path)
        if self.data_path != ":memory:" and not self.remove_data_on_stop:
            make_private_dir(Path(self.data_path))
            for pid in leftover_processes(self.data_path):
                log.warning(
                    "stopping %s (pid %d), left running on %s by an earlier server",
                    self.kind, pid, self.data_path,
                )  # fmt: skip
                _stop_pid(pid, STOP_TIMEOUT_SECS)
        if self.credentials_path is None:
            self._spawn(self.argv)
            return
        if not self.credentials_path.exists():
            self._spawn(self.argv)  # no authentication yet: create its user
            try:
                password = secrets.token_urlsafe(24)
                self._create_user(DATABASE_USER, password)
            finally:
                self._stop_process()
            document = {"username": DATABASE_USER, "password": password}
            write_private(self.credentials_path, json.dumps(document) + "\n")
        document = json.loads(self.credentials_path.read_text())
        self._credentials = (document["username"], document["password"])
        self._spawn([*self.argv, "--auth"])

    def _create_user(self, user: str, password: str) -> None:
        # pymongo's synchronous client, once at first start: the server is not serving yet.
        from pymongo import MongoClient
        from pymongo.errors import OperationFailure, PyMongoError

        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=int(START_TIMEOUT_SECS * 1000)
        )
        try:
            try:
                client.admin.command(
                    "createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}]
                )
            except OperationFailure as exc:
                if exc.code != USER_EXISTS:
                    raise
                # An earlier first start died before keeping the password: set a new one.
                client.admin.command("updateUser", user, pwd=password)
        except PyMongoError as exc:
            raise DatabaseStartError(f"could not create the database user: {exc}") from exc
        finally:
            client.close()

    def _spawn(self, argv: list[str]) -> None:
        parent = os.getpid()
        with open(self.log_path, "ab") as log_file:
            os.chmod(self.log_path, 0o600)
            self._process = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop it in order
                umask=PRIVATE_UMASK,
                preexec_fn=lambda: _die_with_parent(parent),
            )
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DatabaseStartError(
                    f"{self.kind} exited with code {self._process.returncode} at start-up; "
                    f"see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise DatabaseStartError(
            f"{self.kind} did not accept connections within {START_TIMEOUT_SECS:.0f} s; "
            f"see {self.log_path}"
        )

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and free the data dir; idempotent; leaves
        no orphan."""
        self._stop_process()
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    def restart(self) -> None:
        """Stop the process (if running) and start it again: the same program, port, files
        and credentials; the data dir stays locked throughout."""
        self._stop_process()
        self.start()

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.kind, STOP_TIMEOUT_SECS)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.remove_data_on_stop:
            shutil.rmtree(self.data_path, ignore_errors=True)


def plan_embedded(data_dir: Path, *, in_memory: bool = False) -> EmbeddedDatabase:
    """Choose the embedded database: mongod on PATH, else SecantusDB; raise if neither. On
    disk it is durable and requires the credentials kept in the data dir; in memory (tests,
    benchmarks) it is neither."""
    port = free_port()
    log_path = data_dir / "logs" / "database.log"
    credentials = None if in_memory else data_dir / CREDENTIALS_FILE
    lock = None if in_memory else data_dir / LOCK_FILE
    mongod = shutil.which("mongod")
    if mongod:
        # mongod's in-memory engine is Enterprise-only; a throwaway directory does the job.
        # It journals by default, so j=True writes are on disk when acknowledged.
        path = tempfile.mkdtemp(prefix="chat-mongod-") if in_memory else str(data_dir / "mongod")
        Path(path).mkdir(parents=True, exist_ok=True)
        argv = [mongod, "--bind_ip", "127.0.0.1", "--port", str(port), "--dbpath", path]
        return EmbeddedDatabase(
            "mongod", argv, port, path, log_path,
            remove_data_on_stop=in_memory, credentials_path=credentials, lock_path=lock,
        )  # fmt: skip
    secantus = find_secantus()
    if secantus:
        path = ":memory:" if in_memory else str(data_dir / "secantus")
        argv = [
            secantus, "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", path, "--standalone", "--log-level", "WARNING",
        ]  # fmt: skip
        if not in_memory:
            # Without it SecantusDB acknowledges a journaled write before it is on disk, and a
            # crash loses acknowledged messages (and so hands their seqs out again).
            argv.append("--sync-on-commit")
        return EmbeddedDatabase(
            "SecantusDB", argv, port, path, log_path, credentials_path=credentials, lock_path=lock
        )
    raise DatabaseStartError(
        "No database: pass --mongo-uri, put mongod on PATH, "
        "or install the embedded default with: pip install 'SecantusDB==0.7.0b3'"
    )
