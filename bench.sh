#!/usr/bin/env bash
# Install into ./.venv and run the benchmarks, each printing a table:
#   ./bench.sh                 all of them (realtime, messaging, search)
#   ./bench.sh realtime        one of them
#   ./bench.sh search -- --users 20000   options for the named benchmarks
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh embedded,dev
exec .venv/bin/python -m bench "$@"
