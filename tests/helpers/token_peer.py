"""Another process that reads a shared token cache.

``python -m tests.helpers.token_peer CACHE KEY...``: for each ``KEY`` (a
``TokenAuth`` ``cache_key``), the token the cache ``CACHE`` gives it, as one
JSON object ``{key: token}``; ``"fetched-by-the-peer"`` when the cache held none.
"""

from __future__ import annotations

import json
import sys

import requests_bloxs_errors as rbe

#: What the peer fetches itself when the cache holds no token for a key.
OWN = "fetched-by-the-peer"


def main(cache: str, *keys: str) -> int:
    found = {}
    for key in keys:
        auth = rbe.TokenAuth(lambda: (OWN, 900.0), cache=cache, cache_key=key)
        found[key] = auth.current()[0]
        if auth.cache is not None:
            auth.cache.close()
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
