#!/usr/bin/env bash
# A local Redis Cluster for tests and benchmarks: 3 masters with 1 replica each, on loopback
# ports BASE..BASE+5 (cluster bus: +10000), no persistence, in a temporary directory.
#
#   scripts/redis_cluster.sh start [BASE]     start it (BASE: 7100), wait for cluster_state:ok,
#                                             print its URL (redis+cluster://127.0.0.1:BASE,…)
#   scripts/redis_cluster.sh stop [BASE]      stop every node and remove the directory
#   scripts/redis_cluster.sh kill PORT        kill -9 one node (a failover drill)
#   scripts/redis_cluster.sh restart PORT     start a killed node again (it rejoins as a replica)
#   scripts/redis_cluster.sh wait [BASE]      wait until every live node says cluster_state:ok
#
# The directory is $BATCHQ_CLUSTER_DIR, or /tmp/batchq-cluster-BASE.
set -euo pipefail

NODES=6
TIMEOUT_MS=${BATCHQ_CLUSTER_NODE_TIMEOUT_MS:-2000}  # failure detection: a failover takes ~2-4 s

base_of() { echo "${1:-${BATCHQ_CLUSTER_BASE:-7100}}"; }
dir_of() { echo "${BATCHQ_CLUSTER_DIR:-/tmp/batchq-cluster-$1}"; }
ports_of() { seq "$1" $(($1 + NODES - 1)); }

start_node() {  # dir, port
  local dir=$1 port=$2
  mkdir -p "$dir/$port"
  redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout "$TIMEOUT_MS" --save '' --appendonly no --dir "$dir/$port" \
    --daemonize yes --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log"
}

ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

wait_ok() {  # base: every node that answers says cluster_state:ok and knows 3 masters
  local base=$1
  for _ in $(seq 1 200); do
    local good=1
    for port in $(ports_of "$base"); do
      ping "$port" || continue
      redis-cli -h 127.0.0.1 -p "$port" cluster info | grep -q "cluster_state:ok" || { good=0; break; }
    done
    [ "$good" = 1 ] && return 0
    sleep 0.1
  done
  echo "redis_cluster: the cluster did not reach cluster_state:ok" >&2
  return 1
}

cmd=${1:-}
case "$cmd" in
  start)
    base=$(base_of "${2:-}")
    dir=$(dir_of "$base")
    if [ -d "$dir" ]; then "$0" stop "$base" >/dev/null; fi
    mkdir -p "$dir"
    for port in $(ports_of "$base"); do start_node "$dir" "$port"; done
    for port in $(ports_of "$base"); do
      for _ in $(seq 1 100); do ping "$port" && break; sleep 0.05; done
      ping "$port" || { echo "redis_cluster: node $port did not start (see $dir/$port/redis.log)" >&2; exit 1; }
    done
    redis-cli --cluster create $(for p in $(ports_of "$base"); do echo "127.0.0.1:$p"; done) \
      --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { cat "$dir/create.log" >&2; exit 1; }
    wait_ok "$base"
    # Every replica has finished its first sync (a failover right away must find one ready).
    for _ in $(seq 1 200); do
      synced=$(for p in $(ports_of "$base"); do redis-cli -p "$p" info replication; done | grep -c "master_link_status:up" || true)
      [ "$synced" -ge 3 ] && break
      sleep 0.1
    done
    echo "redis+cluster://$(ports_of "$base" | sed 's/^/127.0.0.1:/' | paste -sd,)"
    ;;
  stop)
    base=$(base_of "${2:-}")
    dir=$(dir_of "$base")
    for port in $(ports_of "$base"); do
      pidfile="$dir/$port/redis.pid"
      if [ -f "$pidfile" ]; then kill -9 "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
    rm -rf "$dir"
    ;;
  kill)
    port=${2:?a port}
    dir=$(dir_of "$(base_of "${3:-}")")
    kill -9 "$(cat "$dir/$port/redis.pid")"
    ;;
  restart)
    port=${2:?a port}
    dir=$(dir_of "$(base_of "${3:-}")")
    start_node "$dir" "$port"
    for _ in $(seq 1 100); do ping "$port" && break; sleep 0.05; done
    ;;
  wait)
    wait_ok "$(base_of "${2:-}")"
    ;;
  *)
    echo "usage: $0 start|stop [BASE] | kill|restart PORT [BASE] | wait [BASE]" >&2
    exit 2
    ;;
esac
