#!/usr/bin/env bash
# `make test`: start the servers the tests need on loopback (moto for SQS, Google's Pub/Sub fake),
# run every test, stop the servers whatever happened. Nothing has to be installed by hand: the
# start scripts install what they need on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# Free loopback ports unless given, so a developer's own servers (or a second run) do not clash.
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

cargo test --workspace --locked "$@"
