#!/usr/bin/env python3
"""A webhook receiver for rekeyd's black-box tests (tests/notify.rs).

It checks every delivery's signature with the reference Standard Webhooks verifier (the
`standardwebhooks` package, not rekeyd's code), answers as a JSON script tells it, and
appends one JSON line per request to a log the Rust test reads.

    webhook_receiver.py --port 0 --log requests.jsonl --script script.json \
        --key whsec_... [--key whsec_...]

Prints "PORT <n>" once it listens. The script is re-read on every request, so a test can
change the answers while rekeyd runs:

    {"rules": [{"type": "secret.rotated", "times": 2, "status": 500},
               {"path": "/slow", "delay_ms": 2000, "status": 200},
               {"status": 429, "retry_after": "1", "times": 1}],
     "default": {"status": 200}}

A rule matches on `path` and `type` (the event type) when given; `times` limits how many
requests it answers. Each log line: n, at (unix seconds), path, id, timestamp, signature,
type, verified (one bool per --key, in order), body (raw), status, delay_ms.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    sys.stderr.write(
        "webhook_receiver: the standardwebhooks package is not installed; "
        "install it with: pip install standardwebhooks\n"
    )
    sys.exit(3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--script", required=True)
    parser.add_argument("--key", action="append", default=[])
    args = parser.parse_args()

    verifiers = [Webhook(key) for key in args.key]
    lock = threading.Lock()
    used = {}
    count = [0]

    def load_script():
        try:
            with open(args.script) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def choose(path, kind):
        script = load_script()
        for rule in script.get("rules", []):
            if "path" in rule and rule["path"] != path:
                continue
            if "type" in rule and rule["type"] != kind:
                continue
            key = json.dumps(rule, sort_keys=True)
            if "times" in rule and used.get(key, 0) >= rule["times"]:
                continue
            used[key] = used.get(key, 0) + 1
            return rule
        return script.get("default", {"status": 200})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            body = raw.decode("utf-8", errors="replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = []
            for verifier in verifiers:
                try:
                    verifier.verify(body, headers)
                    verified.append(True)
                except (WebhookVerificationError, ValueError, TypeError):
                    verified.append(False)
            try:
                kind = json.loads(body).get("type")
            except ValueError:
                kind = None
            with lock:
                count[0] += 1
                rule = choose(self.path, kind)
                record = {
                    "n": count[0],
                    "at": time.time(),
                    "path": self.path,
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "signature": headers.get("webhook-signature"),
                    "content_type": headers.get("content-type"),
                    "type": kind,
                    "verified": verified,
                    "body": body,
                    "status": rule.get("status", 200),
                    "delay_ms": rule.get("delay_ms", 0),
                }
                with open(args.log, "a") as log:
                    log.write(json.dumps(record) + "\n")
            if record["delay_ms"]:
                time.sleep(record["delay_ms"] / 1000.0)
            try:
                self.send_response(record["status"])
                if "retry_after" in rule:
                    self.send_header("Retry-After", str(rule["retry_after"]))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
