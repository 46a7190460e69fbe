#!/usr/bin/env bash
# Offline unit tests of the Pulumi program in infra/ (Pulumi's mocks: no Pulumi CLI, no provider
# plugin, no cloud credentials) and of the Dockerfile.
#   scripts/infra-test.sh [PYTEST ARGS...]
# Creates (or reuses) a venv with the pinned versions of infra/requirements.txt, installing them on
# first use or when the file changed, then runs pytest in infra/.
#   GATEHOUSE_TOOLS_DIR  where the venv lives (default ~/.cache/gatehouse-tools)
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${GATEHOUSE_TOOLS_DIR:-$HOME/.cache/gatehouse-tools}"
VENV="$TOOLS_DIR/infra-venv"
REQS="infra/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "infra-test: installing $REQS into $VENV (first use; ~40 MB of wheels)" >&2
    mkdir -p "$TOOLS_DIR"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    log="$TOOLS_DIR/infra-venv-install.log"
    if ! "$VENV/bin/pip" install --disable-pip-version-check --quiet -r "$REQS" >"$log" 2>&1; then
        cat "$log" >&2
        if grep -qiE "connection|resolve|network|timed out|No matching distribution" "$log"; then
            echo "infra-test: cannot install the Pulumi SDK: PyPI is unreachable from here (see above)." >&2
            echo "infra-test: connect to PyPI (or set PIP_INDEX_URL to a mirror) and run again." >&2
        else
            echo "infra-test: pip install -r $REQS failed (log: $log)" >&2
        fi
        rm -rf "$VENV"
        exit 1
    fi
    echo "$want" >"$STAMP"
fi

cd infra
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
