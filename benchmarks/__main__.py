"""Run every benchmark: ``python -m benchmarks`` (``--quick`` for a smoke run).

Alternatives run in the same process run, interleaved in blocks, against
loopback servers in another process. Prints a Markdown table, writes it to
benchmarks/results.md and, with matplotlib installed, benchmarks/results.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

import requests_bloxs_errors as rbe

from .server import Servers

HERE = Path(__file__).resolve().parent


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _session(adapter: HTTPAdapter, headers: dict[str, str] | None = None) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    session.headers.update(headers or {})
    return session


# -- 1. happy path --------------------------------------------------------------


def happy_path(servers: Servers, total: int, block: int = 20) -> list[list[str]]:
    """Per-request cost of each adapter against its baseline.

    Rounds of one short block per alternative, in a shuffled order each
    round; the overhead is the median over rounds of the difference to the
    baseline's block of the same round. Pairing within a round cancels the
    drift of a shared, noisy machine, which a fixed order of long blocks
    turns into a bias of several percent.
    """
    url = servers.url + "/small"
    token = {"Authorization": "Bearer bench-token"}
    alternatives = {
        "HTTPAdapter": _session(HTTPAdapter()),
        "HTTPAdapter + same header": _session(HTTPAdapter(), token),
        "BloxsAdapter": _session(rbe.BloxsAdapter()),
        "BloxsAdapter + auth": _session(
            rbe.BloxsAdapter(prefix=servers.url + "/", auth=rbe.TokenAuth(lambda: "bench-token"))
        ),
    }
    baseline = {
        "HTTPAdapter": "HTTPAdapter",
        "HTTPAdapter + same header": "HTTPAdapter + same header",
        "BloxsAdapter": "HTTPAdapter",
        "BloxsAdapter + auth": "HTTPAdapter + same header",
    }
    wall: dict[str, list[float]] = {name: [] for name in alternatives}
    cpu: dict[str, list[float]] = {name: [] for name in alternatives}
    for session in alternatives.values():  # warm connections and code paths
        for _ in range(50):
            session.get(url)
    order = list(alternatives)
    shuffle = random.Random(1234).shuffle
    for _ in range(total // block):
        shuffle(order)
        for name in order:
            session = alternatives[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(block):
                session.get(url)
            wall[name].append((time.perf_counter() - started) / block * 1e6)
            cpu[name].append((time.process_time() - cpu_started) / block * 1e6)
    rows = []
    for name in alternatives:
        base = baseline[name]
        base_wall, base_cpu = _median(wall[base]), _median(cpu[base])
        extra = _median([a - b for a, b in zip(wall[name], wall[base], strict=False)])
        extra_cpu = _median([a - b for a, b in zip(cpu[name], cpu[base], strict=False)])
        rows.append(
            [
                name,
                f"{_median(wall[name]):.1f}",
                f"{extra:+.1f}",
                f"{(base_wall + extra) / base_wall:.3f}",
                f"{extra_cpu:+.1f}",
                f"{(base_cpu + extra_cpu) / base_cpu:.3f}",
                base,
            ]
        )
    return rows


# -- 2. streaming ---------------------------------------------------------------

_STREAM_CHILD = """
import resource, sys, time, requests
from requests.adapters import HTTPAdapter
import requests_bloxs_errors as rbe
kind, url = sys.argv[1], sys.argv[2]
session = requests.Session()
session.mount("http://", HTTPAdapter() if kind == "HTTPAdapter" else rbe.BloxsAdapter())
started = time.perf_counter()
received = 0
with session.get(url, stream=True, timeout=60) as response:
    for chunk in response.iter_content(1 << 20):
        received += len(chunk)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, received)
"""


def streaming(servers: Servers, trials: int, size: int) -> list[list[str]]:
    results: dict[str, list[tuple[float, int]]] = {"HTTPAdapter": [], "BloxsAdapter": []}
    for _ in range(trials):
        for kind, values in results.items():
            out = subprocess.run(
                [sys.executable, "-c", _STREAM_CHILD, kind, servers.stream_url],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout.split()
            seconds, rss_kib, received = float(out[0]), int(out[1]), int(out[2])
            assert received == size, received
            values.append((seconds, rss_kib))
    rows = []
    base_time = _median([t for t, _ in results["HTTPAdapter"]])
    base_rss = _median([r for _, r in results["HTTPAdapter"]])
    for kind, values in results.items():
        seconds = _median([t for t, _ in values])
        rss = _median([r for _, r in values])
        rows.append(
            [
                kind,
                f"{seconds:.2f}",
                f"{seconds / base_time:.3f}",
                f"{rss / 1024:.1f}",
                f"{rss / base_rss:.3f}",
            ]
        )
    return rows


# -- 3. refresh storm -------------------------------------------------------------


def _fetch_token(url: str) -> Callable[[], tuple[str, float]]:
    def fetch() -> tuple[str, float]:
        answer = requests.post(url + "/token", timeout=10).json()
        return answer["access_token"], float(answer["expires_in"])

    return fetch


def _storm_ours(url: str, threads: int) -> Callable[[], requests.Response]:
    session = requests.Session()
    rbe.mount(session, url + "/", auth=rbe.TokenAuth(_fetch_token(url)), pool_maxsize=threads)
    return lambda: session.get(url + "/data", timeout=30)


def _storm_google(url: str, threads: int) -> Callable[[], requests.Response]:
    from google.auth import credentials as google_credentials
    from google.auth.transport.requests import AuthorizedSession

    fetch = _fetch_token(url)

    class Minimal(google_credentials.Credentials):  # type: ignore[misc]
        def refresh(self, request: Any) -> None:
            self.token, lifetime = fetch()
            self.expiry = datetime.datetime.utcnow() + datetime.timedelta(seconds=lifetime)

    session = AuthorizedSession(Minimal())
    session.mount("http://", HTTPAdapter(pool_maxsize=threads))
    return lambda: session.get(url + "/data", timeout=30)


def _storm_naive(url: str, threads: int) -> Callable[[], requests.Response]:
    fetch = _fetch_token(url)
    session = _session(HTTPAdapter(pool_maxsize=threads))

    def call() -> requests.Response:
        if "Authorization" not in session.headers:
            session.headers["Authorization"] = f"Bearer {fetch()[0]}"
        response = session.get(url + "/data", timeout=30)
        if response.status_code == 401:  # the loop everyone writes first
            session.headers["Authorization"] = f"Bearer {fetch()[0]}"
            response = session.get(url + "/data", timeout=30)
        return response

    return call


def _together(threads: int, call: Callable[[], int]) -> tuple[float, list[int]]:
    """Run ``call`` in ``threads`` threads released at once; return the time and results."""
    barrier = threading.Barrier(threads)
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        value = call()
        with lock:
            results.append(value)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started, results


def refresh_storm(servers: Servers, threads: int, trials: int) -> list[list[str]]:
    makers = {
        "BloxsAdapter + TokenAuth": _storm_ours,
        "google-auth AuthorizedSession": _storm_google,
        "naive refresh-on-401 loop": _storm_naive,
    }
    results: dict[str, list[tuple[int, float, int]]] = {name: [] for name in makers}
    for _ in range(trials):
        for name, make in makers.items():
            servers.control(action="reset")
            call = make(servers.url, threads)
            assert call().status_code == 200  # holds a token now
            servers.control(action="revoke")  # the server drops it: every thread gets 401
            before = servers.control()["token_calls"]
            elapsed, statuses = _together(threads, lambda call=call: call().status_code)
            calls = servers.control()["token_calls"] - before
            results[name].append((calls, elapsed, statuses.count(200)))
    rows = []
    for name, values in results.items():
        rows.append(
            [
                name,
                f"{_median([c for c, _, _ in values]):.0f}",
                f"{min(c for c, _, _ in values)}-{max(c for c, _, _ in values)}",
                f"{_median([t for _, t, _ in values]) * 1000:.0f}",
                f"{min(ok for _, _, ok in values)}/{threads}",
            ]
        )
    return rows


# -- 4. throughput under a quota ----------------------------------------------------


def _calls(session: requests.Session, url: str, count: int) -> int:
    """Send ``count`` GETs; return how many succeeded."""
    return sum(session.get(url, timeout=30).ok for _ in range(count))


def quota_throughput(
    servers: Servers, quota: int, requests_total: int, threads: int
) -> list[list[str]]:
    from requests_ratelimiter import LimiterAdapter

    def retry() -> Retry:
        return Retry(total=10, status_forcelist=[429], backoff_factor=0.1, raise_on_status=False)

    makers: dict[str, Callable[[], HTTPAdapter]] = {
        "HTTPAdapter(Retry(status_forcelist=[429]))": lambda: HTTPAdapter(
            max_retries=retry(), pool_maxsize=threads
        ),
        "requests-ratelimiter (per_second=Q) + Retry": lambda: LimiterAdapter(
            per_second=quota, max_retries=retry(), pool_maxsize=threads
        ),
        "BloxsAdapter(max_retries=10)": lambda: rbe.BloxsAdapter(
            max_retries=10, pool_maxsize=threads
        ),
    }
    rows = []
    for variant in ("retry-after", "none"):
        for name, make in makers.items():
            session = _session(make())
            servers.control(action="quota", quota=quota)
            url = f"{servers.url}/quota?variant={variant}"
            elapsed, successes = _together(
                threads,
                lambda session=session, url=url: _calls(session, url, requests_total // threads),
            )
            ok = sum(successes)
            served = servers.control()["served"]
            label = "with Retry-After" if variant == "retry-after" else "no Retry-After (Bloxs)"
            rows.append(
                [
                    label,
                    name,
                    f"{ok / elapsed / quota:.2f}",
                    str(served["429"]),
                    f"{elapsed:.1f}",
                    str(requests_total - ok),
                ]
            )
    return rows


# -- 5. Retry-After precision ---------------------------------------------------------


def retry_after_precision(servers: Servers, trials: int) -> list[list[str]]:
    session = _session(rbe.BloxsAdapter(max_retry_after=10))
    rows = []
    for wait in (0.2, 1.0, 2.0):
        ids = [f"{wait}-{n}-{time.monotonic_ns()}" for n in range(trials)]
        for key in ids:
            assert session.get(
                servers.url + "/probe", params={"id": key, "wait": f"{wait:g}"}, timeout=10
            ).ok
        gaps = servers.control()["gaps"]
        late = [(gaps[key] - wait) * 1000 for key in ids]
        rows.append(
            [
                f"{wait:g}",
                f"{_median(late):.1f}",
                f"{max(late):.1f}",
                f"{min(late):.1f}",
                str(sum(v < 0 for v in late)),
            ]
        )
    return rows


# -- report ------------------------------------------------------------------------------


def _section(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    return [title, "", _table(header, rows), ""]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _machine() -> str:
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"requests {requests.__version__}, urllib3 {urllib3.__version__}, "
        f"requests-bloxs-errors {rbe.__version__}, {datetime.date.today().isoformat()}"
    )


def _chart(happy: list[list[str]], storm: list[list[str]]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh([r[0] for r in happy], [float(r[1]) for r in happy], color="#4c72b0")
    left.set_xlabel("median µs per keep-alive GET (lower is better)")
    left.set_title("Happy-path cost")
    right.barh([r[0] for r in storm], [float(r[1]) for r in storm], color="#dd8452")
    right.set_xlabel("token-endpoint calls for 64 threads (1 is ideal)")
    right.set_title("Refresh storm")
    figure.tight_layout()
    path = HERE / "results.png"
    figure.savefig(path, dpi=110)
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument(
        "--only",
        default="1,2,3,4,5",
        help="comma-separated scenario numbers, such as 1,5 (a partial run writes no files)",
    )
    args = parser.parse_args()
    try:
        only = {int(part) for part in args.only.split(",") if part.strip()}
    except ValueError:
        parser.error(f"--only takes scenario numbers such as 1,5, not {args.only!r}")
    if not only or not only <= {1, 2, 3, 4, 5}:
        parser.error(f"--only takes scenario numbers from 1 to 5, not {args.only!r}")
    stream_size = (16 if args.quick else 256) * 1024 * 1024
    quota = 200
    scenarios: dict[int, tuple[str, Callable[[Servers], list[list[str]]], str, list[str]]] = {
        1: (
            "happy path",
            lambda s: happy_path(s, 500 if args.quick else 5000),
            f"## 1. Happy-path overhead ({500 if args.quick else 5000:,} keep-alive GETs each, "
            "in blocks of 20, shuffled each round)",
            [
                "adapter",
                "median µs/request",
                "overhead µs",
                "ratio",
                "client CPU overhead µs",
                "CPU ratio",
                "compared with",
            ],
        ),
        2: (
            "streaming",
            lambda s: streaming(s, 1 if args.quick else 3, stream_size),
            f"## 2. Streaming download ({stream_size >> 20} MiB, stream=True, "
            "a fresh process per trial)",
            ["adapter", "median seconds", "time ratio", "peak RSS MiB", "RSS ratio"],
        ),
        3: (
            "refresh storm",
            lambda s: refresh_storm(s, 64, 1 if args.quick else 3),
            "## 3. Refresh storm (64 threads, one Session, the server revokes the token)",
            ["client", "token calls (median)", "range", "ms until all done", "succeeded"],
        ),
        4: (
            "quota throughput",
            lambda s: quota_throughput(s, quota, 400 if args.quick else 2000, 8),
            f"## 4. Throughput under a server quota (Q = {quota} per 1 s window, 8 threads)",
            ["server", "client", "successes/s ÷ Q", "429s sent", "seconds", "failed"],
        ),
        5: (
            "Retry-After precision",
            lambda s: retry_after_precision(s, 2 if args.quick else 5),
            "## 5. Retry-After precision (the delay the server saw, minus the wait it asked for)",
            ["Retry-After s", "median ms late", "max ms late", "min ms late", "early"],
        ),
    }
    servers = Servers(stream_size)
    sections = [f"Machine: {_machine()}", ""]
    results: dict[int, list[list[str]]] = {}
    try:
        for number, (name, run, title, header) in scenarios.items():
            if number in only:
                print(f"{number}/5 {name} ...", file=sys.stderr, flush=True)
                results[number] = run(servers)
                sections += _section(title, header, results[number])
    finally:
        servers.close()
    report = "\n".join(sections)
    print(report)
    if not args.quick and len(results) == len(scenarios):
        (HERE / "results.md").write_text(report + "\n")
        chart = _chart(results[1], results[3])
        if chart:
            print(f"\nchart: {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
