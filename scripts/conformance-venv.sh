#!/usr/bin/env bash
# The venv of the third-party conformance checkers (tools/conformance/requirements.txt, pinned):
# scim2-tester (SCIM 2.0) and the OCSF JSON schemas with jsonschema. Installed on first use or
# when the requirements changed; prints the venv's python. The `gatehouse` binary's tests
# (services/gatehouse/tests/it/conformance.rs) run tools/conformance/*.py with it.
#   GATEHOUSE_TOOLS_DIR  where the venv lives (default ~/.cache/gatehouse-tools)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-$HOME/.cache/gatehouse-tools}"
VENV="$TOOLS_DIR/conformance-venv"
REQS="tools/conformance/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "conformance: installing $REQS into $VENV (first use)" >&2
    mkdir -p "$TOOLS_DIR"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    log="$TOOLS_DIR/conformance-venv-install.log"
    if ! "$VENV/bin/pip" install --disable-pip-version-check --quiet -r "$REQS" >"$log" 2>&1; then
        rm -rf "$VENV"
        cat "$log" >&2
        echo "conformance: pip install -r $REQS failed (log: $log); is the package index reachable?" >&2
        exit 1
    fi
    echo "$want" >"$STAMP"
fi
echo "$VENV/bin/python"
