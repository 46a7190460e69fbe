#!/usr/bin/env bash
# Google's Pub/Sub fake (pstest) on loopback for the tests.
#   scripts/pubsub-emulator.sh start   install Go + Google's Go sources from Debian if missing, build
#                                      once (again when main.go is newer), start, wait for the port
#   scripts/pubsub-emulator.sh stop    stop the one started here (pid file)
# gRPC on 127.0.0.1:${PUBSUB_PORT:-8085}; HTTP admin (create topics/subscriptions with fresh
# names) on 127.0.0.1:${PUBSUB_ADMIN_PORT:-PUBSUB_PORT+1}. Pre-created in project gatehouse-test:
# topics t1..t8 with subscriptions s1..s8, and dead-letter topics t1-dlq..t8-dlq with s1-dlq..s8-dlq.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
port="${PUBSUB_PORT:-8085}"
admin_port="${PUBSUB_ADMIN_PORT:-$((port + 1))}"
tools="${GATEHOUSE_TOOLS_DIR:-$HOME/.cache/gatehouse-tools}"
bin="$tools/pubsub-emulator"
src="$root/tools/pubsub-emulator/main.go"
pidfile="$tools/pubsub-emulator-$port.pid"
logfile="$tools/pubsub-emulator-$port.log"
project="gatehouse-test"

install_deps() {
    if command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/cloud.google.com/go/pubsub/pstest ]; then
        return
    fi
    echo "pubsub-emulator: installing golang-go and golang-google-cloud-dev" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq golang-go golang-google-cloud-dev >/dev/null
}

build() {
    if [ -x "$bin" ] && [ ! "$src" -nt "$bin" ] && [ ! "$root/tools/pubsub-emulator/build.sh" -nt "$bin" ]; then
        return
    fi
    install_deps
    echo "pubsub-emulator: building $bin" >&2
    "$root/tools/pubsub-emulator/build.sh" "$bin"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    mkdir -p "$tools"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && answers "$port"; then
        echo "pubsub-emulator: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
        return
    fi
    build
    if answers "$port"; then
        echo "pubsub-emulator: 127.0.0.1:$port is taken by another process" >&2
        exit 1
    fi
    local topics="" subs=""
    for i in 1 2 3 4 5 6 7 8; do
        topics+="projects/$project/topics/t$i,projects/$project/topics/t$i-dlq,"
        subs+="projects/$project/subscriptions/s$i=projects/$project/topics/t$i,"
        subs+="projects/$project/subscriptions/s$i-dlq=projects/$project/topics/t$i-dlq,"
    done
    nohup "$bin" -addr "127.0.0.1:$port" -admin-addr "127.0.0.1:$admin_port" \
        -topics "$topics" -subscriptions "$subs" >"$logfile" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
        if answers "$port" && answers "$admin_port"; then
            echo "pubsub-emulator: listening on 127.0.0.1:$port (admin $admin_port)" >&2
            return
        fi
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "pubsub-emulator: exited early; log:" >&2
            cat "$logfile" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "pubsub-emulator: did not answer on 127.0.0.1:$port within 10s; log:" >&2
    cat "$logfile" >&2
    exit 1
}

stop() {
    if [ -f "$pidfile" ]; then
        local pid
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 64 ;;
esac
