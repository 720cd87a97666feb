#!/usr/bin/env bash
# Install into ./.venv and start the server on http://localhost:8888 with the embedded
# default database (data kept under ./data/). Extra arguments go to the server (--help).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh embedded
exec .venv/bin/chat-server "$@"
