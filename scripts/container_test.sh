#!/usr/bin/env bash
# The container test: build the image (Dockerfile) and run docker-compose.yml's production shape
# (two API replicas, the example worker, PostgreSQL, Redis), then check from the host that both
# replicas are ready and that a chain and a parallel batch run through the compose worker with
# the right results, and that the worker goes on through api-2 once api is stopped. Always
# tears everything down, on failure too.
#
# CI machines reach no image registry: ../shared/docker/engine.sh (BATCHQ_SHARED_DIR overrides
# ../shared) starts a Docker engine and builds local stand-ins of the base images under the tags
# our files name. Needs root. When no engine can be started, this fails loudly: never a silent pass.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${BATCHQ_SHARED_DIR:-$ROOT/../shared}
T0=$(date +%s)
PASSED=0 FAILED=0 ENGINE=0
TMP=$(mktemp -d /tmp/batchq-container.XXXXXX)

say() { printf '[container %4ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
loud() {
  {
    echo "########################################################################"
    echo "# CONTAINER TEST FAILED: $*"
    echo "########################################################################"
  } >&2
}
die() { loud "$*"; exit 1; }
check() {  # what, command...: one counted check
  local what=$1; shift
  if "$@"; then PASSED=$((PASSED + 1)); echo "  ok   $what"; else FAILED=$((FAILED + 1)); echo "  FAIL $what"; return 1; fi
}

PROJECT=batchqci
COMPOSE=()
compose() { "${COMPOSE[@]}" -p "$PROJECT" --env-file "$TMP/ci.env" -f docker-compose.yml -f .ci/docker-compose.ci.yml "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$ENGINE" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "--- the stack's last log lines" >&2
      compose ps >&2
      compose logs --no-color --tail 40 >&2
    fi
    say "tearing down (down -v, engine_stop)"
    compose down -v --remove-orphans -t 20 >/dev/null 2>&1 || echo "container: compose down failed" >&2
  fi
  declare -F engine_stop >/dev/null && engine_stop
  rm -rf "$TMP"
  [ "$rc" = 0 ] && [ "$FAILED" = 0 ] || { rc=1; FAILED=$((FAILED > 0 ? FAILED : 1)); }
  say "done in $(($(date +%s) - T0)) s"
  echo "container: $PASSED passed, $FAILED failed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The stack's settings: fresh secrets and free ports on every run, in a file of our own (a .env
# of the working tree is neither read nor touched).
IMAGE=batchq:ci
read -r PORT1 PORT2 < <(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
TOKEN=$(secret) WORKER_KEY=$(secret)
cat >"$TMP/ci.env" <<EOF
POSTGRES_PASSWORD=$(secret)
REDIS_PASSWORD=$(secret)
BATCHQ_API_TOKEN=$TOKEN
BATCHQ_WORKER_KEY=$WORKER_KEY
BATCHQ_IMAGE=$IMAGE
BATCHQ_PUBLISH_PORT=$PORT1
BATCHQ_PUBLISH_PORT_2=$PORT2
EOF

# ---- the engine and the stand-ins ------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "it needs root to run a Docker engine here"
[ -f "$SHARED/docker/engine.sh" ] || die "no $SHARED/docker/engine.sh (set BATCHQ_SHARED_DIR to the shared folder)"
say "starting a Docker engine ($SHARED/docker/engine.sh)"
# shellcheck source=/dev/null
if ! source "$SHARED/docker/engine.sh"; then
  for log in apt dockerd debootstrap; do
    [ -s "$DOCKER_WORK/$log.log" ] && { echo "--- $DOCKER_WORK/$log.log" >&2; tail -n 15 "$DOCKER_WORK/$log.log" >&2; }
  done
  die "no Docker engine could be started on this machine, so the image and the compose stack were NOT tested"
fi
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose); elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else
  die "neither docker-compose nor the docker compose plugin is installed"
fi
ENGINE=1
say "engine up: $(docker version --format 'server {{.Server.Version}}'), $("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" version | head -n1)"

# The tags our files name: the Dockerfile's pinned base, the compose file's services.
TAGS=("$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)")
mapfile -t -O 1 TAGS < <(sed -n 's/^ *image: *\([a-z][^ $]*\) *$/\1/p' docker-compose.yml)
[ -n "${TAGS[0]}" ] && [ "${#TAGS[@]}" = 3 ] || die "could not read the base images from Dockerfile / docker-compose.yml: ${TAGS[*]}"
for tag in "${TAGS[@]}"; do
  say "stand-in $tag"
  standin "$tag" || die "could not build a stand-in for $tag"
done

# ---- the image, then the stack ---------------------------------------------------------------
say "docker build -t $IMAGE ."
docker build --network host -q -t "$IMAGE" . >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "docker build failed"; }

compose down -v --remove-orphans >/dev/null 2>&1 || true  # a stack a killed run left behind
say "compose up (api, api-2, worker, postgres, redis; replicas on :$PORT1 and :$PORT2)"
compose up -d --build >"$TMP/up.log" 2>&1 || { tail -n 40 "$TMP/up.log" >&2; die "compose up failed"; }

say "waiting until every service is healthy"
deadline=$(($(date +%s) + 240))
while :; do
  states=$(compose ps -q | xargs -r docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' || true)
  [ "$(grep -c ' running healthy$' <<<"$states")" = 5 ] && break
  grep -q ' exited\| dead' <<<"$states" && { echo "$states" >&2; die "a service stopped"; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "$states" >&2; die "the services were not all healthy within 240 s"; }
  sleep 2
done
sed 's/^\//  /' <<<"$states"

# ---- what it does ----------------------------------------------------------------------------
say "checks"
API=$(compose ps -q api) WORKER=$(compose ps -q worker)
check "the API runs as a user without privileges" test "$(docker exec "$API" id -u)" != 0
check "no webhook secret is set when .env has none" test -z "$(docker exec "$API" printenv BATCHQ_WEBHOOK_SECRET)"
WORKER_HOST=$(docker inspect -f '{{.Config.Hostname}}' "$WORKER")
run_checks() {  # arguments of scripts/container_check.py; counts its checks
  local rc=0 p f
  python3 scripts/container_check.py --token "$TOKEN" --worker-key "$WORKER_KEY" --worker-host "$WORKER_HOST" --results "$TMP/checks.json" "$@" || rc=$?
  if [ -s "$TMP/checks.json" ]; then
    read -r p f < <(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["passed"], r["failed"])' "$TMP/checks.json")
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
    rm -f "$TMP/checks.json"
  fi
  [ "$rc" = 0 ] && [ "$FAILED" = 0 ] || die "the stack did not do what it should (see above)"
}
run_checks --api "http://127.0.0.1:$PORT1" --api "http://127.0.0.1:$PORT2"
say "stopping api: the worker must move on to api-2"
compose stop -t 20 api >/dev/null 2>&1
run_checks --failover --api "http://127.0.0.1:$PORT2"
say "the image and the compose stack work"
