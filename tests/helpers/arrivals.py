"""A loopback server in a process of its own that records when each request arrived.

``python -m tests.helpers.arrivals``: prints its port on one line and answers
every ``GET`` with ``200 ok`` after stamping its arrival (``time.monotonic()``,
the one clock every process of the host shares, read before it answers).
Each line read from stdin is a number of seconds, the *jitter* from then on:
each request is stamped up to that long (uniformly at random) after it was
read, as if the network had delayed it; the server answers the line with the
arrivals stamped so far, as JSON on one line, and forgets them. Stdin closed:
it exits.

A server in its own process counts as the API does: a client process that a
busy host deschedules does not stop it from stamping arrivals.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def most_in_any(times: list[float], period: float) -> int:
    """The most arrivals in any half-open interval of ``period`` seconds."""
    times = sorted(times)
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= period:
            first += 1
        best = max(best, last - first + 1)
    return best


class Arrivals:
    """The stamps, and the jitter, shared by the server's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.jitter = 0.0

    def stamp(self) -> None:
        if self.jitter:
            time.sleep(random.uniform(0, self.jitter))
        at = time.monotonic()
        with self.lock:
            self.times.append(at)

    def take(self, jitter: float) -> list[float]:
        with self.lock:
            taken, self.times, self.jitter = self.times, [], jitter
        return taken


def main() -> int:
    arrivals = Arrivals()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            arrivals.stamp()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.request_queue_size = 128
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    try:
        for line in sys.stdin:
            print(json.dumps(arrivals.take(float(line))), flush=True)
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
