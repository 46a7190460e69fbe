#!/usr/bin/env bash
# `make test`: start the servers the tests need on loopback (moto for SQS, Google's Pub/Sub fake),
# run every test, stop the servers whatever happened. Nothing has to be installed by hand: the
# start scripts install what they need on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

export MOTO_PORT="${MOTO_PORT:-5000}"
export PUBSUB_PORT="${PUBSUB_PORT:-8085}"

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
