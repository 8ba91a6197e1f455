"""What one permit costs each store, and what a wait costs it (issue 28):
``python -m benchmarks.permit_cost [PERMITS] [ROUNDS]``.

A permit here is the store's whole part in one call: ``acquire`` then
``finish``, under a rule that never makes it wait (10,000 per second, on one
key), on ``memory://``, an SQLite file and a ``redis-server`` started on a free
loopback port (its row is left out when there is none). Since issue 28 every
permit records its holder (host and pid) and whether it was sent; run it
against the code before (``PYTHONPATH`` at an export of an earlier commit)
and after to see what that costs. Prints the median of ``ROUNDS`` rounds, in
microseconds per permit.

A wait costs one more store operation per :data:`~requests_bloxs_errors.storage.WAIT_RENEW`
seconds it lasts (the renewal that keeps a waiting reservation): that is
counted, not timed, by the tests.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from requests_bloxs_errors.storage import parse
from requests_bloxs_errors.storage.memory import MemoryBackend
from requests_bloxs_errors.storage.sqlite import SQLiteBackend

KEY = "https://api.example:443|get"
RULE = (10_000, 1.0)


@contextmanager
def _redis() -> Iterator[Any]:
    if shutil.which("redis-server") is None:
        yield None
        return
    import socket
    import subprocess

    from requests_bloxs_errors.storage.redis import RedisBackend

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        backend = RedisBackend(parse(f"redis://127.0.0.1:{port}/0"))
        for _ in range(100):
            try:
                backend.snapshot()
                break
            except Exception:
                time.sleep(0.05)
        yield backend
        backend.close()
    finally:
        server.terminate()
        server.wait()


def _round(store: Any, permits: int) -> float:
    began = time.perf_counter()
    for _ in range(permits):
        grant = store.acquire(KEY, RULE, 60)
        store.finish(KEY, grant.stamp)
    return (time.perf_counter() - began) / permits * 1e6


def main(permits: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder, _redis() as redis:
        stores: dict[str, Callable[[], Any]] = {
            "memory://": MemoryBackend,
            "sqlite": lambda: SQLiteBackend(parse(f"sqlite:///{folder}/permits.db")),
        }
        opened = {name: make() for name, make in stores.items()}
        if redis is not None:
            opened["redis"] = redis
        times: dict[str, list[float]] = {name: [] for name in opened}
        for _ in range(rounds):  # interleaved: the host's noise falls on every store alike
            for name, store in opened.items():
                times[name].append(_round(store, permits))
        for name, found in times.items():
            print(f"{name:10} {statistics.median(found):8.1f} us per permit (median of {rounds})")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 2_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 7,
    )
