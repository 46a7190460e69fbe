"""Run the scim2-tester suite (every check) against a SCIM 2.0 server.

    python scim2_tester_run.py BASE_URL [MIN_CHECKS]

The bearer token comes from the SCIM_TOKEN environment variable (never the command line, which
other users of the machine can read). Prints one line per check; exits 1 when any check ends in
ERROR or CRITICAL, or when fewer than MIN_CHECKS checks ran (a suite that silently ran nothing
must not pass).
"""

import os
import sys
from collections import Counter

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

FAILED = (Status.ERROR, Status.CRITICAL)


def main() -> int:
    url = sys.argv[1]
    min_checks = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    token = os.environ["SCIM_TOKEN"]
    with Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        results = check_server(SyncSCIMClient(http))
    for r in results:
        line = f"{r.status.name:<10} {r.resource_type or '-':<6} {r.title}"
        if r.status in FAILED:
            line += f": {r.reason}"
        print(line)
    counts = Counter(r.status.name for r in results)
    failed = [r for r in results if r.status in FAILED]
    print(f"scim2-tester: {len(results)} checks, {len(failed)} failed, {dict(sorted(counts.items()))}")
    if len(results) < min_checks:
        print(f"scim2-tester: expected at least {min_checks} checks", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
