#!/usr/bin/env bash
# moto (a local AWS SQS) for the SQS tests, on loopback only.
#   scripts/moto.sh start   install moto on first use, start it, wait until it answers
#   scripts/moto.sh stop    stop the moto started here
#   scripts/moto.sh selftest  install moto on first use and test scripts/moto_server.py's fixes
# Both are idempotent. Needs only python3 with venv and pip.
#   GATEHOUSE_TOOLS_DIR  where the venv lives (default ~/.cache/gatehouse-tools)
#   MOTO_PORT            port on 127.0.0.1 (default 5000)
set -euo pipefail

MOTO_VERSION="5.2.5"
TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-$HOME/.cache/gatehouse-tools}"
VENV="$TOOLS_DIR/moto-venv"
PORT="${MOTO_PORT:-5000}"
PIDFILE="$TOOLS_DIR/moto-$PORT.pid"
LOG="$TOOLS_DIR/moto-$PORT.log"
URL="http://127.0.0.1:$PORT"

answers() {
    python3 - "$URL" <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1).read()
except urllib.error.HTTPError:
    pass  # any HTTP answer means the server is up
PY
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

install() {
    if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
        return
    fi
    echo "moto: installing moto $MOTO_VERSION into $VENV" >&2
    mkdir -p "$TOOLS_DIR"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

start() {
    if running && answers; then
        echo "moto: already running at $URL (pid $(cat "$PIDFILE"))" >&2
        return
    fi
    if answers; then
        echo "moto: something else already answers at $URL; set MOTO_PORT to another port" >&2
        exit 1
    fi
    install
    mkdir -p "$TOOLS_DIR"
    # scripts/moto_server.py: moto_server with a faster (same-behaviour) SQS visibility check,
    # deletes that cannot lose a concurrent send, and FIFO receives that never hand out a group
    # with a message in flight.
    nohup "$VENV/bin/python" "$(dirname "$0")/moto_server.py" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 300); do
        if answers; then
            echo "moto: running at $URL (pid $(cat "$PIDFILE"))" >&2
            return
        fi
        if ! running; then
            echo "moto: the server exited; its log ($LOG):" >&2
            cat "$LOG" >&2
            rm -f "$PIDFILE"
            exit 1
        fi
        sleep 0.1
    done
    echo "moto: no answer at $URL after 30s; log: $LOG" >&2
    stop
    exit 1
}

stop() {
    if running; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        echo "moto: stopped (pid $pid)" >&2
    fi
    rm -f "$PIDFILE"
}

selftest() {
    install
    "$VENV/bin/python" "$(dirname "$0")/moto_server_test.py"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
selftest) selftest ;;
*)
    echo "usage: $0 start|stop|selftest" >&2
    exit 2
    ;;
esac
