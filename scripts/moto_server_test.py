"""Regression tests of scripts/moto_server.py's delete fix (issue 17) and FIFO receive fix.

Forces the interleaving in which moto as shipped loses a message it accepted: a delete is paused
in the middle of rebuilding the queue's message list while another delete and a send complete,
then resumes and writes its list back. With the fix the other delete waits for the first (it
holds the queue's message lock), so the send is kept.

    <moto venv>/bin/python scripts/moto_server_test.py              # must pass
    <moto venv>/bin/python scripts/moto_server_test.py --unpatched  # moto as shipped: both fail

Run by `scripts/moto.sh selftest` (and so by `make test`).
"""

import os
import sys
import threading

UNPATCHED = "--unpatched" in sys.argv
if not UNPATCHED:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moto_server  # noqa: F401  (patches moto's SQS model on import)

from moto.sqs.models import sqs_backends  # noqa: E402

# How long the paused delete lets the other requests try to run. Only the patched run waits for
# all of it (the other delete is blocked); a machine too slow to finish them in time makes the
# unpatched run pass, never the patched one fail.
OTHERS_MAY_RUN = 2.0


class PausingSet(set):
    """The queue's pending set. `delete_message` calls `discard` in the middle of its loop,
    right when it found its message: there it runs `others` on another thread first."""

    def __init__(self, items, others):
        super().__init__(items)
        self.others = others
        self.paused = False

    def discard(self, item):
        if not self.paused:
            self.paused = True
            t = threading.Thread(target=self.others)
            t.start()
            t.join(OTHERS_MAY_RUN)
            self.helper = t
        super().discard(item)


def main():
    backend = sqs_backends["123456789012"]["us-east-1"]
    queue = backend.create_queue("moto-delete-race")
    name = queue.name
    backend.send_message(name, "A")
    backend.send_message(name, "B")
    got = {m.body: m.receipt_handle for m in backend.receive_message(name, 10, 0, 30)}
    assert set(got) == {"A", "B"}, got

    def others():
        backend.delete_message(name, got["A"])  # a second processor's ack
        backend.send_message(name, "Z")  # the publisher

    pending = PausingSet(queue._pending_messages, others)
    queue._pending_messages = pending
    backend.delete_message(name, got["B"])  # paused inside, then finishes
    pending.helper.join()

    left = sorted(m.body for m in queue._messages)
    if left != ["Z"]:
        print(
            f"FAIL: after deleting A and B and sending Z the queue holds {left}, want ['Z'] "
            "(a delete overwrote the send and undid the other delete)"
        )
        return 1
    print("ok: concurrent deletes and a send keep the sent message")
    return 0


def fifo_group():
    """Consumer B's long poll starts while group G is free and nothing is queued, and wakes up
    only after G's first message was sent and received by consumer A. G's second message must
    not go to B while the first is in flight. moto as shipped decides from the groups in flight
    when B's call started, and hands it out."""
    backend = sqs_backends["123456789012"]["us-east-1"]
    queue = backend.create_queue(
        "moto-fifo-group.fifo", FifoQueue="true", ContentBasedDeduplication="true"
    )
    name = queue.name
    b_waiting = threading.Event()
    a_received = threading.Event()

    def wait_for_messages(timeout):
        # B's long poll waits here: until A has received (then it passes again at once).
        b_waiting.set()
        a_received.wait(5)

    queue.wait_for_messages = wait_for_messages
    got_b = []
    b = threading.Thread(target=lambda: got_b.extend(backend.receive_message(name, 10, 2, 30)))
    b.start()
    b_waiting.wait(5)
    backend.send_message(name, "g1", group_id="G", deduplication_id="g1")
    backend.send_message(name, "g2", group_id="G", deduplication_id="g2")
    got_a = [m.body for m in backend.receive_message(name, 1, 0, 30)]
    assert got_a == ["g1"], got_a
    a_received.set()
    b.join()
    if got_b:
        print(
            f"FAIL: consumer B received {[m.body for m in got_b]} of group G while A held g1 "
            "(a long poll used the groups in flight when it started)"
        )
        return 1
    print("ok: a FIFO group's next message is not handed out while one is in flight")
    return 0


if __name__ == "__main__":
    sys.exit(max(main(), fifo_group()))
