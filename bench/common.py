"""Shared pieces of the benchmarks: a database, a chat server process, and a table printer.

The server under test runs in its own process so that the load generator (this process)
and the server do not share an event loop or a GIL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from chat.dbserver import EmbeddedDatabase, free_port, plan_embedded

ROOT = Path(__file__).resolve().parent.parent
BENCH_SECRET = "bench-secret-" + "b" * 40


@contextmanager
def database_and_pid(
    uri: str | None = None, *, in_memory: bool = True
) -> Iterator[tuple[str, int | None]]:
    """(MongoDB URI, its process id when embedded): the given URI, else an embedded database
    started for the run (whose pid lets a benchmark report the database's CPU use); on disk
    when not in_memory (gigabytes of files would fill an in-memory cache)."""
    if uri:
        yield uri, None
        return
    with tempfile.TemporaryDirectory(prefix="chat-bench-db-") as tmp:
        db: EmbeddedDatabase = plan_embedded(Path(tmp), in_memory=in_memory)
        db.start()
        try:
            yield db.uri, db.pid
        finally:
            db.stop()


@contextmanager
def database(uri: str | None = None, *, in_memory: bool = True) -> Iterator[str]:
    """A MongoDB URI: the given one, else an embedded database started for the run."""
    with database_and_pid(uri, in_memory=in_memory) as (found, _):
        yield found


class ChildServer:
    """An HTTP server in a child process on a free loopback port, ready once /healthz says ok."""

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        """log: where the server's output goes (discarded when None)."""
        self.port = port
        self.log = log
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        with open(log or os.devnull, "wb") as out:  # the child keeps its own copy of the fd
            self.process = subprocess.Popen(
                list(command), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        self._wait_healthy()

    def logged_errors(self) -> list[str]:
        """The ERROR and CRITICAL lines of the server's log (with the traceback's last line)."""
        if self.log is None or not self.log.exists():
            return []
        found: list[str] = []
        lines = self.log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if " ERROR " in line or " CRITICAL " in line:
                # A logged exception's lines follow until the next record (which starts with
                # its date); the last of them names the exception.
                j = i + 1
                while j < len(lines) and not lines[j][:2].isdigit():
                    j += 1
                cause = lines[j - 1].strip() if j > i + 1 else ""
                found.append(f"{line} | {cause}" if cause else line)
        return found

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as r:
                    if json.loads(r.read())["status"] == "ok":
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become healthy")

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ServerProcess(ChildServer):
    """server.py in a child process on a free port."""

    def __init__(
        self,
        mongo_uri: str,
        db_name: str,
        extra_args: Sequence[str] = (),
        log: Path | None = None,
    ) -> None:
        port = free_port()
        uri = mongo_uri.split("?")[0].rstrip("/") + f"/{db_name}"
        if "?" in mongo_uri:
            uri += "?" + mongo_uri.split("?", 1)[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        command = [sys.executable, str(ROOT / "server.py"), "--port", str(port),
                   "--mongo-uri", uri, "--secret", BENCH_SECRET, *extra_args]  # fmt: skip
        super().__init__(command, port, env, log)


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A two-column table: metric, value."""
    width = max(len(name) for name, _ in rows)
    vwidth = max(len(value) for _, value in rows)
    print(f"\n{title}")
    print(f"| {'metric'.ljust(width)} | {'value'.rjust(vwidth)} |")
    print(f"|{'-' * (width + 2)}|{'-' * (vwidth + 2)}|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value.rjust(vwidth)} |")
