#!/usr/bin/env bash
# Build the Pub/Sub emulator (Google's pstest fake + our main.go) OFFLINE from Debian's packages
# golang-go and golang-google-cloud-dev. Usage: build.sh OUTPUT_BINARY
#
# One patch to the fake, so that it keeps a backlog as Pub/Sub does: pstest drops every message
# that is not leased and was published more than a fixed 10 minutes ago, whatever the
# subscription's message_retention_duration (Pub/Sub's default and the fake's own default for it:
# 7 days). A 100,000-event soak whose backlog outlived 10 minutes lost ~90,000 messages in the
# emulator that real Pub/Sub would have delivered. The patched fake honours the subscription's
# retention. The build fails if the source no longer has the line the patch replaces.
set -euo pipefail
out="${1:?usage: build.sh OUTPUT_BINARY}"
src="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pstest=cloud.google.com/go/pubsub/pstest
mkdir -p "$work/gopath/src/$pstest"
cp /usr/share/gocode/src/$pstest/fake.go "$work/gopath/src/$pstest/fake.go"
# Go allows an `internal` import only from the same GOPATH root: bring the ones it uses along.
ln -s /usr/share/gocode/src/cloud.google.com/go/internal "$work/gopath/src/cloud.google.com/go/internal"
fake="$work/gopath/src/$pstest/fake.go"
old='if !m.outstanding() \&\& now.Sub(pubTime) > retentionDuration {'
new='if !m.outstanding() \&\& now.Sub(pubTime) > s.retention() {'
if [ "$(grep -c "$old" "$fake")" != 1 ]; then
    echo "build.sh: pstest's fake.go no longer has the retention line to patch" >&2
    exit 1
fi
sed -i "s/$old/$new/" "$fake"
cat >>"$fake" <<'GO'

// retention is the subscription's message_retention_duration (7 days when unset), as Pub/Sub
// honours it (patched in by Gatehouse's build.sh).
func (s *subscription) retention() time.Duration {
	if s.proto.MessageRetentionDuration != nil {
		if d, err := ptypes.Duration(s.proto.MessageRetentionDuration); err == nil && d > 0 {
			return d
		}
	}
	return maxMessageRetentionDuration
}
GO
# Check the patch with a test of our own in the package (it fails on the unpatched fake).
cp "$src/retention_test.go.in" "$work/gopath/src/$pstest/gatehouse_retention_test.go"
(cd "$work/gopath/src/$pstest" && GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOPROXY=off \
    GOFLAGS= GOCACHE="$work/cache" go test -count=1 -run TestGatehouse . >&2)
# GOPATH mode: the patched package comes first; the package must live outside GOPATH's src or
# be built by file; build by file.
cp "$src/main.go" "$work/main.go"
cd "$work"
GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOPROXY=off GOFLAGS= GOCACHE="$work/cache" \
    go build -o "$out" main.go
