#!/usr/bin/env python3
"""A webhook receiver for the alert end-to-end tests, built on independent implementations:
each delivery's signature is checked by PyPI `standardwebhooks` and its body parsed by the PyPI
`cloudevents` SDK. Appends one JSON line per accepted delivery to --out; answers 401 to a bad
signature. With --hang it accepts connections and never answers.

Usage: alerts_receiver.py --secret whsec_... --addr-file F --out F [--port N] [--hang]
"""

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from cloudevents.http import from_http
except ImportError:  # cloudevents 2.x keeps the 1.x API under `v1`
    from cloudevents.v1.http import from_http
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--addr-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hang", action="store_true")
    # Answers each delivery only after this long, so that firings can outrun deliveries.
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    webhook = Webhook(args.secret)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if args.hang:
                time.sleep(3600)
                return
            time.sleep(args.delay_ms / 1000)
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                webhook.verify(body, headers)
            except WebhookVerificationError as err:
                self.send_response(401)
                self.end_headers()
                print(f"bad signature: {err}", file=sys.stderr)
                return
            event = from_http(headers, body)
            line = {
                "webhook_id": headers["webhook-id"],
                "id": event["id"],
                "type": event["type"],
                "source": event["source"],
                "specversion": event["specversion"],
                "data": event.data,
            }
            with lock:
                with open(args.out, "a") as out:
                    out.write(json.dumps(line) + "\n")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address
    tmp = args.addr_file + ".tmp"
    with open(tmp, "w") as out:
        out.write(f"{host}:{port}\n")
    os.replace(tmp, args.addr_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
