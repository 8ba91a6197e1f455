"""The clients of the refresh storm, and one process of its fleet.

Scenario 3 builds its clients here; its multi-process part runs this module
as each of its processes::

    python -m benchmarks.storm KIND URL THREADS CACHE ROUNDS

KIND is one of :data:`KINDS`; CACHE is ``none`` or the token cache's URL
(``sqlite:///...``, ``redis://...``; for ``ours`` only). The process builds
its client and prints ``ready``. Then, ROUNDS times: it starts ``THREADS``
threads, waits for a line on stdin (the parent releases every process at
once), lets every thread send one GET to ``/data`` at once, and prints one
JSON line: the calls that ended 200, the others (an exception counts), when
it started and finished (``time.monotonic()``, one clock for every process
of the host), and how many WARNINGs the library has logged so far (a token
cache that failed, and left the process fetching its own).
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter

import requests_bloxs_errors as rbe

from .quota import call_all

#: The key every process of the benchmark's credential shares (names and seals its cache entry).
CACHE_KEY = "benchmark-storm-shared-secret"


def fetch_token(url: str) -> Callable[[], tuple[str, float]]:
    """POST to the benchmark server's ``/token``: ``(token, lifetime)``."""

    def fetch() -> tuple[str, float]:
        answer = requests.post(url + "/token", timeout=10).json()
        return answer["access_token"], float(answer["expires_in"])

    return fetch


def ours(url: str, threads: int, cache: str | None = None) -> Callable[[], requests.Response]:
    """``BloxsAdapter`` + ``TokenAuth``, with the shared token ``cache`` or none."""
    auth = rbe.TokenAuth(fetch_token(url), cache=cache, cache_key=CACHE_KEY if cache else None)
    session = requests.Session()
    rbe.mount(session, url + "/", auth=auth, pool_maxsize=threads)
    return lambda: session.get(url + "/data", timeout=30)


def google(url: str, threads: int, cache: str | None = None) -> Callable[[], requests.Response]:
    """google-auth's ``AuthorizedSession`` with minimal credentials from ``/token``."""
    from google.auth import credentials as google_credentials
    from google.auth.transport.requests import AuthorizedSession

    fetch = fetch_token(url)

    class Minimal(google_credentials.Credentials):  # type: ignore[misc]
        def refresh(self, request: Any) -> None:
            self.token, lifetime = fetch()
            self.expiry = datetime.datetime.utcnow() + datetime.timedelta(seconds=lifetime)

    session = AuthorizedSession(Minimal())
    session.mount("http://", HTTPAdapter(pool_maxsize=threads))
    return lambda: session.get(url + "/data", timeout=30)


def naive(url: str, threads: int, cache: str | None = None) -> Callable[[], requests.Response]:
    """The loop everyone writes first: fetch when there is no token, and again after a 401."""
    fetch = fetch_token(url)
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=threads))

    def call() -> requests.Response:
        if "Authorization" not in session.headers:
            session.headers["Authorization"] = f"Bearer {fetch()[0]}"
        response = session.get(url + "/data", timeout=30)
        if response.status_code == 401:
            session.headers["Authorization"] = f"Bearer {fetch()[0]}"
            response = session.get(url + "/data", timeout=30)
        return response

    return call


#: Client kinds of the fleet: their makers, each ``(url, threads, cache) -> call``.
KINDS: dict[str, Callable[[str, int, str | None], Callable[[], requests.Response]]] = {
    "ours": ours,
    "google": google,
    "naive": naive,
}


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def main(argv: list[str]) -> int:
    kind, url, threads, cache, rounds = argv
    call = KINDS[kind](url, int(threads), None if cache == "none" else cache)
    warnings = _Count()
    logging.getLogger("requests_bloxs_errors").addHandler(warnings)
    print("ready", flush=True)

    def go() -> None:
        sys.stdin.readline()

    for _ in range(int(rounds)):
        started, done, ok, failed = call_all(lambda: call().status_code == 200, int(threads), 1, go)
        result = {"started": started, "done": done, "ok": ok, "failed": failed}
        print(json.dumps({**result, "warnings": warnings.count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
