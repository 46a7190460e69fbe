#!/usr/bin/env bash
# `make test`: every test, with moto and the Pub/Sub emulator running (scripts/with-servers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-servers.sh cargo test --workspace --locked "$@"
