"""One process of a fleet sharing a token cache.

``python -m tests.token_client SIM_URL API_KEY API_SECRET CACHE THREADS START_AT``:
at ``START_AT`` (Unix time) ``THREADS`` threads each GET the complexes through a
session signed by ``BloxsTokenAuth(..., cache=CACHE)`` and the process prints
their statuses as one JSON line. Then, for every ``go`` line on stdin, it does
that again; ``exit`` (or the end of stdin) ends it.

``python -m tests.token_client --hold CACHE KEY LOCK_TTL``: a credential whose
fetch never returns; it prints ``fetching`` once it holds the cache's lock.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.credentials import tokencache
from requests_bloxs_errors.simulator import COMPLEXES


def fleet(*arguments: str) -> int:
    sim_url, key, secret, cache, threads, start_at = arguments
    session = requests.Session()
    auth = rbe.BloxsTokenAuth(sim_url, key, secret, cache=cache)
    rbe.mount(session, sim_url + "/", auth=auth, pool_maxsize=int(threads))

    def call(_: int) -> int:
        return session.get(sim_url + COMPLEXES, timeout=30).status_code

    time.sleep(max(0.0, float(start_at) - time.time()))
    with ThreadPoolExecutor(int(threads)) as pool:
        while True:
            print(json.dumps(list(pool.map(call, range(int(threads))))), flush=True)
            if sys.stdin.readline().strip() != "go":
                return 0


def hold(cache: str, key: str, lock_ttl: str) -> int:
    tokencache.LOCK_TTL = float(lock_ttl)

    def fetch_forever() -> str:
        print("fetching", flush=True)
        time.sleep(3600)
        return "never"

    auth = rbe.TokenAuth(fetch_forever, cache=cache, cache_key=key)
    auth(requests.Request("GET", "http://127.0.0.1/").prepare())
    return 1


if __name__ == "__main__":
    arguments = sys.argv[1:]
    sys.exit(hold(*arguments[1:]) if arguments[0] == "--hold" else fleet(*arguments))
