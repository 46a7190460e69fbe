#!/usr/bin/env bash
# `make bench`: every benchmark, with the queue servers they need started on loopback and stopped
# afterwards. Results: bench/results.md, bench/scim.md, bench/queues.md (and .json beside each).
set -euo pipefail
cd "$(dirname "$0")/.."
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export MOTO_PORT="${MOTO_PORT:-$(free_port)}"
export PUBSUB_PORT="${PUBSUB_PORT:-$(free_port)}"
stop() {
    scripts/pubsub-emulator.sh stop >/dev/null 2>&1 || true
    scripts/moto.sh stop >/dev/null 2>&1 || true
}
trap stop EXIT
scripts/moto.sh start
scripts/pubsub-emulator.sh start
export GATEHOUSE_TEST_MOTO_URL="http://127.0.0.1:${MOTO_PORT}"
export GATEHOUSE_TEST_PUBSUB_EMULATOR="127.0.0.1:${PUBSUB_PORT}"
cargo bench --locked -p gatehouse-e2e --bench offboarding
cargo bench --locked -p gatehouse-e2e --bench scim
cargo bench --locked -p gatehouse-e2e --bench queues
