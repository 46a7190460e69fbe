#!/usr/bin/env bash
# `make test`: every test. First the offline infra tests (Pulumi program and Dockerfile; a venv
# under $GATEHOUSE_TOOLS_DIR on first use) and the test of moto's launcher (scripts/moto.sh
# selftest), the venv of the third-party conformance checkers the `gatehouse` binary's tests run
# (scripts/conformance-venv.sh: scim2-tester, OCSF schemas), headless Chromium for the HTML
# access review (scripts/chromium.sh), then the Rust workspace with moto
# and the Pub/Sub emulator running (scripts/with-servers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/infra-test.sh
scripts/moto.sh selftest
scripts/conformance-venv.sh >/dev/null
scripts/chromium.sh
exec scripts/with-servers.sh cargo test --workspace --locked "$@"
