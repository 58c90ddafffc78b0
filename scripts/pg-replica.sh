#!/usr/bin/env bash
# A local streaming replica of the local PostgreSQL primary, without Docker.
#
#   scripts/pg-replica.sh start [port]    base backup of the primary (first time) and start it
#   scripts/pg-replica.sh stop [port]     stop it (fast) and delete its directory
#   scripts/pg-replica.sh kill [port]     stop it at once (-m immediate), keep its directory
#   scripts/pg-replica.sh status [port]   "running" / "stopped" (exit 0 / 3)
#   scripts/pg-replica.sh drop-slot [port] drop its replication slot on the primary (if inactive)
#
# The port defaults to 5433; the replica lives in $PG_REPLICA_DIR (default
# /tmp/c2s-pg-replica-<port>) and answers on postgresql://postgres@127.0.0.1:<port>/<database>
# (trust on loopback, as the primary). `start` on a directory that already holds a replica only
# starts the server again: it catches up by streaming from where it stopped.
#
# The primary (PG_PRIMARY_HOST:PG_PRIMARY_PORT, default 127.0.0.1:5432, user postgres, trust)
# must accept replication connections from 127.0.0.1. Debian's default pg_hba.conf has no
# `replication` line for TCP (the `all` database does not match replication connections), so the
# first `start` appends
#   host replication all 127.0.0.1/32 trust # c2s-api local replica
# to the primary's hba_file (as root, or through sudo) and reloads its configuration; it is done
# once (the comment marks it) and only when no rule of pg_hba_file_rules already covers it.
# wal_level=replica and max_wal_senders=10 are PostgreSQL's defaults. The replica copies the
# whole cluster (every database); databases created later arrive by streaming.
#
# The replica streams through a physical replication slot on the primary, c2s_replica_<port>,
# created with the base backup: while the replica is down (`kill`, a chaos test) the primary
# keeps the WAL it has not received yet. Without it, a checkpoint on the primary (every DROP
# DATABASE forces one) recycles those segments and the replica, started again, can never catch
# up ("requested WAL segment ... has already been removed"). `stop` drops the slot; a replica
# that was never stopped leaves its slot behind, holding WAL: `start` on the same port drops an
# inactive leftover first, and `scripts/pg-replica.sh drop-slot <port>` drops one by hand.
#
# PostgreSQL refuses to run as root: as root every server command runs as the `postgres` user.
set -euo pipefail

command=${1:-}
port=${2:-5433}
primary_host=${PG_PRIMARY_HOST:-127.0.0.1}
primary_port=${PG_PRIMARY_PORT:-5432}
dir=${PG_REPLICA_DIR:-/tmp/c2s-pg-replica-$port}
marker="# c2s-api local replica"
slot="c2s_replica_$port"

log() { printf 'pg-replica: %s\n' "$*" >&2; }

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

primary_sql() {
    psql -X -q -At -h "$primary_host" -p "$primary_port" -U postgres -d postgres -c "$1"
}

bindir() {
    if [ -n "${PG_BIN:-}" ]; then
        printf '%s\n' "$PG_BIN"
        return
    fi
    local major
    major=$(primary_sql "SELECT current_setting('server_version_num')::int / 10000")
    printf '/usr/lib/postgresql/%s/bin\n' "$major"
}

allow_replication() {
    # Is a replication connection from 127.0.0.1 as postgres already allowed?
    local covered
    covered=$(primary_sql "SELECT count(*) FROM pg_hba_file_rules
        WHERE error IS NULL AND type = 'host' AND 'replication' = ANY(database)
          AND ('all' = ANY(user_name) OR 'postgres' = ANY(user_name))
          AND (address = '127.0.0.1' OR address = 'all' OR address = '0.0.0.0')
          AND auth_method = 'trust'")
    if [ "$covered" != "0" ]; then
        return
    fi
    local hba
    hba=$(primary_sql "SHOW hba_file")
    if ! grep -qF "$marker" "$hba"; then
        log "allowing replication connections from 127.0.0.1 in $hba"
        # First match wins in pg_hba.conf: put the line at the top so no reject rule shadows it.
        as_root sed -i "1i host replication all 127.0.0.1/32 trust $marker" "$hba"
    fi
    primary_sql "SELECT pg_reload_conf()" >/dev/null
    sleep 0.2
}

write_config() {
    # The base backup holds the data directory only: Debian keeps postgresql.conf and pg_hba.conf
    # in /etc, so the replica gets its own. A hot standby needs these limits at least as high as
    # the primary's.
    local limits
    limits=$(primary_sql "SELECT string_agg(name || ' = ' || setting, E'\n') FROM pg_settings
        WHERE name IN ('max_connections', 'max_worker_processes', 'max_wal_senders',
                       'max_prepared_transactions', 'max_locks_per_transaction')")
    as_owner tee "$dir/data/postgresql.conf" >/dev/null <<EOF
# c2s-api local replica of $primary_host:$primary_port (scripts/pg-replica.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
hot_standby = on
hot_standby_feedback = on
fsync = off
shared_buffers = 32MB
logging_collector = off
$limits
EOF
    as_owner tee "$dir/data/pg_hba.conf" >/dev/null <<EOF
local all all trust
host all all 127.0.0.1/32 trust
EOF
    as_owner touch "$dir/data/pg_ident.conf"
}

drop_slot() {
    # The slot is active until the primary's walsender for the stopped replica has exited.
    local attempt
    for attempt in $(seq 1 50); do
        case "$(primary_sql "SELECT coalesce((SELECT active::text FROM pg_replication_slots
                WHERE slot_name = '$slot'), 'absent')" 2>/dev/null || echo unreachable)" in
            absent | unreachable) return ;;
            false)
                primary_sql "SELECT pg_drop_replication_slot('$slot')" >/dev/null 2>&1 || true
                ;;
        esac
        sleep 0.1
    done
    log "replication slot $slot still active: not dropped"
}

running() {
    [ -f "$dir/data/postmaster.pid" ] && as_owner "$(bindir)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

start() {
    local bin
    bin=$(bindir)
    if running; then
        log "already running on port $port ($dir)"
        return
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        allow_replication
        drop_slot # an inactive leftover of a replica on this port that was never stopped
        mkdir -p "$dir"
        if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
        chmod 700 "$dir"
        # Retried: on a shared server another client may terminate the backup's connections.
        local attempt
        for attempt in 1 2 3 4 5; do
            log "base backup of $primary_host:$primary_port into $dir/data (attempt $attempt)"
            if as_owner "$bin/pg_basebackup" -R -C -S "$slot" -D "$dir/data" \
                -h "$primary_host" -p "$primary_port" -U postgres -X stream --checkpoint=fast \
                --no-sync; then
                break
            fi
            rm -rf "$dir/data"
            drop_slot
            if [ "$attempt" -eq 5 ]; then
                log "base backup failed"
                exit 1
            fi
            sleep 1
        done
        write_config
    fi
    rm -f "$dir/data/postmaster.pid"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    log "replica serving on 127.0.0.1:$port"
}

stop() {
    if [ -d "$dir/data" ] && running; then
        as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null || true
    fi
    rm -rf "$dir"
    drop_slot
    log "replica on port $port stopped and removed (slot $slot dropped)"
}

kill_now() {
    if running; then
        as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null
    fi
}

case "$command" in
    start) start ;;
    stop) stop ;;
    kill) kill_now ;;
    drop-slot) drop_slot ;;
    status)
        if running; then echo running; else echo stopped; exit 3; fi
        ;;
    *)
        echo "usage: $0 start|stop|kill|status|drop-slot [port]" >&2
        exit 2
        ;;
esac
