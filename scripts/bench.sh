#!/usr/bin/env bash
# `make bench`: every benchmark, with the queue servers running (scripts/with-servers.sh).
# Results: bench/results.md, bench/scim.md, bench/queues.md, bench/reconcile.md, bench/throughput.md,
# bench/pg_state.md
# (and .json beside each).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-servers.sh bash -c '
    cargo bench --locked -p gatehouse-e2e --bench offboarding &&
    cargo bench --locked -p gatehouse-e2e --bench scim &&
    cargo bench --locked -p gatehouse-e2e --bench queues &&
    cargo bench --locked -p gatehouse-e2e --bench reconcile &&
    cargo bench --locked -p gatehouse-e2e --bench throughput &&
    cargo bench --locked -p gatehouse-e2e --bench pg_state'
