#!/usr/bin/env bash
# A local Redis Cluster for tests and benchmarks, no Docker: 6 redis-server processes (3 masters,
# 3 replicas) on loopback ports base_port..base_port+5, data in a temporary directory.
#
#   scripts/redis-cluster.sh start [base_port]   # default 7000; prints the REDIS_URL
#   scripts/redis-cluster.sh stop  [base_port]
#
# The URL printed is redis+cluster://127.0.0.1:<base>,... (docs/adr/0014-redis-cluster.md).
set -euo pipefail

cmd="${1:-}"
base="${2:-7000}"
dir="${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/c2s-redis-cluster-$base}"
nodes=6

ports() { for ((i = 0; i < nodes; i++)); do echo $((base + i)); done; }

wait_ok() {
  local deadline=$((SECONDS + ${REDIS_CLUSTER_WAIT_S:-30}))
  while ((SECONDS < deadline)); do
    # Every node ok, knowing all the others, and all of them agreeing on the slot map (a client
    # that starts now must not see the topology still converging).
    local all=1 views=""
    for p in $(ports); do
      local info
      info="$(redis-cli -p "$p" cluster info 2>/dev/null || true)"
      if ! grep -q '^cluster_state:ok' <<<"$info" || ! grep -q "^cluster_known_nodes:$nodes" <<<"$info"; then
        all=0
        break
      fi
      # A replica that never finished its first sync could not be promoted.
      local repl
      repl="$(redis-cli -p "$p" info replication 2>/dev/null || true)"
      if grep -q '^role:slave' <<<"$repl" && ! grep -q '^master_link_status:up' <<<"$repl"; then
        all=0
        break
      fi
      views+="$(redis-cli -p "$p" cluster slots 2>/dev/null | sort | md5sum)"$'\n'
    done
    if ((all)) && [[ "$(sort -u <<<"${views%$'\n'}" | wc -l)" == 1 ]]; then return 0; fi
    sleep 0.2
  done
  echo "redis-cluster: cluster_state never became ok" >&2
  return 1
}

start() {
  mkdir -p "$dir"
  for p in $(ports); do
    redis-server --port "$p" --bind 127.0.0.1 --dir "$dir" --cluster-enabled yes \
      --cluster-config-file "nodes-$p.conf" --cluster-node-timeout "${REDIS_CLUSTER_NODE_TIMEOUT_MS:-1000}" \
      --cluster-replica-validity-factor 0 --appendonly no --save '' --daemonize yes --pidfile "$dir/redis-$p.pid" \
      --logfile "$dir/redis-$p.log" --protected-mode no
  done
  for p in $(ports); do
    for _ in $(seq 100); do
      redis-cli -p "$p" ping >/dev/null 2>&1 && break
      sleep 0.05
    done
  done
  # shellcheck disable=SC2046
  redis-cli --cluster create $(for p in $(ports); do printf '127.0.0.1:%s ' "$p"; done) \
    --cluster-replicas 1 --cluster-yes >"$dir/create.log"
  wait_ok
  local url="redis+cluster://"
  local sep=""
  for p in $(ports); do url+="${sep}127.0.0.1:$p"; sep=","; done
  echo "$url"
}

stop() {
  for p in $(ports); do
    if [[ -f "$dir/redis-$p.pid" ]]; then
      kill "$(cat "$dir/redis-$p.pid")" 2>/dev/null || true
    fi
  done
  for p in $(ports); do
    for _ in $(seq 100); do
      redis-cli -p "$p" ping >/dev/null 2>&1 || break
      sleep 0.05
    done
  done
  rm -rf "$dir"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop [base_port]" >&2
    exit 2
    ;;
esac
