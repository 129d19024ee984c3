#!/usr/bin/env python3
"""A hookrelay webhook receiver that verifies with the `standardwebhooks` library.

Run it:
    pip install -r examples/receivers/python/requirements.txt
    WEBHOOK_SECRET='whsec_...' PORT=8000 python3 examples/receivers/python/receiver.py

WEBHOOK_SECRET is exactly the `secret` given to hookrelay for the webhook. PORT=0 picks a
free port; the `listening <port>` line says which. Stdout carries one line per request
(`verified <id> <type>`, `duplicate <id>`, `rejected <reason>`), nothing else.
"""

import json
import os
import sys
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

# hookrelay's events are at most 256 KiB; refusing far larger bodies before reading them
# keeps a stranger from filling our memory.
MAX_BODY = 1024 * 1024

# How many webhook-ids we remember. Production keeps them in a database table with a unique
# constraint, or in Redis (SET NX with a TTL). The TTL must exceed the 5-minute timestamp
# tolerance, or a captured request could be replayed once its id is forgotten; to also
# absorb hookrelay's retries of a delivery we did process (same id, fresh timestamp), keep
# ids longer than the retry schedule (about 28 hours by default).
SEEN_LIMIT = 100_000


def make_verifier(secret: str) -> Webhook:
    # hookrelay keys the HMAC with the base64 decoding of what follows `whsec_`, and with a
    # plain secret's own UTF-8 bytes. The library base64-decodes any *str* it is given, so a
    # plain secret must reach it as bytes, which it uses as the key unchanged.
    if secret.startswith("whsec_"):
        return Webhook(secret)
    return Webhook(secret.encode())


class SeenIds:
    """A bounded set of webhook-ids: the oldest is forgotten first."""

    def __init__(self, limit: int):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._ids

    def add(self, msg_id: str) -> None:
        self._ids[msg_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)


class Handler(BaseHTTPRequestHandler):
    verifier: Webhook
    seen: SeenIds

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return self.reject(413, "body too large")
        # Verify the exact bytes received: re-serialised JSON would not match the signature.
        body = self.rfile.read(length)
        try:
            # Checks webhook-timestamp against now (5 minutes either way), then every
            # space-separated `v1,` signature (two during a secret rotation).
            self.verifier.verify(body, dict(self.headers), json_parse=False)
        except WebhookVerificationError as e:
            return self.reject(400, str(e).lower())
        except ValueError:
            # The library raises plain ValueError for a malformed signature (no comma, bad
            # base64): for us it is just another signature that does not match.
            return self.reject(400, "no matching signature found")
        try:
            event = json.loads(body)
            event_type = event["type"]
        except (ValueError, TypeError, KeyError):
            return self.reject(400, "body is not a hookrelay event")

        # Dedupe only after verifying, so that forged requests cannot plant ids. One request
        # at a time (HTTPServer is not threaded), so check-then-add needs no lock here.
        msg_id = self.headers["webhook-id"]
        if msg_id in self.seen:
            # 2xx, not an error: hookrelay retries anything else, and we already have it.
            print(f"duplicate {msg_id}", flush=True)
            return self.answer(204)

        # Real work belongs on a queue: hookrelay waits at most 15 s (by default) for the
        # answer and counts a slow one as failed, then sends the event again.
        print(f"verified {msg_id} {event_type}", flush=True)
        self.seen.add(msg_id)
        self.answer(204)

    def reject(self, status: int, reason: str) -> None:
        print(f"rejected {reason}", flush=True)
        self.answer(status, reason)

    def answer(self, status: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(status)
        if status != 204:
            self.send_header("content-type", "text/plain; charset=utf-8")
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        # Stdout is kept for the one-line results; the access log goes to stderr.
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        sys.exit("WEBHOOK_SECRET is not set")
    port = int(os.environ.get("PORT", "8000"))
    Handler.verifier = make_verifier(secret)
    Handler.seen = SeenIds(SEEN_LIMIT)
    server = HTTPServer(("127.0.0.1", port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
