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
        rm -rf "$VENV"
        index="${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple)}"
        if ! python3 - "$index" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/pulumi/", timeout=15).read(1)
PY
            echo "infra-test: cannot install the Pulumi SDK: the package index $index is unreachable." >&2
            echo "infra-test: connect to PyPI (or set PIP_INDEX_URL to a reachable mirror) and run again." >&2
        else
            cat "$log" >&2
            echo "infra-test: pip install -r $REQS failed (log: $log)" >&2
        fi
        exit 1
    fi
    echo "$want" >"$STAMP"
fi

cd infra
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
