#!/usr/bin/env bash
# Run a command with the servers the tests and benches need on loopback: moto (SQS), Google's
# Pub/Sub fake and a throwaway PostgreSQL cluster, installed on first use, on free ports unless
# MOTO_PORT / PUBSUB_PORT / POSTGRES_PORT are given, and stopped afterwards whatever happened.
# Exports GATEHOUSE_TEST_MOTO_URL, GATEHOUSE_TEST_PUBSUB_EMULATOR and GATEHOUSE_TEST_POSTGRES_URL
# for the command.
set -euo pipefail
cd "$(dirname "$0")/.."
# A free port p whose neighbour p+1 is free too (the Pub/Sub emulator's admin port is p+1).
free_port_pair() {
    python3 - <<'PY'
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1))
    except OSError:
        a.close(); continue
    a.close(); b.close(); print(p); break
else:
    raise SystemExit("no free port pair on 127.0.0.1")
PY
}
export MOTO_PORT="${MOTO_PORT:-$(free_port_pair)}"
export PUBSUB_PORT="${PUBSUB_PORT:-$(free_port_pair)}"
export PUBSUB_ADMIN_PORT="${PUBSUB_ADMIN_PORT:-$((PUBSUB_PORT + 1))}"
export POSTGRES_PORT="${POSTGRES_PORT:-$(free_port_pair)}"
stop() {
    scripts/postgres.sh stop >/dev/null 2>&1 || true
    scripts/pubsub-emulator.sh stop >/dev/null 2>&1 || true
    scripts/moto.sh stop >/dev/null 2>&1 || true
}
trap stop EXIT
scripts/moto.sh start
scripts/pubsub-emulator.sh start
scripts/postgres.sh start
export GATEHOUSE_TEST_MOTO_URL="http://127.0.0.1:${MOTO_PORT}"
export GATEHOUSE_TEST_PUBSUB_EMULATOR="127.0.0.1:${PUBSUB_PORT}"
export GATEHOUSE_TEST_PUBSUB_ADMIN="127.0.0.1:${PUBSUB_ADMIN_PORT}"
export GATEHOUSE_TEST_POSTGRES_URL="postgres://gatehouse:gatehouse@127.0.0.1:${POSTGRES_PORT}/postgres"
"$@"
