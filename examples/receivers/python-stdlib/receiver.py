#!/usr/bin/env python3
"""A hookrelay webhook receiver with nothing but Python's standard library.

Run it:
    WEBHOOK_SECRET='whsec_...' PORT=8000 python3 examples/receivers/python-stdlib/receiver.py

WEBHOOK_SECRET is exactly the `secret` given to hookrelay for the webhook. PORT=0 picks a
free port; the `listening <port>` line says which. Stdout carries one line per request
(`verified <id> <type>`, `duplicate <id>`, `rejected <reason>`), nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, HTTPServer

# A signature older (or newer) than this is refused, so a captured request cannot be
# replayed later. Standard Webhooks' libraries use the same 5 minutes.
TOLERANCE_SECONDS = 5 * 60

# hookrelay's events are at most 256 KiB; refusing far larger bodies before reading them
# keeps a stranger from filling our memory.
MAX_BODY = 1024 * 1024

# How many webhook-ids we remember. Production keeps them in a database table with a unique
# constraint, or in Redis (SET NX with a TTL). The TTL must exceed the timestamp tolerance,
# or a captured request could be replayed once its id is forgotten; to also absorb
# hookrelay's retries of a delivery we did process (same id, fresh timestamp), keep ids
# longer than the retry schedule (about 28 hours by default).
SEEN_LIMIT = 100_000


def hmac_key(secret: str) -> bytes:
    """The key hookrelay signs with (contract section 2)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    return secret.encode()


def verify(key: bytes, headers, body: bytes, now: float) -> str | None:
    """None when the request is authentic and fresh, else a short reason."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        return "missing required headers"
    # Digits only: int() would also take "+1_700_000_000", a string the sender never signed.
    if not (timestamp.isascii() and timestamp.isdigit()):
        return "invalid signature headers"
    if now - int(timestamp) > TOLERANCE_SECONDS:
        return "message timestamp too old"
    if int(timestamp) - now > TOLERANCE_SECONDS:
        return "message timestamp too new"

    # The id and the timestamp are inside the signed bytes, so neither can be swapped
    # for another request's; the body is hashed exactly as received.
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    # During a secret rotation hookrelay sends one `v1,<sig>` per valid secret, separated
    # by spaces; any one of them matching is enough. Unknown versions are skipped.
    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        # compare_digest takes the same time wherever the first difference is, so the
        # answer's timing does not reveal how much of a forged signature was right.
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return None
    return "no matching signature found"


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
    key: bytes
    seen: SeenIds

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return self.reject(413, "body too large")
        body = self.rfile.read(length)
        reason = verify(self.key, self.headers, body, time.time())
        if reason:
            return self.reject(400, reason)
        try:
            event_type = json.loads(body)["type"]
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
    Handler.key = hmac_key(secret)
    Handler.seen = SeenIds(SEEN_LIMIT)
    server = HTTPServer(("127.0.0.1", port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
