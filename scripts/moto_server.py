"""Start moto_server with three fixes to its SQS model: one for speed, one for a lost message, one
for a FIFO message group handed to two consumers at once.

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

One FIFO group, two consumers: moto's `receive_message` copies the set of message groups in
flight once, when the call starts, and picks messages without a lock. A long poll (the crash
tests wait up to 1 s) that started before another consumer received a group's message still
thinks the group free, and hands out the group's next message too: two processors then work on
one person at once, with no lease lapsing (`crash::sqs_two_processors_...` failed with "1
duplicate writes: no-op role write: PUT /users/41/roles" even with the processors' lease fence).
Real SQS never hands out a group's message while another of the group is in flight. Here each
pass over the messages holds the queue's message lock and reads the groups in flight afresh;
a pass that finds nothing waits outside the lock, as before. Messages of one group may still
come several in one call, as in SQS. `scripts/moto_server_test.py` checks it too.

Used by scripts/moto.sh; arguments are moto_server's own.
"""

import sys

from moto.core.utils import unix_time, unix_time_millis
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


def _receive_message(
    self,
    queue_name,
    count,
    wait_seconds_timeout,
    visibility_timeout,
    message_attribute_names=None,
):
    # moto 5.2.5's `SQSBackend.receive_message`, except that each pass holds the queue's message
    # lock and reads the groups in flight at its start (see the module docs).
    if message_attribute_names is None:
        message_attribute_names = []
    queue = self.get_queue(queue_name)
    result = []
    previous_result_count = 0
    polling_end = unix_time() + wait_seconds_timeout
    while True:
        if result or (wait_seconds_timeout and unix_time() > polling_end):
            break
        messages_to_dlq = []
        with queue._messages_lock:
            for message in queue.messages:
                if message.visible and message in queue.pending_messages:
                    # In flight, but its visibility ended: the consumer timed out.
                    queue.pending_messages.remove(message)
            in_flight_groups = set(queue.pending_message_groups)
            for message in queue.messages:
                if not message.visible:
                    continue
                if message.group_id and queue.fifo_queue and message.group_id in in_flight_groups:
                    continue
                if (
                    queue.dead_letter_queue is not None
                    and queue.redrive_policy
                    and message.approximate_receive_count >= queue.redrive_policy["maxReceiveCount"]
                ):
                    messages_to_dlq.append(message)
                    continue
                queue.pending_messages.add(message)
                message.mark_received(visibility_timeout=visibility_timeout)
                message_copy = models.deepcopy(message)
                models._filter_message_attributes(message_copy, message_attribute_names)
                if not self.is_message_valid_based_on_retention_period(queue_name, message):
                    break
                result.append(message_copy)
                if len(result) >= count:
                    break
            for message in messages_to_dlq:
                queue._messages.remove(message)
        for message in messages_to_dlq:
            queue.dead_letter_queue.add_message(message)
        if previous_result_count == len(result):
            if wait_seconds_timeout == 0:
                break
            queue.wait_for_messages(1)
            continue
        previous_result_count = len(result)
    return result


def patch():
    models.Queue.messages = property(_visible_messages)
    models.Queue.delete_message = _delete_message
    models.SQSBackend.receive_message = _receive_message


patch()

if __name__ == "__main__":
    from moto.server import main  # after the patch, like moto_server's own entry point

    sys.exit(main())
