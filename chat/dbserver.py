"""The embedded default database: a mongod on PATH, else a SecantusDB process.

Both run as child processes spoken to over the MongoDB wire protocol; nothing here imports
them. SecantusDB is GPL-2.0, which is why it stays a separate process.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

START_TIMEOUT_SECS = 30.0  # a cold WiredTiger start with recovery can take a few seconds
STOP_TIMEOUT_SECS = 10.0
SECANTUS_EXECUTABLE = "secantusd-py"


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
    ) -> None:
        self.kind = kind
        self.remove_data_on_stop = remove_data_on_stop
        self.argv = argv
        self.port = port
        self.data_path = data_path
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The connection string of the running server."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> None:
        """Start the process and return once it accepts connections; raise if it cannot."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                self.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to us; we stop it in order
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
        """Stop the process (SIGTERM, then SIGKILL); idempotent; leaves no orphan."""
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
    """Choose the embedded database: mongod on PATH, else SecantusDB; raise if neither."""
    port = free_port()
    log_path = data_dir / "logs" / "database.log"
    mongod = shutil.which("mongod")
    if mongod:
        # mongod's in-memory engine is Enterprise-only; a throwaway directory does the job.
        path = tempfile.mkdtemp(prefix="chat-mongod-") if in_memory else str(data_dir / "mongod")
        Path(path).mkdir(parents=True, exist_ok=True)
        argv = [mongod, "--bind_ip", "127.0.0.1", "--port", str(port), "--dbpath", path]
        return EmbeddedDatabase("mongod", argv, port, path, log_path, remove_data_on_stop=in_memory)
    secantus = find_secantus()
    if secantus:
        path = ":memory:" if in_memory else str(data_dir / "secantus")
        argv = [
            secantus, "--host", "127.0.0.1", "--port", str(port),
            "--storage-path", path, "--standalone", "--log-level", "WARNING",
        ]  # fmt: skip
        return EmbeddedDatabase("SecantusDB", argv, port, path, log_path)
    raise DatabaseStartError(
        "No database: pass --mongo-uri, put mongod on PATH, "
        "or install the embedded default with: pip install 'SecantusDB==0.7.0b3'"
    )
