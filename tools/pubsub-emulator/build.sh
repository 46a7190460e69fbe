#!/usr/bin/env bash
# Build the Pub/Sub emulator (Google's pstest fake + our main.go) OFFLINE from Debian's packages
# golang-go and golang-google-cloud-dev. Usage: build.sh OUTPUT_BINARY
set -euo pipefail
out="${1:?usage: build.sh OUTPUT_BINARY}"
src="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# GOPATH mode: the package must live outside GOPATH's src or be built by file; build by file.
cp "$src/main.go" "$work/main.go"
cd "$work"
GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off GOFLAGS= GOCACHE="$work/cache" \
    go build -o "$out" main.go
