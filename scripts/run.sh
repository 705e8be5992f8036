#!/usr/bin/env bash
# Set up and run batchq on the embedded default (SQLite file ./batchq.db + SQL queue).
# No server needed. BATCHQ_* variables select other backends (see README); arguments go to
# `batchq serve` (e.g. --port 9000, or BATCHQ_PORT=9000).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The SDK (clients/python: the `batchq` command) first, then the server, both editable: code
# changes need no reinstall, so pip runs only when a pyproject file changed since the last time.
stamp=.venv/.batchq-run-stamp
want=$(cat pyproject.toml clients/python/pyproject.toml | .venv/bin/python -c \
  'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ ! -x .venv/bin/batchq ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e clients/python -e .
  echo "$want" >"$stamp"
fi
exec .venv/bin/batchq serve "$@"
