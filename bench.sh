#!/usr/bin/env bash
# Install into ./.venv and run the benchmarks, each printing a table:
#   ./bench.sh                 realtime, messaging and search
#   ./bench.sh realtime        one of them
#   ./bench.sh compare         this server beside bare Tornado and python-socketio
#   ./bench.sh soak            the soak test (exits 1 on any loss, duplicate or reordering)
#   ./bench.sh uploads         attachments: MiB/s beside raw GridFS, chat latency while uploading
#   ./bench.sh metrics         what the Prometheus counters cost per message
#   ./bench.sh search -- --users 20000   options for the named benchmarks
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh embedded,dev,bench
exec .venv/bin/python -m bench "$@"
