"""One process of a paced fleet.

``python -m tests.paced_client URL STORAGE LIMIT PERIOD THREADS CALLS``:

Each of ``THREADS`` threads sends ``CALLS`` GETs to ``URL`` through a session
whose adapter shares the rate limit ``LIMIT`` per ``PERIOD`` seconds in
``STORAGE``. Prints the statuses it got, as JSON, on one line.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import requests

import requests_bloxs_errors as rbe


def main(argv: list[str]) -> int:
    url, storage, limit, period, threads, calls = argv
    session = requests.Session()
    rate = rbe.RateLimit({"*": (int(limit), float(period))}, storage=storage, max_wait=120)
    rbe.mount(session, "http://", rate_limit=rate, pool_maxsize=int(threads), max_retries=0)

    def worker(_: int) -> list[int]:
        return [session.get(url, timeout=30).status_code for _ in range(int(calls))]

    with ThreadPoolExecutor(int(threads)) as pool:
        statuses = [s for batch in pool.map(worker, range(int(threads))) for s in batch]
    print(json.dumps(statuses))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
