#!/usr/bin/env python3
"""Publish one event to hookrelay, as an upstream service would, with pika.

Run it:
    pip install -r examples/publishers/python/requirements.txt
    python3 examples/publishers/python/publish.py Contact.created acc_1 '{"name":"Ada"}'

Environment: AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f), HOOKRELAY_NAMESPACE
(default hookrelay), EVENT_ID (default: a new UUID). Prints `published <event id>` once the
broker has confirmed the message; exits non-zero, saying why on stderr, otherwise.
"""

import json
import os
import signal
import sys
import uuid
from datetime import datetime, timezone

import pika
from pika.exceptions import AMQPError, NackError, UnroutableError

# How long the broker may take to connect and confirm before we give up.
TIMEOUT_SECONDS = 10


def on_timeout(signum, frame):
    raise TimeoutError(f"no confirm from the broker within {TIMEOUT_SECONDS} s")


def main() -> int:
    if len(sys.argv) != 4:
        print(f"usage: {sys.argv[0]} <event type> <account id> <data as JSON>", file=sys.stderr)
        return 2
    event_type, account_id, data_arg = sys.argv[1:]
    try:
        data = json.loads(data_arg)
    except ValueError as e:
        print(f"data is not JSON: {e}", file=sys.stderr)
        return 2

    url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    namespace = os.environ.get("HOOKRELAY_NAMESPACE", "hookrelay")
    # A stable id lets a retry of this script (after a crash, or a timeout whose publish did
    # land) be delivered once: hookrelay dedupes on it. Pass your own business key if any.
    event_id = os.environ.get("EVENT_ID") or str(uuid.uuid4())
    body = json.dumps(
        {
            "id": event_id,
            "type": event_type,
            "account_id": account_id,
            "occurred_at": datetime.now(timezone.utc).isoformat(),
            "data": data,
        }
    ).encode()

    # BlockingConnection runs timers only inside process_data_events, so a confirm that
    # never comes would block basic_publish for ever; an alarm bounds the whole exchange.
    signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(TIMEOUT_SECONDS)
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            # With confirms, basic_publish returns only once the broker has taken
            # responsibility for the message (written it to disk, for a persistent one).
            channel.confirm_delivery()
            channel.basic_publish(
                exchange=f"{namespace}.events",
                routing_key=event_type,
                body=body,
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,  # survives a broker restart
                    message_id=event_id,
                ),
                # Without it, a message no queue is bound for is silently dropped; with it,
                # the broker hands it back and pika raises UnroutableError.
                mandatory=True,
            )
        finally:
            if connection.is_open:
                connection.close()
    except UnroutableError:
        print(
            f"returned: no queue is bound to {namespace}.events for {event_type!r} "
            "(has hookrelay ever started with this namespace?)",
            file=sys.stderr,
        )
        return 1
    except NackError:
        print("the broker refused the message (nack)", file=sys.stderr)
        return 1
    except (AMQPError, OSError, TimeoutError) as e:
        # Unknown outcome on a timeout: the message may have landed. Publishing again with
        # the same EVENT_ID is safe, as hookrelay delivers an id once per webhook.
        detail = f"{type(e).__name__}: {e}" if str(e) else repr(e)
        print(f"not published: {detail}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)

    print(f"published {event_id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
