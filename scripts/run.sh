#!/usr/bin/env bash
# Set up and run batchq on the embedded default (SQLite file ./batchq.db + SQL queue).
# No server needed. BATCHQ_* variables select other backends (see README).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The SDK (clients/python: the `batchq` command) first, then the server.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e clients/python -e .
exec .venv/bin/batchq serve "$@"
