#!/usr/bin/env bash
# Headless Chromium for the access review's HTML test (issue 15, `gatehouse report access
# --format html`): installs Debian's `chromium` when /usr/bin/chromium is missing, the way
# scripts/postgres.sh installs PostgreSQL. The test fails with a clear message when the browser
# is missing or cannot start; it never skips.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
echo "chromium: installing Debian's chromium (headless browser for the HTML report test)" >&2
if [ "$(id -u)" != 0 ]; then
    echo "chromium: /usr/bin/chromium is missing and this is not root: install it (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
