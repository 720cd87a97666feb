"""Packaging for the chat server: `pip install -e .[dev]` for development."""

from setuptools import find_packages, setup

setup(
    name="tornado-chat",
    version="0.1.0",
    description="Real-time chat server on Tornado and MongoDB, over WebSocket or long-polling",
    python_requires=">=3.11",
    packages=find_packages(include=["chat", "chat.*", "handlers", "handlers.*"]),
    py_modules=["server"],
    include_package_data=True,
    install_requires=[
        "tornado>=6.6,<7",  # 6.6 accepts same-origin WebSockets before check_origin
        "pymongo>=4.13,<5",  # AsyncMongoClient, the successor of Motor
        "pyjwt>=2.8,<3",
        "bcrypt>=4.1,<6",
        # Several processes (--redis-url): redis-py's asyncio client, the maintained one
        # (aioredis was merged into it). Imported only when a Redis is configured.
        "redis>=5,<9",
        # GET /metrics (--metrics-port): the Prometheus text format and the process collector
        # (memory, CPU, fds). Tested with 0.26; below 1, whose API may change.
        "prometheus_client>=0.20,<1",
        # Attachments (chat/files.py): images must decode before they are stored, lose their
        # EXIF/GPS and comments, and get a thumbnail; Pillow is the maintained decoder for
        # PNG, JPEG, WebP and GIF (animation included) and ships wheels with those codecs.
        "Pillow>=10.4,<13",
        # Web Push (chat/push.py): pywebpush encrypts payloads (RFC 8291, via http-ece) and
        # signs VAPID tokens (RFC 8292, via py-vapid), both on cryptography; pinned, as its
        # 2.x releases changed its signature before. It also pulls in requests and aiohttp.
        "pywebpush==2.0.3",
    ],
    extras_require={
        # The embedded default database. GPL-2.0: we start it as a separate
        # process and talk to it over the socket only; nothing imports it.
        "embedded": ["SecantusDB==0.7.0b3"],
        "dev": [
            "pytest>=8",
            "pytest-asyncio>=0.24",
            # ./test.sh runs the suite on two workers: most tests wait on sockets, processes
            # and timers, so one process leaves the second core mostly idle.
            "pytest-xdist==3.8.0",
            "mypy>=1.10",
            "ruff>=0.6",
            # Drives Debian's chromium (no browser download): the browser tests.
            "playwright>=1.45",
            # The TLS tests make their own CA and server certificate.
            "cryptography>=42,<47",
            # tests/test_openapi*.py: GET /api/openapi.json is valid OpenAPI 3.1, and a
            # schema-driven fuzzer finds no 5xx and no answer the document does not describe.
            "openapi-spec-validator==0.9.0",
            "schemathesis==4.32.5",
        ],
        # The comparison benchmarks (bench/compare.py, bench/soak.py): the peer server a user
        # would otherwise pick, and a sampling profiler that attaches to the server process.
        "bench": [
            "python-socketio>=5.11,<6",
            "py-spy>=0.3.14",
        ],
    },
    entry_points={"console_scripts": ["chat-server=server:main"]},
)
