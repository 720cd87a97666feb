#!/usr/bin/env bash
# Install into ./.venv and run the whole suite: ruff, mypy, then pytest against a real
# database server that the tests start themselves. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh embedded,dev

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The browser tests drive Debian's chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium with apt-get (browser tests)..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The several-process tests start Debian's redis-server on a free port of their own.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server with apt-get (several-process tests)..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# The reverse-proxy test runs Debian's nginx with deploy/nginx.conf on free ports of its own.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "installing nginx with apt-get (reverse-proxy test)..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi

# Emoji in the browser tests' screenshots need a colour emoji font (Debian's Noto).
# (grep without -q reads all of fc-list's output: no SIGPIPE to fail the pipeline)
if ! fc-list 2>/dev/null | grep -i "Noto Color Emoji" >/dev/null; then
  echo "installing fonts-noto-color-emoji with apt-get (emoji in screenshots)..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji >/dev/null
fi

# The accessibility tests inject axe-core (npm, pinned, tests only: never served to users).
if [ ! -f tests/.node/node_modules/axe-core/axe.min.js ]; then
  echo "installing axe-core with npm into tests/.node (accessibility tests)..." >&2
  if ! command -v npm >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  npm install --prefix tests/.node --no-audit --no-fund --silent axe-core@4.14.1 >/dev/null
fi

echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== pytest"
status=0
# The whole suite runs on CHAT_TEST_WORKERS processes (default 2, one per core; each starts its
# own database): files are dealt out whole, so a file's tests share a worker. On two cores,
# 2 workers took 668 s; 3 took 611 to 843 s from run to run and made load-sensitive tests fail.
# With arguments (a file, -k, -m fuzz) it runs in this one process, unless they say -n themselves.
workers=()
if [ "$#" = 0 ] && [ "${CHAT_TEST_WORKERS:-2}" != 0 ]; then
  workers=(-n "${CHAT_TEST_WORKERS:-2}" --dist loadfile)
fi
.venv/bin/pytest "${workers[@]}" --durations=30 "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
