"""How long a ``deadline=0.5`` call lasts against a server that trickles its response
head one byte every 0.1 s (issue 26, point 8): ``python -m benchmarks.head_trickle [N]``.

Before the deadline covered the response head, each byte restarted the read
timeout and the call lasted as long as the head took to arrive (about 6.8 s
for this 69-byte head); now it ends at the deadline. Prints the median of N
calls (default 5) and each call's outcome.
"""

from __future__ import annotations

import statistics
import sys
import time

import requests
import urllib3

import requests_bloxs_errors as rbe
from tests.helpers.rawserver import RawServer, trickle

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"


def main(calls: int) -> None:
    server = RawServer(trickle(HEAD + b"slow!", 0.1))
    times: list[float] = []
    outcomes: list[object] = []
    try:
        for _ in range(calls):
            with requests.Session() as session:
                rbe.mount(session, "http://", deadline=0.5)
                began = time.monotonic()
                try:
                    outcomes.append(session.get(server.url(), timeout=30).status_code)
                except requests.RequestException as exc:
                    outcomes.append(type(exc).__name__)
                times.append(time.monotonic() - began)
    finally:
        server.close()
    print(
        f"urllib3 {urllib3.__version__}, requests {requests.__version__}: median "
        f"{statistics.median(times):.3f}s of {[round(t, 3) for t in times]}; {outcomes}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
