"""Regression test of scripts/moto_server.py's delete fix (issue 17).

Forces the interleaving in which moto as shipped loses a message it accepted: a delete is paused
in the middle of rebuilding the queue's message list while another delete and a send complete,
then resumes and writes its list back. With the fix the other delete waits for the first (it
holds the queue's message lock), so the send is kept.

    <moto venv>/bin/python scripts/moto_server_test.py              # must pass
    <moto venv>/bin/python scripts/moto_server_test.py --unpatched  # moto as shipped: must fail

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


if __name__ == "__main__":
    sys.exit(main())
