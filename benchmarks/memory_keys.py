"""The ``memory://`` store's cost per permit as the number of keys grows (issue 26,
point 11): ``python -m benchmarks.memory_keys [TOTAL] [BLOCK]``.

Each permit (acquire, then finish) is for a new key under a rule of 5 per
60 s, so every key stays live for the whole run: the worst case for
forgetting what has ended. Prints microseconds per permit for each block of
keys; a store whose cleanup is amortized O(1) keeps them flat.
"""

from __future__ import annotations

import sys
import time

from requests_bloxs_errors.storage.memory import MemoryBackend


def main(total: int, block: int) -> None:
    store = MemoryBackend()
    rule = (5, 60.0)
    for start in range(0, total, block):
        began = time.perf_counter()
        for n in range(start, start + block):
            key = f"https://api.example:443|GET /api/rest/v4/entry/{n}"
            grant = store.acquire(key, rule, 60)
            store.finish(key, grant.stamp)
        took = time.perf_counter() - began
        print(
            f"keys {start:>7,} to {start + block:>7,}: {took / block * 1e6:9.1f} us per permit "
            f"({took:.2f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 10_000,
    )
