"""Start moto_server with one performance fix to its SQS model (same behaviour).

moto (5.2.5) decides which messages of a queue are visible by calling `unix_time_millis()` twice
per message (each a few datetime conversions) on every receive, depth query and long-poll
wake-up. With thousands of messages queued (the crash test queues 10,000) that made every
request take tens of milliseconds of CPU and the test run for over half an hour. This launcher
reads the clock once per call and compares numbers; which messages count as visible is exactly
what moto decides (`now > visible_at` and not `now < delayed_until`).

Used by scripts/moto.sh; arguments are moto_server's own.
"""

import sys

from moto.core.utils import unix_time_millis
from moto.sqs import models


def _visible_messages(self):
    now = unix_time_millis()
    return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]


models.Queue.messages = property(_visible_messages)

from moto.server import main  # noqa: E402  (after the patch, like moto_server's own entry point)

if __name__ == "__main__":
    sys.exit(main())
