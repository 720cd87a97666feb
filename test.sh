#!/usr/bin/env bash
# Install into ./.venv and run the whole suite: ruff, mypy, then pytest against a real
# database server that the tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh embedded,dev

# The browser tests drive Debian's chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium with apt-get (browser tests)..." >&2
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== pytest"
status=0
.venv/bin/pytest "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
