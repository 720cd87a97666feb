#!/usr/bin/env bash
# Create ./.venv (installing python3-venv with apt when Debian lacks it) and install the
# project into it with the extras named in $1 (comma-separated, e.g. "embedded,dev").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-embedded}"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is required (found: $("$python" --version 2>&1))" >&2
  exit 1
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    echo "installing python3-venv with apt-get..." >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv >/dev/null
    "$python" -m venv .venv
  fi
fi

stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
  touch "$stamp"
fi
