"""A test Alertmanager webhook receiver: appends every notification as one JSON line."""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

LOG = sys.argv[1]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        notification = json.loads(body)
        with open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(notification) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


HTTPServer(("127.0.0.1", 9999), Receiver).serve_forever()
