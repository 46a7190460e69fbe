#!/usr/bin/env python3
"""Send EventBridge events to an SQS queue the way EventBridge does: the event JSON, verbatim, as
the message body.

    scripts/send-eventbridge.py QUEUE_URL FIXTURE...

Each FIXTURE file's bytes are sent unchanged with boto3's `send_message` (one message per file,
in order; a file that is not JSON is sent too, as malformed input). The endpoint, region and
credentials come from boto3's usual environment: `AWS_ENDPOINT_URL` (moto, e.g.
http://127.0.0.1:5000), `AWS_REGION` / `AWS_DEFAULT_REGION` (default us-east-1),
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`. FIFO queues (URL ending in `.fifo`) get a message
group (the event's `detail.userIdentity.accountId`, else "eventbridge") and a deduplication id (the
event's `id`, else a hash of the body).

Prints one line per message: `sent FIXTURE MESSAGE_ID`. Exit status 2 on usage errors, 1 when a
send fails.
"""

import hashlib
import json
import os
import sys

import boto3


def group_and_dedup(body):
    try:
        event = json.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        event = {}
    identity = (event.get("detail") or {}).get("userIdentity") or {}
    group = identity.get("accountId") or event.get("account") or "eventbridge"
    dedup = event.get("id") or hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()
    return str(group), str(dedup)


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    queue_url, fixtures = argv[1], argv[2:]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    sqs = boto3.client("sqs", region_name=region)
    fifo = queue_url.endswith(".fifo")
    for path in fixtures:
        with open(path, "rb") as f:
            body = f.read().decode("utf-8", "surrogateescape")
        args = {"QueueUrl": queue_url, "MessageBody": body}
        if fifo:
            args["MessageGroupId"], args["MessageDeduplicationId"] = group_and_dedup(body)
        try:
            out = sqs.send_message(**args)
        except Exception as e:  # boto3 raises several unrelated exception types
            print(f"send-eventbridge: cannot send {path}: {e}", file=sys.stderr)
            return 1
        print(f"sent {path} {out['MessageId']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
