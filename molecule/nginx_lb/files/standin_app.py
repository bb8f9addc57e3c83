"""Stand-in for one Gunicorn slot of the app (Molecule test scaffolding for nginx_lb only).

Answers every path with 200 and a JSON body describing the request (so tests can see the headers
the load balancer sent), sets X-App-Version, and answers /healthz like the real app:
{"status": "ok", "version": "..."}. HTTP/1.1 with keep-alive, like Gunicorn behind nginx.

    standin_app.py PORT VERSION
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True
    version = "unknown"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.split("?")[0] == "/healthz":
            body = {"status": "ok", "version": self.version}
        else:
            body = {
                "version": self.version,
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
            }
        data = (json.dumps(body) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-App-Version", self.version)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _answer

    def log_message(self, format, *args):
        pass


def main():
    port, version = int(sys.argv[1]), sys.argv[2]
    Handler.version = version
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - the LB connects
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
