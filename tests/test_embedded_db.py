"""The embedded database as server.py runs it: bound to the server's life, private to its user,
and requiring the credentials the server generated."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from chat.dbserver import CREDENTIALS_FILE, find_secantus, free_port
from tests.test_server_process import http, pid_alive, run_server, stop, wait_healthy


def register(port: int, name: str) -> None:
    status, body = http(
        "POST", f"http://127.0.0.1:{port}/api/auth/register",
        {"username": name, "email": f"{name}@example.com", "password": "correct horse"},
    )  # fmt: skip
    assert status == 201, body


def login_status(port: int, name: str) -> int:
    return http(
        "POST", f"http://127.0.0.1:{port}/api/auth/login",
        {"login": name, "password": "correct horse"},
    )[0]  # fmt: skip


def serve_and_sign_up(args: tuple[str, ...], port: int, name: str) -> None:
    """Start server.py, sign `name` up, stop it cleanly."""
    process = run_server(*args)
    try:
        wait_healthy(port, process)
        register(port, name)
    finally:
        out = stop(process)
    assert process.returncode == 0, out


def serve_and_log_in(args: tuple[str, ...], port: int, name: str) -> str:
    """Start server.py, check that `name` can sign in, stop it cleanly."""
    process = run_server(*args)
    try:
        wait_healthy(port, process)
        assert login_status(port, name) == 200
    finally:
        out = stop(process)
    assert process.returncode == 0, out
    return out


def bare_secantus(storage: Path, port: int) -> subprocess.Popen[bytes]:
    """A SecantusDB on these files that no server of ours started."""
    secantus = find_secantus()
    assert secantus is not None
    return subprocess.Popen(
        [secantus, "--host", "127.0.0.1", "--port", str(port),
         "--storage-path", str(storage), "--standalone", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def database_of(out: str) -> tuple[int, int]:
    """(pid, port) of the embedded database, from the server's start-up line."""
    match = re.search(r"database: embedded \S+ \(pid (\d+)\) on port (\d+)", out)
    assert match, out
    return int(match.group(1)), int(match.group(2))


def read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 60) -> str:
    """The server's output up to the first line matching `pattern`."""
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError("".join(seen))


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_sigkill_of_the_server_takes_its_database_along_and_a_restart_works(
    tmp_path: Path,
) -> None:
    port = free_port()
    args = ("--port", str(port), "--data-dir", str(tmp_path))
    first = run_server(*args)
    try:
        out = read_until(first, r"listening on")
        db_pid, _ = database_of(out)
        wait_healthy(port, first)
        register(port, "survivor")
    finally:
        first.kill()  # no chance to stop its database
        first.communicate()
    # The database must not outlive its server holding the data dir's lock.
    assert wait_gone(db_pid), "the database outlived its SIGKILLed server"
    serve_and_log_in(args, port, "survivor")


def test_a_database_left_running_on_the_data_dir_is_stopped_at_start(tmp_path: Path) -> None:
    port = free_port()
    args = ("--port", str(port), "--data-dir", str(tmp_path))
    serve_and_sign_up(args, port, "keeper")
    # A database on the same files that no server of ours stops (as one started by a server
    # that was killed before it could arm the parent-death signal would be).
    leftover = bare_secantus(tmp_path / "secantus", free_port())
    try:
        time.sleep(1.0)
        assert leftover.poll() is None, "the stand-in leftover did not start"
        out = serve_and_log_in(args, port, "keeper")
        assert "left running on" in out, out
        assert leftover.wait(timeout=5) is not None
    finally:
        if leftover.poll() is None:
            leftover.kill()
        leftover.wait()


def test_the_database_requires_the_generated_credentials_and_its_files_are_private(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = run_server("--port", str(port), "--data-dir", str(tmp_path))
    try:
        out = read_until(process, r"listening on")
        _, db_port = database_of(out)
        wait_healthy(port, process)
        register(port, "private")
        anonymous: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{db_port}/?directConnection=true",
            serverSelectionTimeoutMS=5000,
        )
        try:
            with pytest.raises(OperationFailure) as refused:
                anonymous["chat"]["users"].find_one()
            assert refused.value.code == 13  # Unauthorized
            with pytest.raises(OperationFailure):
                anonymous["chat"]["users"].update_many({}, {"$set": {"password_hash": "x"}})
        finally:
            anonymous.close()
        credentials_file = tmp_path / CREDENTIALS_FILE
        assert oct(credentials_file.stat().st_mode & 0o777) == "0o600"
        credentials = json.loads(credentials_file.read_text())
        owner: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{db_port}/?directConnection=true&authSource=admin",
            username=credentials["username"], password=credentials["password"],
            serverSelectionTimeoutMS=5000,
        )  # fmt: skip
        try:
            assert owner["chat"]["users"].find_one({"username": "private"}) is not None
        finally:
            owner.close()
        # The data dir, the database's files and its log: this user only.
        assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"
        leaks = []
        for path in tmp_path.rglob("*"):
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                leaks.append(f"{path.relative_to(tmp_path)} {oct(mode)}")
        assert leaks == []
        assert any(p.name == "database.log" for p in tmp_path.rglob("*"))
    finally:
        out = stop(process)
    assert process.returncode == 0, out


def test_a_data_dir_from_before_authentication_keeps_its_data(tmp_path: Path) -> None:
    """A data dir whose database ran without credentials (an older version of this server):
    the first start creates the user, then requires it, and the data is still there."""
    db_port = free_port()
    old = bare_secantus(tmp_path / "secantus", db_port)
    try:
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{db_port}/?directConnection=true",
            serverSelectionTimeoutMS=10_000,
        )
        client["chat"]["probe"].insert_one({"kept": True})
        client.close()
    finally:
        old.send_signal(signal.SIGTERM)
        old.wait(timeout=10)
    port = free_port()
    process = run_server("--port", str(port), "--data-dir", str(tmp_path))
    try:
        _, new_port = database_of(read_until(process, r"listening on"))
        wait_healthy(port, process)
        credentials = json.loads((tmp_path / CREDENTIALS_FILE).read_text())
        owner: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{new_port}/?directConnection=true&authSource=admin",
            username=credentials["username"], password=credentials["password"],
            serverSelectionTimeoutMS=5000,
        )  # fmt: skip
        try:
            assert owner["chat"]["probe"].find_one({"kept": True}) is not None
        finally:
            owner.close()
    finally:
        out = stop(process)
    assert process.returncode == 0, out


def test_a_second_server_on_the_same_data_dir_is_refused_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = run_server("--port", str(port), "--data-dir", str(tmp_path))
    try:
        wait_healthy(port, first)
        register(port, "first")
        second = run_server("--port", str(free_port()), "--data-dir", str(tmp_path))
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert f"is in use by another server (pid {first.pid})" in out, out
        assert login_status(port, "first") == 200  # its database was left alone
    finally:
        out = stop(first)
    assert first.returncode == 0, out


def test_a_first_start_that_died_before_keeping_the_password_is_recovered(
    tmp_path: Path,
) -> None:
    """The database user exists but its password was never written down (the server died in
    between): the next start sets a new password and keeps the data."""
    port = free_port()
    args = ("--port", str(port), "--data-dir", str(tmp_path))
    serve_and_sign_up(args, port, "again")
    (tmp_path / CREDENTIALS_FILE).unlink()
    serve_and_log_in(args, port, "again")
    assert (tmp_path / CREDENTIALS_FILE).exists()
