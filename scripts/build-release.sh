#!/usr/bin/env bash
# The one release build: every service binary (each package under services/), optimised, from the
# locked dependency graph, copied into OUT_DIR/bin. The Dockerfile's builder stage runs exactly this
# script, and so do `make release` and CI, so the image and CI can never build differently.
#   scripts/build-release.sh [OUT_DIR]        (default: no copy, binaries stay in the target dir)
# Honours CARGO_TARGET_DIR (default ./target). Prints each binary's size and `--version`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-}"
cargo="${CARGO:-cargo}"

# Every services/*/ package, by the name in its [package] table (a new service is picked up
# without editing this script or the Dockerfile). Each service's binary is named after its package.
packages=()
for manifest in services/*/Cargo.toml; do
    name=$(sed -n '/^\[package\]/,/^\[/{s/^name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' "$manifest" | head -n 1)
    if [ -z "$name" ]; then
        echo "build-release: no [package] name in $manifest" >&2
        exit 1
    fi
    packages+=("$name")
done

args=()
for p in "${packages[@]}"; do args+=(-p "$p"); done
"$cargo" build --release --locked --bins "${args[@]}"

target_dir="${CARGO_TARGET_DIR:-target}"
if [ -n "$out" ]; then
    mkdir -p "$out/bin"
fi
for p in "${packages[@]}"; do
    bin="$target_dir/release/$p"
    if [ ! -x "$bin" ]; then
        echo "build-release: $bin was not built" >&2
        exit 1
    fi
    # A binary that cannot even print its version is not a release.
    version=$("$bin" --version)
    size=$(du -h "$bin" | cut -f1)
    echo "build-release: $p ($size): $version"
    if [ -n "$out" ]; then
        cp "$bin" "$out/bin/$p"
    fi
done
