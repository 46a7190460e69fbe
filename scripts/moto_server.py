"""Start moto_server with two fixes to its SQS model: one for speed, one for a lost message.

Speed (same behaviour): moto (5.2.5) decides which messages of a queue are visible by calling
`unix_time_millis()` twice per message (each a few datetime conversions) on every receive, depth
query and long-poll wake-up. With thousands of messages queued (the crash test queues 10,000)
that made every request take tens of milliseconds of CPU and the test run for over half an hour.
This launcher reads the clock once per call and compares numbers; which messages count as visible
is exactly what moto decides (`now > visible_at` and not `now < delayed_until`).

Lost messages (issue 17): moto_server answers each request on its own thread, and
`Queue.delete_message` rebuilds the message list and assigns it back without a lock
(read-modify-write). Two deletes at once (two processors acking) plus a send in between: the
second delete's list was built from the list before the send and overwrites it, so a message
SQS had accepted (`SendMessageBatch` answered success) is gone — never received, never
dead-lettered — and the delete undone by the first one comes back. Real SQS does neither. Here
a delete holds the queue's own message lock, the one `add_message` appends under, so deletes and
sends happen one after another. `scripts/moto_server_test.py` forces that interleaving.

Used by scripts/moto.sh; arguments are moto_server's own.
"""

import sys

from moto.core.utils import unix_time_millis
from moto.sqs import models


def _visible_messages(self):
    now = unix_time_millis()
    return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]


_unlocked_delete_message = models.Queue.delete_message


def _delete_message(self, receipt_handle):
    # `_messages_lock` is a Condition over an RLock: `add_message` appends under it and
    # `wait_for_messages` releases it while it waits, so holding it here blocks nobody for long.
    with self._messages_lock:
        return _unlocked_delete_message(self, receipt_handle)


def patch():
    models.Queue.messages = property(_visible_messages)
    models.Queue.delete_message = _delete_message


patch()

if __name__ == "__main__":
    from moto.server import main  # after the patch, like moto_server's own entry point

    sys.exit(main())
