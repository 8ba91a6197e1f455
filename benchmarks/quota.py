"""The clients of the quota scenarios, and one process of a fleet.

Scenario 4 builds its clients here; scenario 6 runs this module as each of
its processes::

    python -m benchmarks.quota KIND URL QUOTA THREADS CALLS STORAGE NAMESPACE

The process builds the client, opens its store, prints ``ready``, waits for a
line on stdin (the parent releases every process at once), sends ``CALLS``
GETs from each of ``THREADS`` threads, and prints one JSON line: successes,
failures, when it started and finished (``time.monotonic()``, one clock for
every process of the host), and how many times its store failed over to
in-process pacing. The refresh storm's processes (:mod:`benchmarks.storm`)
send their calls with :func:`call_all` too.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

import requests_bloxs_errors as rbe

#: Client kinds: the label each gets in the tables.
KINDS = {
    "plain": "HTTPAdapter(Retry(status_forcelist=[429]))",
    "ratelimiter": "requests-ratelimiter (per_second=Q) + Retry",
    "bloxs": "BloxsAdapter(max_retries=10)",
    "limit": "BloxsAdapter + RateLimit({'*': (Q, 1.0)})",
}


def _retry() -> Retry:
    return Retry(total=10, status_forcelist=[429], backoff_factor=0.1, raise_on_status=False)


def adapter(
    kind: str, quota: int, threads: int, storage: str = "memory://", namespace: str | None = None
) -> HTTPAdapter:
    """A fresh adapter of ``kind`` (see :data:`KINDS`) for ``threads`` threads."""
    if kind == "plain":
        return HTTPAdapter(max_retries=_retry(), pool_maxsize=threads)
    if kind == "ratelimiter":
        from requests_ratelimiter import LimiterAdapter

        return LimiterAdapter(per_second=quota, max_retries=_retry(), pool_maxsize=threads)
    if kind == "bloxs":
        return rbe.BloxsAdapter(max_retries=10, pool_maxsize=threads)
    if kind == "limit":
        limit = rbe.RateLimit({"*": (quota, 1.0)}, storage=storage, namespace=namespace)
        return rbe.BloxsAdapter(rate_limit=limit, max_retries=10, pool_maxsize=threads)
    raise ValueError(f"unknown client kind {kind!r}")


def open_store(adapter: HTTPAdapter) -> None:
    """Connect the adapter's permit store now, so that the timed run does not."""
    limit = getattr(adapter, "rate_limit", None)
    if limit is not None:
        limit.store.acquire("benchmark-warm-up", None, 0.0)  # no rule: reads, reserves nothing


def send_all(
    session: requests.Session, url: str, threads: int, calls: int, go: Callable[[], None]
) -> tuple[float, float, int, int]:
    """``calls`` GETs from each of ``threads`` threads, released together after ``go()``.

    :return: ``(started, done, successes, failures)``; the times are
        ``time.monotonic()``; an exception counts as a failure.
    """
    return call_all(lambda: session.get(url, timeout=30).ok, threads, calls, go)


def call_all(
    call: Callable[[], bool], threads: int, calls: int, go: Callable[[], None]
) -> tuple[float, float, int, int]:
    """``calls`` calls of ``call`` (True: a success) from each of ``threads``
    threads, started first and released together after ``go()``.

    :return: as :func:`send_all`.
    """
    barrier = threading.Barrier(threads + 1)
    lock = threading.Lock()
    counts = [0, 0]

    def worker() -> None:
        ok = failed = 0
        barrier.wait()
        for _ in range(calls):
            try:
                if call():
                    ok += 1
                else:
                    failed += 1
            except Exception:
                failed += 1
        with lock:
            counts[0] += ok
            counts[1] += failed

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    go()
    started = time.monotonic()
    barrier.wait()
    for thread in pool:
        thread.join()
    return started, time.monotonic(), counts[0], counts[1]


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "storage" in record.getMessage():
            self.count += 1


def main(argv: list[str]) -> int:
    kind, url, quota, threads, calls, storage, namespace = argv
    session = requests.Session()
    mounted = adapter(kind, int(quota), int(threads), storage, namespace)
    session.mount("http://", mounted)
    open_store(mounted)
    fallbacks = _Count()
    logging.getLogger("requests_bloxs_errors").addHandler(fallbacks)
    print("ready", flush=True)

    def go() -> None:
        sys.stdin.readline()

    started, done, ok, failed = send_all(session, url, int(threads), int(calls), go)
    print(
        json.dumps(
            {
                "started": started,
                "done": done,
                "ok": ok,
                "failed": failed,
                "fallbacks": fallbacks.count,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
