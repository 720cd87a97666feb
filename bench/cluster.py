"""Several server processes sharing one Redis behind the nginx sample
(deploy/nginx-processes.conf, Debian's nginx), for the benchmarks: `soak --processes 2`, and
compare's `chat-ws-2p` and `socketio-redis`.

nginx and redis-server are started with the test suite's own helpers (tests/test_nginx.py,
tests/test_nginx_processes.py, tests/test_processes.py), so the benchmark runs the very sample
the tests check. Only the listening port changes for the load generator: plain HTTP on loopback
in place of TLS (the generator speaks plain WebSocket and HTTP), round robin as shipped.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.common import ChildServer, rss_bytes
from chat.dbserver import free_port

# What the socket.io peer needs of the sample beyond its own paths: Engine.IO's one path,
# with the upgrade passed on (its clients here speak WebSocket only, so no stickiness).
SOCKETIO_LOCATION = """
    location /socket.io/ {
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $chat_connection;
        proxy_set_header Host $http_host;
        proxy_read_timeout 75s;
        proxy_pass http://chat_processes;
    }
"""


class Cluster:
    """The processes, and nginx in front on `port`: what a benchmark reads of one server."""

    def __init__(self, processes: Sequence[ChildServer], port: int) -> None:
        self.processes = list(processes)
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The first process (what a single-pid reader such as a profiler attaches to)."""
        return self.processes[0].pid

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def rss_bytes(self) -> int:
        """The resident memory of every process, summed."""
        return sum(rss_bytes(pid) for pid in self.pids)

    def logged_errors(self) -> list[str]:
        return [line for process in self.processes for line in process.logged_errors()]


@contextlib.contextmanager
def running_cluster(
    start: Callable[[str], ChildServer], count: int, *, connections: int, location: str = ""
) -> Iterator[Cluster]:
    """Redis, then count processes made by start(redis_url), then nginx (with the sample and
    `location` added) in front of them, until the block ends; stopped in the reverse order."""
    from tests.certs import make_certificates  # the test suite's helpers: only when run
    from tests.test_nginx import nginx
    from tests.test_nginx_processes import site_config
    from tests.test_processes import running_redis

    with tempfile.TemporaryDirectory(prefix="chat-bench-cluster-") as tmp:
        workdir = Path(tmp)
        (workdir / "redis").mkdir()
        with running_redis(workdir / "redis") as redis:
            processes: list[ChildServer] = []
            try:
                for _ in range(count):
                    processes.append(start(redis.url))
                hosts = [f"127.0.0.1:{process.port}" for process in processes]
                port = free_port()
                certs = make_certificates(workdir / "tls")
                site = site_config(hosts, port, free_port(), workdir / "nginx", certs)
                site = site.replace(f"listen 127.0.0.1:{port} ssl;", f"listen 127.0.0.1:{port};")
                site = site[: site.rindex("}")] + location + "}\n"
                with nginx(workdir / "nginx", site, port, connections):
                    yield Cluster(processes, port)
            finally:
                for process in reversed(processes):
                    process.stop()


def bench_log(name: str) -> Path:
    """Where a benchmark's server process writes its log."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{name}-{os.getpid()}.log"
