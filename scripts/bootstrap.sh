#!/usr/bin/env bash
# Make a machine ready to run c2s-api and its tests: uv, the locked dependencies, and running
# PostgreSQL and Redis on 127.0.0.1 (installed from Debian's packages when absent).
# Idempotent: on a machine where everything already runs it only checks.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# --- uv ------------------------------------------------------------------------------------
if ! command -v uv >/dev/null 2>&1; then
    log "installing uv from PyPI"
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
fi

# --- PostgreSQL ----------------------------------------------------------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "installing PostgreSQL (Debian package postgresql)"
        apt_install postgresql
        installed_pg=1
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    if [ "${installed_pg:-0}" -eq 1 ] && ! grep -q 'c2s-api local trust' "$hba"; then
        # A fresh Debian cluster asks for passwords over TCP; the tests connect as `postgres`
        # over 127.0.0.1 like the machines they run on (trust on loopback only).
        as_root sed -i '1i host all all 127.0.0.1/32 trust # c2s-api local trust\nhost all all ::1/128 trust # c2s-api local trust' "$hba"
    fi
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || { log "PostgreSQL did not start"; exit 1; }
fi

# --- Redis ---------------------------------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
if ! redis_up; then
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing Redis (Debian package redis-server)"
        apt_install redis-server
    fi
    log "starting Redis"
    mkdir -p /tmp/c2s-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/c2s-redis --logfile /tmp/c2s-redis/redis.log
    for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
    redis_up || { log "Redis did not start"; exit 1; }
fi

# --- promtool (observability) ----------------------------------------------------------------
# The rule, metric and configuration checks of tests/integration/observability run `promtool`,
# which ships in Debian's `prometheus` package. Only the tool is wanted: the package's server must
# not run (the machine stays as found, nothing new on :9090), and its recommended node exporter
# is not installed.
if ! command -v promtool >/dev/null 2>&1; then
    log "installing promtool (Debian package prometheus; its server stays stopped and disabled)"
    # policy-rc.d answering 101 is Debian's switch that forbids starting services from maintainer
    # scripts; add one for the install if the machine has none.
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
        added_policy=1
    fi
    apt_install --no-install-recommends prometheus
    if [ "$added_policy" -eq 1 ]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    # Belt and braces: stopped now, not started at boot (systemd or sysvinit, whichever is there).
    if [ -d /run/systemd/system ]; then
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
    else
        as_root systemctl disable prometheus >/dev/null 2>&1 || true
        as_root service prometheus stop >/dev/null 2>&1 || true
    fi
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
    if pgrep -x prometheus >/dev/null 2>&1; then
        log "warning: a prometheus server is running; stop it (service prometheus stop)"
    fi
    command -v promtool >/dev/null 2>&1 || { log "promtool did not install"; exit 1; }
fi
# --- end promtool (observability) ------------------------------------------------------------

# --- wrk (benchmark load generator: bench/gate, python -m bench) ---------------------------
# Owned by bench/ (see bench/README.md). Installed from Debian only when missing.
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk (Debian package wrk)"
    apt_install wrk
fi
# --- end wrk --------------------------------------------------------------------------------

# --- Python dependencies -------------------------------------------------------------------
uv sync --frozen --quiet
log "ready: PostgreSQL and Redis on 127.0.0.1, dependencies synced"
