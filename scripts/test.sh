#!/usr/bin/env bash
# Set up and run the whole test suite: venv, dependencies, PostgreSQL + Redis, Chromium, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k chain).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# The SDK (clients/python, the `batchq` command and worker runtime) first, then the server.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e clients/python -e '.[test]'
bash scripts/services.sh
bash scripts/browser.sh  # Debian's Chromium for the dashboard's browser tests
.venv/bin/ruff check app clients/python tests bench examples
.venv/bin/mypy --strict clients/python/src/batchq
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
