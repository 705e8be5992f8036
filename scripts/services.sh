#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests talk to are up; start them if installed.
# Exits non-zero (it never skips) when one cannot be reached.
set -uo pipefail

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null || python3 - <<'PY' 2>/dev/null
import socket; socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
PY
}
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

wait_for() {  # name, check function
  for _ in $(seq 1 60); do "$2" && return 0; sleep 0.5; done
  echo "services: $1 did not come up" >&2; return 1
}

if ! pg_up; then
  echo "services: PostgreSQL is down; starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  wait_for PostgreSQL pg_up || exit 1
fi

if ! redis_up; then
  echo "services: Redis is down; starting it"
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no || true
  fi
  wait_for Redis redis_up || exit 1
fi
echo "services: PostgreSQL and Redis are up"
