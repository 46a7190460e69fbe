#!/usr/bin/env bash
# `make image`: the container image when a container engine answers (`docker build`), otherwise the
# Dockerfile's own build commands run here, so the image's build is still checked: the builder
# stage's RUN (after its --mount flags) is read from the Dockerfile and executed from the repository
# root with /out replaced by a temporary directory, then every services/* binary must be in it and
# answer --version. CI runs this (`.ci/run`), which is its release build of every binary.
#   scripts/image.sh [TAG]      (default tag: gatehouse:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-gatehouse:dev}"

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    exec docker build -t "$tag" .
fi
echo "image: no container engine answers here; running the Dockerfile's build commands instead" >&2

# The builder stage's RUN instructions, continuation lines joined, comments dropped, --mount flags
# removed (they only name caches).
runs=$(python3 - <<'PY'
import re, sys
text = open("Dockerfile").read()
lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
joined = re.sub(r"\\\n", " ", "\n".join(lines))
stage = 0
for line in joined.splitlines():
    word, _, rest = line.strip().partition(" ")
    if word.upper() == "FROM":
        stage += 1
    elif word.upper() == "RUN" and stage == 1:
        print(re.sub(r"--mount=\S+\s*", "", rest).strip())
PY
)
if [ -z "$runs" ]; then
    echo "image: the Dockerfile's builder stage has no RUN instruction" >&2
    exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The builder stage sets CARGO_TARGET_DIR=/src/target; here the caller's target dir (or ./target).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
while IFS= read -r cmd; do
    echo "image: RUN ${cmd//\/out/$out}" >&2
    bash -euo pipefail -c "${cmd//\/out/$out}"
done <<<"$runs"

missing=0
for manifest in services/*/Cargo.toml; do
    name=$(sed -n '/^\[package\]/,/^\[/{s/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' "$manifest" | head -n 1)
    if ! "$out/bin/$name" --version >/dev/null; then
        echo "image: $name is missing from the image's /out/bin or does not run" >&2
        missing=1
    fi
done
[ "$missing" = 0 ]
echo "image: the Dockerfile's build produced every service binary ($(ls "$out/bin" | tr '\n' ' '))"
