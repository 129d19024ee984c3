#!/usr/bin/env python3
"""A webhook receiver for trying hookrelay by hand: prints every request and answers 200.

    python3 scripts/receiver.py [port]     (default 9000)
"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        print(f"--- {self.command} {self.path}")
        for name, value in self.headers.items():
            print(f"{name}: {value}")
        print(body.decode("utf-8", "replace"), flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
print(f"listening on http://127.0.0.1:{port}", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
