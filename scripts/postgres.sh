#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the tests.
#   scripts/postgres.sh start   install Debian's postgresql if initdb is missing, create a cluster
#                               in a fresh temp dir, start it, wait until it answers
#   scripts/postgres.sh stop    stop the cluster started here and remove its directory
# Both are idempotent. As root (CI), the cluster runs as the unprivileged user `nobody`
# (PostgreSQL refuses to run as root). Listens on 127.0.0.1:${POSTGRES_PORT:-5432} only; its
# socket lives in the cluster's own directory. The superuser is `gatehouse` with password
# `gatehouse`; each test creates its own database. Prints nothing on stdout; the URL is
#   postgres://gatehouse:gatehouse@127.0.0.1:PORT/postgres
#   GATEHOUSE_TOOLS_DIR  where the state file lives (default ~/.cache/gatehouse-tools)
#   POSTGRES_DURABLE=1   keep PostgreSQL's durability defaults (fsync, synchronous_commit,
#                        full_page_writes on), as a production server runs: for measuring what
#                        commits cost on disk (bench/pg_state.md); the tests do not need it
set -euo pipefail

TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-$HOME/.cache/gatehouse-tools}"
PORT="${POSTGRES_PORT:-5432}"
STATE="$TOOLS_DIR/postgres-$PORT.dir"
RUN_AS="nobody"

find_bin() {
    local name="$1"
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return
    fi
    local found
    found="$(ls -d /usr/lib/postgresql/*/bin/"$name" 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$found" ] && echo "$found"
}

install() {
    if [ -n "$(find_bin initdb)" ] && [ -n "$(find_bin pg_ctl)" ]; then
        return
    fi
    echo "postgres: installing Debian's postgresql" >&2
    if [ "$(id -u)" != 0 ]; then
        echo "postgres: initdb is missing and this is not root: install postgresql (apt-get install postgresql)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
}

# Run a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$RUN_AS" -- "$@"
    else
        "$@"
    fi
}

answers() {
    local dir="$1"
    as_owner "$(find_bin pg_ctl)" -D "$dir/data" status >/dev/null 2>&1 &&
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

start() {
    mkdir -p "$TOOLS_DIR"
    if [ -f "$STATE" ] && answers "$(cat "$STATE")"; then
        echo "postgres: already running on 127.0.0.1:$PORT ($(cat "$STATE"))" >&2
        return
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "postgres: 127.0.0.1:$PORT is taken by another process; set POSTGRES_PORT" >&2
        exit 1
    fi
    install
    local initdb pg_ctl dir
    initdb="$(find_bin initdb)"
    pg_ctl="$(find_bin pg_ctl)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-pg.XXXXXX")"
    chmod 755 "$dir"
    printf 'gatehouse\n' >"$dir/pwfile"
    if [ "$(id -u)" = 0 ]; then
        chown -R "$RUN_AS" "$dir"
    fi
    echo "$dir" >"$STATE"
    as_owner "$initdb" -D "$dir/data" -U gatehouse --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        echo "postgres: initdb failed:" >&2
        cat "$dir/initdb.log" >&2
        stop
        exit 1
    }
    # Throwaway data: durability off for speed (unless asked for), enough connections for
    # parallel tests.
    local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if [ "${POSTGRES_DURABLE:-0}" = 1 ]; then
        durability="-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
    fi
    as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-k $dir -p $PORT -h 127.0.0.1 $durability -c max_connections=300" \
        start >/dev/null || {
        echo "postgres: the server did not start; its log:" >&2
        cat "$dir/server.log" >&2
        stop
        exit 1
    }
    for _ in $(seq 1 100); do
        if answers "$dir"; then
            echo "postgres: running on 127.0.0.1:$PORT ($dir)" >&2
            return
        fi
        sleep 0.1
    done
    echo "postgres: no answer on 127.0.0.1:$PORT after 10s; its log:" >&2
    cat "$dir/server.log" >&2
    stop
    exit 1
}

stop() {
    if [ ! -f "$STATE" ]; then
        return
    fi
    local dir
    dir="$(cat "$STATE")"
    if [ -d "$dir/data" ]; then
        as_owner "$(find_bin pg_ctl)" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        echo "postgres: stopped ($dir)" >&2
    fi
    case "$dir" in
    */gatehouse-pg.*) rm -rf "$dir" ;;
    esac
    rm -f "$STATE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
