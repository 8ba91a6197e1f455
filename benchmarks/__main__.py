"""Run every benchmark: ``python -m benchmarks`` (``--quick`` for a smoke run).

Alternatives run in the same process run, interleaved in blocks, against
loopback servers in another process (and, for the shared stores of the
token cache and the rate limiter, a ``redis-server`` on loopback); the
fleets run their clients in processes of their own. Prints a Markdown
table, writes it to benchmarks/results.md and, with matplotlib installed,
benchmarks/results.png.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter

import requests_bloxs_errors as rbe

from . import quota as quota_clients
from . import storm as storm_clients
from .server import RedisServer, Servers

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
        "BloxsAdapter, telemetry=False": _session(rbe.BloxsAdapter(telemetry=False)),
        # the same again: what two identical adapters differ by is this method's noise
        NOISE_ROW: _session(rbe.BloxsAdapter(telemetry=False)),
    }
    baseline = {
        "HTTPAdapter": "HTTPAdapter",
        "HTTPAdapter + same header": "HTTPAdapter + same header",
        "BloxsAdapter": "HTTPAdapter",
        "BloxsAdapter + auth": "HTTPAdapter + same header",
        "BloxsAdapter, telemetry=False": "HTTPAdapter",
        # the same adapter as "BloxsAdapter": with opentelemetry-api installed and no
        # SDK configured, against the one that has telemetry off
        TELEMETRY_ROW: "BloxsAdapter, telemetry=False",
        NOISE_ROW: "BloxsAdapter, telemetry=False",
    }
    if importlib.util.find_spec("opentelemetry.trace") is None:
        del alternatives["BloxsAdapter, telemetry=False"], alternatives[NOISE_ROW]
        del baseline["BloxsAdapter, telemetry=False"], baseline[TELEMETRY_ROW]
        del baseline[NOISE_ROW]
    for session in alternatives.values():  # warm connections and code paths
        for _ in range(50):
            session.get(url)
    times = _paired_blocks(
        {name: lambda session=session: session.get(url) for name, session in alternatives.items()},
        total,
        block,
    )
    wall = {name: walls for name, (walls, _) in times.items()}
    cpu = {name: cpus for name, (_, cpus) in times.items()}
    if TELEMETRY_ROW in baseline:
        wall[TELEMETRY_ROW], cpu[TELEMETRY_ROW] = wall["BloxsAdapter"], cpu["BloxsAdapter"]
    return _rows(wall, cpu, baseline)


#: Scenario 1's row for the cost of telemetry while no SDK is configured.
TELEMETRY_ROW = "BloxsAdapter, OpenTelemetry API without SDK"
#: Scenario 1's A/A row: a second adapter identical to its baseline.
NOISE_ROW = "BloxsAdapter, telemetry=False, a second one (noise)"


def _rows(
    wall: dict[str, list[float]], cpu: dict[str, list[float]], baseline: dict[str, str]
) -> list[list[str]]:
    """One row per alternative: its median, and its overhead over its baseline's
    block of the same round."""
    rows = []
    for name, base in baseline.items():
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


def telemetry_cost(servers: Servers, total: int) -> list[list[str]]:
    """Scenario 1b: the adapter reporting to an SDK, in a process of its own
    (:mod:`benchmarks.telemetry`), against the same adapter with telemetry off."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        return [["not run: opentelemetry-sdk is not installed", *["n/a"] * 6]]
    finished = subprocess.run(
        [sys.executable, "-m", "benchmarks.telemetry", servers.url + "/small", str(total)],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result = json.loads(finished.stdout)
    times = result["times"]
    wall = {name: walls for name, (walls, _) in times.items()}
    cpu = {name: cpus for name, (_, cpus) in times.items()}
    names = list(times)
    rows = _rows(wall, cpu, {names[0]: names[1], names[1]: names[1]})
    rows[0][0] += f" ({result['spans']:,} spans)"
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
        "BloxsAdapter + TokenAuth": storm_clients.ours,
        "google-auth AuthorizedSession": storm_clients.google,
        "naive refresh-on-401 loop": storm_clients.naive,
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


class _Fleet:
    """``processes`` copies of a child command, all built before any is released.

    Each child prints ``ready`` once built, then one JSON line for each line
    it reads on stdin (:mod:`benchmarks.quota`, :mod:`benchmarks.storm`).
    As a context manager: on leaving, the children get the end of stdin and
    must exit with 0; on an error they are killed.
    """

    def __init__(self, command: list[str], processes: int) -> None:
        self.children = [
            subprocess.Popen(
                command,
                cwd=HERE.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]

    def __enter__(self) -> _Fleet:
        try:
            for child in self.children:
                assert child.stdout is not None
                if child.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"a fleet process failed: {child.communicate()[1]}")
        except BaseException:
            self._kill()
            raise
        return self

    def release(self) -> tuple[float, list[dict[str, Any]]]:
        """Release every child at once; ``time.monotonic()`` then, and each child's line."""
        go = time.monotonic()
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in self.children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.strip():
                raise RuntimeError(f"a fleet process failed: {child.communicate()[1]}")
            results.append(json.loads(line))
        return go, results

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if kind is not None:
            self._kill()
            return
        try:
            for child in self.children:
                _, err = child.communicate(timeout=600)
                if child.returncode:
                    raise RuntimeError(f"a fleet process failed: {err}")
        finally:
            self._kill()

    def _kill(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()
            for pipe in (child.stdin, child.stdout, child.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


#: One fleet run of the storm, per phase (start, after revocation):
#: token calls, seconds from the release until the last call ended, calls that ended 200;
#: then the library's WARNINGs in all processes, and the largest spread (seconds)
#: between the first and the last process to see its release.
StormRun = tuple[int, float, int, int, float, int, int, float]

STORM_FLEET = {
    "BloxsAdapter + TokenAuth, sqlite:/// shared cache": ("ours", "sqlite"),
    "BloxsAdapter + TokenAuth, redis:// shared cache": ("ours", "redis"),
    "BloxsAdapter + TokenAuth, no cache (per process)": ("ours", "none"),
    "google-auth AuthorizedSession (per process)": ("google", "none"),
    "naive refresh-on-401 loop (per process)": ("naive", "none"),
}


def _storm_fleet_run(
    servers: Servers, kind: str, cache: str, processes: int, threads: int
) -> StormRun:
    """One fleet: every thread's first call at once, then, after a revocation, another."""
    command = [sys.executable, "-m", "benchmarks.storm", kind, servers.url, str(threads), cache]
    with _Fleet([*command, "2"], processes) as fleet:
        servers.control(action="reset")  # no token anywhere yet
        go, first = fleet.release()
        start_calls = servers.control()["token_calls"]
        servers.control(action="revoke")  # every process holds a token; the server drops it
        before = servers.control()["token_calls"]
        go_again, second = fleet.release()
        revoked_calls = servers.control()["token_calls"] - before
    return (
        start_calls,
        max(r["done"] for r in first) - go,
        sum(r["ok"] for r in first),
        revoked_calls,
        max(r["done"] for r in second) - go_again,
        sum(r["ok"] for r in second),
        sum(r["warnings"] for r in second),  # a running count in each process
        max(_spread(first), _spread(second)),
    )


def _spread(results: list[dict[str, Any]]) -> float:
    return max(r["started"] for r in results) - min(r["started"] for r in results)


def _flush(url: str) -> None:
    import redis as redis_py

    client = redis_py.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def refresh_storm_fleet(
    servers: Servers, redis: RedisServer, *, processes: int, threads: int, trials: int
) -> list[list[str]]:
    """``processes`` x ``threads`` clients of one credential, interleaved over ``trials``.

    Every run starts new processes, a fresh token cache (a new SQLite path,
    created by the processes' first calls, or a flushed Redis database) and
    a reset server.
    """
    missing: dict[str, str] = {}
    try:
        import cryptography  # noqa: F401 - what a shared token cache needs
    except ImportError:
        for name, (_, where) in STORM_FLEET.items():
            if where != "none":
                missing[name] = "cryptography not installed (the crypto extra)"
    runs: dict[str, list[StormRun]] = {name: [] for name in STORM_FLEET}
    directory = tempfile.TemporaryDirectory(prefix="rbe-bench-storm-")
    try:
        for trial in range(trials):
            for name, (kind, where) in STORM_FLEET.items():
                if where == "redis" and not redis.url:
                    missing.setdefault(name, redis.missing)
                if name in missing:
                    continue
                cache = "none"
                if where == "sqlite":
                    path = Path(directory.name) / str(trial) / "tokens.db"
                    path.parent.mkdir()
                    cache = f"sqlite:///{path}"
                elif where == "redis":
                    _flush(redis.url)
                    cache = redis.url
                runs[name].append(_storm_fleet_run(servers, kind, cache, processes, threads))
    finally:
        directory.cleanup()
    calls = processes * threads
    rows = []
    for name, values in runs.items():
        if name in missing:
            rows.append([name, f"not run: {missing[name]}", *["n/a"] * 7])
            continue
        start, revoked = [v[0] for v in values], [v[3] for v in values]
        worst = min(min(v[2], v[5]) for v in values)
        rows.append(
            [
                name,
                f"{_median(start):.0f}",
                f"{min(start)}-{max(start)}",
                f"{_median(revoked):.0f}",
                f"{min(revoked)}-{max(revoked)}",
                f"{_median([v[1] for v in values]) * 1000:.0f} / "
                f"{_median([v[4] for v in values]) * 1000:.0f}",
                "yes" if worst == calls else f"no: {worst}/{calls} in the worst phase",
                str(sum(v[6] for v in values)),
                f"{max(v[7] for v in values) * 1000:.0f}",
            ]
        )
    return rows


# -- 4. throughput under a quota ----------------------------------------------------

_VARIANTS = {"none": "no Retry-After (Bloxs)", "retry-after": "with Retry-After"}
#: One run against the quota: (seconds, successes, 429s, requests the server got, failures,
#: the most requests the server got in any one second).
Run = tuple[float, int, int, int, int, int]


def _ideal(quota: int, total: int) -> float:
    """Seconds the ideal client takes: a burst of Q, then Q at each turn of the window."""
    return float(math.ceil(total / quota) - 1)


def _quota_rows(runs: dict[tuple[str, str], list[Run]], ideal: float) -> list[list[str]]:
    """One row per (server, client): median efficiency and its range, median
    seconds and 429s per run, refused share over all runs, failures over all runs."""
    rows = []
    for (variant, name), values in runs.items():
        if not values:
            continue
        efficiency = [ideal / elapsed for elapsed, *_ in values]
        refused = sum(v[2] for v in values)
        sent = sum(v[3] for v in values)
        rows.append(
            [
                _VARIANTS[variant],
                name,
                f"{_median(efficiency):.2f}",
                f"{min(efficiency):.2f}-{max(efficiency):.2f}",
                f"{_median([v[0] for v in values]):.1f}",
                f"{_median([float(v[2]) for v in values]):.0f}",
                f"{refused / sent:.1%}" if sent else "n/a",
                str(sum(v[4] for v in values)),
                str(max(v[5] for v in values)),
            ]
        )
    return rows


def quota_throughput(
    servers: Servers, quota: int, total: int, threads: int, trials: int
) -> list[list[str]]:
    """Every client against the fixed-window quota, ``trials`` rounds interleaved.

    Each run: a fresh client, the server's windows reset (their phase is
    whatever the monotonic clock says), ``threads`` threads released at once.
    """
    ideal = _ideal(quota, total)
    runs: dict[tuple[str, str], list[Run]] = {
        (variant, label): [] for variant in _VARIANTS for label in quota_clients.KINDS.values()
    }
    for _ in range(trials):
        for variant in _VARIANTS:
            for kind, label in quota_clients.KINDS.items():
                session = _session(quota_clients.adapter(kind, quota, threads))
                servers.control(action="quota", quota=quota)
                url = f"{servers.url}/quota?variant={variant}"
                started, done, ok, failed = quota_clients.send_all(
                    session, url, threads, total // threads, lambda: None
                )
                state = servers.control()
                served = state["served"]
                sent = served["200"] + served["429"]
                runs[variant, label].append(
                    (done - started, ok, served["429"], sent, failed, state["worst_second"])
                )
                session.close()
    return _quota_rows(runs, ideal)


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


# -- 6. a fleet under one quota ------------------------------------------------------


def _fleet_run(
    servers: Servers,
    *,
    kind: str,
    storage: str,
    quota: int,
    total: int,
    processes: int,
    threads: int,
    variant: str,
) -> tuple[Run, int]:
    """One run of ``processes`` client processes, and how many times their
    stores fell back. Every process is ready (imported, store open) before
    any is released."""
    calls = total // (processes * threads)
    namespace = f"fleet-{time.monotonic_ns()}"  # nothing left over from an earlier run
    url = f"{servers.url}/quota?variant={variant}"
    command = [sys.executable, "-m", "benchmarks.quota", kind, url, str(quota), str(threads)]
    command += [str(calls), storage, namespace]
    with _Fleet(command, processes) as fleet:
        servers.control(action="quota", quota=quota)
        go, results = fleet.release()
    state = servers.control()
    served = state["served"]
    run = (
        max(r["done"] for r in results) - go,
        sum(r["ok"] for r in results),
        served["429"],
        served["200"] + served["429"],
        sum(r["failed"] for r in results),
        state["worst_second"],
    )
    return run, sum(r["fallbacks"] for r in results)


FLEET_CLIENTS = {
    "BloxsAdapter + RateLimit, sqlite:/// shared": ("limit", "sqlite"),
    "BloxsAdapter + RateLimit, redis:// shared": ("limit", "redis"),
    "requests-ratelimiter (per_second=Q) + Retry, per process": ("ratelimiter", "memory"),
    "BloxsAdapter + RateLimit, memory:// per process": ("limit", "memory"),
}
#: CPU-bound processes beside the fleet on a busy host (6b): the cores are taken.
NEIGHBOURS = 3


@contextlib.contextmanager
def _neighbours(count: int) -> Iterator[None]:
    """``count`` processes that only spin, for the duration."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def fleet(
    servers: Servers,
    redis: RedisServer,
    *,
    quota: int,
    total: int,
    processes: int,
    threads: int,
    trials: int,
    variants: tuple[str, ...],
    busy: bool = False,
) -> list[list[str]]:
    """``processes`` x ``threads`` clients against one quota, interleaved over ``trials``;
    ``busy``: with :data:`NEIGHBOURS` CPU-bound processes beside each run (6b)."""
    ideal = _ideal(quota, total)
    directory = tempfile.TemporaryDirectory(prefix="rbe-bench-fleet-")
    clients = dict(FLEET_CLIENTS)
    if busy:
        del clients["BloxsAdapter + RateLimit, memory:// per process"]
    runs: dict[tuple[str, str], list[Run]] = {
        (variant, name): [] for variant in variants for name in clients
    }
    fallbacks = dict.fromkeys(clients, 0)
    try:
        for trial in range(trials):
            for variant in variants:
                for name, (kind, where) in clients.items():
                    if where == "redis" and not redis.url:
                        continue
                    if where == "sqlite":  # a fresh file per run, created before the fleet starts
                        path = Path(directory.name) / f"{trial}-{variant}" / "fleet.db"
                        path.parent.mkdir()
                        storage = f"sqlite:///{path}"
                        created = rbe.RateLimit({"*": (quota, 1.0)}, storage=storage)
                        created.store.acquire("benchmark-warm-up", None, 0.0)
                        created.close()
                    else:
                        storage = redis.url if where == "redis" else "memory://"
                    with _neighbours(NEIGHBOURS if busy else 0):
                        run, fell_back = _fleet_run(
                            servers,
                            kind=kind,
                            storage=storage,
                            quota=quota,
                            total=total,
                            processes=processes,
                            threads=threads,
                            variant=variant,
                        )
                    runs[variant, name].append(run)
                    fallbacks[name] += fell_back
    finally:
        directory.cleanup()
    rows = []
    for row in _quota_rows(runs, ideal):
        row.append(str(fallbacks[row[1]]))
        rows.append(row)
    if not redis.url:
        name = "BloxsAdapter + RateLimit, redis:// shared"
        rows += [[_VARIANTS[v], name, f"not run: {redis.missing}", *["n/a"] * 7] for v in variants]
    return rows


# -- 7. the cost of a permit -----------------------------------------------------------


def _paired_blocks(
    alternatives: dict[str, Callable[[], object]], total: int, block: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU µs per call of each alternative, one block of each per round,
    in a shuffled order each round."""
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in alternatives}
    order = list(alternatives)
    shuffle = random.Random(1234).shuffle
    for _ in range(total // block):
        shuffle(order)
        for name in order:
            call = alternatives[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(block):
                call()
            times[name][0].append((time.perf_counter() - started) / block * 1e6)
            times[name][1].append((time.process_time() - cpu_started) / block * 1e6)
    return times


def _redis_round_trips(session: requests.Session, url: str, count: int = 100) -> float:
    """Commands redis-py sends per request through ``session`` (a pipeline counts once)."""
    from redis.connection import AbstractConnection

    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        for _ in range(count):
            session.get(url)
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
    return sent[0] / count


def permit_cost(
    servers: Servers, redis: RedisServer, total: int, block: int = 20
) -> list[list[str]]:
    """Per-request cost of a permit in each store when nothing ever waits.

    As scenario 1: rounds of one block per alternative, shuffled each round,
    each block paired with the no-limiter block of the same round. The same
    rounds time a block of permits alone per store (``store.acquire`` then
    ``store.finish``), on a key of its own (so its permit log holds about as
    many entries as the HTTP one), a block of ``finish`` alone (of permits
    taken before the run, on another key), and of Redis PINGs.
    """
    url = servers.url + "/small"
    rule = (10**9, 1.0)  # so large that nothing ever waits
    directory = tempfile.TemporaryDirectory(prefix="rbe-bench-permit-")
    stores = {"memory://": "memory://", "sqlite:///": f"sqlite:///{directory.name}/permits.db"}
    if redis.url:
        stores["redis://"] = redis.url
    limits = {name: rbe.RateLimit({"*": rule}, storage=where) for name, where in stores.items()}
    sessions = {"no limiter": _session(rbe.BloxsAdapter())}
    sessions.update(
        {name: _session(rbe.BloxsAdapter(rate_limit=limit)) for name, limit in limits.items()}
    )
    alternatives: dict[str, Callable[[], object]] = {
        name: lambda session=session: session.get(url) for name, session in sessions.items()
    }
    ends: dict[str, Iterator[Any]] = {}  # permits taken before the run, for "finish" blocks
    for name, limit in limits.items():
        store = limit.store
        alternatives[f"permit {name}"] = lambda store=store: store.finish(
            "alone", store.acquire("alone", rule, 60.0).stamp
        )
        ends[name] = iter([store.acquire("ends", rule, 60.0).stamp for _ in range(total + 100)])
        alternatives[f"finish {name}"] = lambda store=store, stamps=ends[name]: store.finish(
            "ends", next(stamps)
        )
    client = None
    if redis.url:
        import redis as redis_py

        client = redis_py.Redis.from_url(redis.url)
        alternatives["ping"] = client.ping
    try:
        for call in alternatives.values():  # warm connections, stores and code paths
            for _ in range(50):
                call()
        times = _paired_blocks(alternatives, total, block)
        trips = _redis_round_trips(sessions["redis://"], url) if redis.url else None
    finally:
        for session in sessions.values():
            session.close()
        for limit in limits.values():
            limit.close()
        if client is not None:
            client.close()
        directory.cleanup()
    base_wall, base_cpu = times["no limiter"]
    rows = []
    for name in sessions:
        wall, cpu = times[name]
        extra = _median([a - b for a, b in zip(wall, base_wall, strict=True)])
        extra_cpu = _median([a - b for a, b in zip(cpu, base_cpu, strict=True)])
        alone = times.get(f"permit {name}")
        finish = times.get(f"finish {name}")
        rows.append(
            [
                name,
                f"{_median(wall):.1f}",
                f"{extra:+.1f}",
                f"{(_median(base_wall) + extra) / _median(base_wall):.3f}",
                f"{extra_cpu:+.1f}",
                f"{_median(alone[0]):.1f}" if alone else "n/a",
                f"{_median(finish[0]):.1f}" if finish else "n/a",
                f"{trips:.2f}" if name == "redis://" and trips is not None else "n/a",
            ]
        )
    if client is not None:
        ping = f"{_median(times['ping'][0]):.1f}"
        rows.append(["Redis PING (redis-py), for comparison", *["n/a"] * 4, ping, "n/a", "n/a"])
    else:
        rows.append([f"redis:// not run: {redis.missing}", *["n/a"] * 7])
    return rows


# -- 8. an outage, with and without a circuit breaker ------------------------------------

#: The back-off of both variants, in place of the default 0.5 s (the waits are
#: 0.04, 0.08 and 0.16 s plus as much again of jitter; 3 retries, the default).
OUTAGE_BACKOFF = 0.04
#: Seconds between the calls that go on after the batch (the trickle).
TRICKLE = 0.02


def _outage_call(session: requests.Session, url: str) -> str:
    """One call as the nightly sync makes it: ``"200"``, ``"failed"`` (an error
    after the adapter's retries) or ``"fast"`` (refused by an open circuit: the
    caller counts it as failed and moves on)."""
    try:
        response = session.get(url, timeout=10)
    except rbe.CircuitOpenError:
        return "fast"
    except requests.RequestException:
        return "failed"
    return "200" if response.status_code == 200 else "failed"


def _outage_batch(
    session: requests.Session, url: str, threads: int, total: int
) -> tuple[float, dict[str, int]]:
    """``total`` calls from ``threads`` threads released together: seconds, outcomes."""
    barrier = threading.Barrier(threads + 1)
    lock = threading.Lock()
    counts = {"200": 0, "failed": 0, "fast": 0}

    def worker(calls: int) -> None:
        mine = dict.fromkeys(counts, 0)
        barrier.wait()
        for _ in range(calls):
            mine[_outage_call(session, url)] += 1
        with lock:
            for key, value in mine.items():
                counts[key] += value

    shares = [total // threads + (n < total % threads) for n in range(threads)]
    pool = [threading.Thread(target=worker, args=(share,)) for share in shares]
    for thread in pool:
        thread.start()
    started = time.monotonic()
    barrier.wait()
    for thread in pool:
        thread.join()
    return time.monotonic() - started, counts


class _Trickle:
    """The work that goes on after the batch: a call every :data:`TRICKLE`
    seconds from a thread of its own, until one ends 200. Keeps each call's
    ``(sent, ended, outcome)`` (``time.monotonic()``)."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.calls: list[tuple[float, float, str]] = []
        self.ok = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(session, url), daemon=True)
        self._thread.start()

    def _run(self, session: requests.Session, url: str) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            outcome = _outage_call(session, url)
            self.calls.append((sent, time.monotonic(), outcome))
            if outcome == "200":
                self.ok.set()
                return
            self._stop.wait(TRICKLE)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass
class _OutageRun:
    elapsed: float  # seconds for the batch
    counts: dict[str, int]  # the batch's outcomes
    batch_requests: int  # requests the server got during the batch
    outage: float  # seconds from the outage's start to the recovery
    outage_requests: int  # requests the server got during the whole outage
    alerts: list[tuple[float, rbe.AlertEvent]]  # (time.monotonic(), event)
    recovered: float  # time.monotonic() just before the server was told to recover
    first: tuple[float, float] | None  # the first call that ended 200: (sent, ended)
    after: int  # 200s of one more call per thread, after the first 200

    def period(self) -> float | None:
        """Seconds of the last opening before the recovery (the open period then)."""
        opened = [e for at, e in self.alerts if e.kind == "circuit_open" and at <= self.recovered]
        return (opened[-1].until or opened[-1].at) - opened[-1].at if opened else None


def _outage_run(
    servers: Servers,
    breaker: rbe.CircuitBreaker | None,
    *,
    threads: int,
    total: int,
    outage: float,
    give_up: float,
) -> _OutageRun:
    """One variant: the batch once the outage has begun; the trickle until the
    outage has lasted ``outage`` seconds (and at least 0.5 s more); the
    recovery; the wait for a 200 (at most ``give_up`` seconds); then one more
    call per thread."""
    alerts: list[tuple[float, rbe.AlertEvent]] = []
    adapter = rbe.BloxsAdapter(
        backoff_factor=OUTAGE_BACKOFF,
        circuit_breaker=breaker,
        on_alert=lambda event: alerts.append((time.monotonic(), event)),
    )
    session = _session(adapter)
    url = servers.url + "/api"
    assert session.get(url, timeout=10).status_code == 200  # connected, code paths warm
    servers.control(action="outage", state="on")
    begun = time.monotonic()
    elapsed, counts = _outage_batch(session, url, threads, total)
    batch_requests = servers.control()["outage_requests"]
    trickle = _Trickle(session, url)
    try:
        time.sleep(max(begun + outage - time.monotonic(), 0.5))
        recovered = time.monotonic()
        outage_requests = servers.control(action="outage", state="off")["outage_requests"]
        trickle.ok.wait(give_up)
    finally:
        trickle.close()
    first = next(((s, e) for s, e, outcome in trickle.calls if outcome == "200"), None)
    _, after = _outage_batch(session, url, threads, threads)
    session.close()
    return _OutageRun(
        elapsed,
        counts,
        batch_requests,
        recovered - begun,
        outage_requests,
        alerts,
        recovered,
        first,
        after["200"],
    )


def outage(
    servers: Servers, *, threads: int, total: int, outage: float, open_for: float
) -> tuple[list[list[str]], list[list[str]]]:
    """Scenario 8's two tables, the batch and the recovery (one run of each variant)."""
    variants = {
        "BloxsAdapter (no breaker)": None,
        f"BloxsAdapter + CircuitBreaker(failures=5, open_for={open_for:g})": rbe.CircuitBreaker(
            failures=5, open_for=open_for
        ),
    }
    give_up = outage + 8 * open_for + 10
    runs = {
        name: _outage_run(
            servers, breaker, threads=threads, total=total, outage=outage, give_up=give_up
        )
        for name, breaker in variants.items()
    }
    base = runs["BloxsAdapter (no breaker)"]
    batch, recovery = [], []
    for name, run in runs.items():
        batch.append(
            [
                name,
                f"{run.elapsed:.2f}",
                str(run.batch_requests),
                str(run.counts["failed"]),
                str(run.counts["fast"]),
                str(run.counts["200"]),
                f"{base.elapsed / run.elapsed:.1f}",
                f"{base.batch_requests / max(run.batch_requests, 1):.1f}",
            ]
        )
        kinds = [event.kind for _, event in run.alerts]
        period = run.period()
        if run.first is None:
            recovered, first, target = f"none in {give_up:g} s", "n/a", "n/a"
        else:
            sent, ended = run.first
            recovered = f"{ended - run.recovered:.2f}"
            first = f"{sent - run.recovered:+.2f} / {(ended - sent) * 1000:.0f}"
            target = f"{open_for + ended - sent:.2f}" if variants[name] else "n/a"
        recovery.append(
            [
                name,
                f"{run.outage:.1f}",
                str(run.outage_requests - run.batch_requests),
                f"{kinds.count('circuit_open')} / {kinds.count('circuit_closed')}",
                f"{period:.1f}" if period is not None else "n/a",
                recovered,
                first,
                target,
                f"{run.after}/{threads}",
            ]
        )
    return batch, recovery


def closed_circuit(servers: Servers, threads: int, calls: int, rounds: int) -> list[list[str]]:
    """64 threads through a closed circuit: are calls in flight serialized?

    Every thread sends ``calls`` GETs that the server holds 50 ms; rounds
    alternate the adapter without and with a breaker. Serialized, a round
    would take threads x calls x 50 ms; in parallel, about calls x 50 ms.
    """
    hold = 0.05
    url = f"{servers.url}/slow?seconds={hold:g}"
    sessions = {
        "BloxsAdapter": _session(rbe.BloxsAdapter(pool_maxsize=threads)),
        "BloxsAdapter + CircuitBreaker()": _session(
            rbe.BloxsAdapter(circuit_breaker=rbe.CircuitBreaker(), pool_maxsize=threads)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for round_number in range(rounds + 1):  # the first round warms the pools
        for name, session in sessions.items():
            elapsed, oks = _together(
                threads,
                lambda session=session: sum(session.get(url).ok for _ in range(calls)),
            )
            assert sum(oks) == threads * calls
            if round_number:
                times[name].append(elapsed)
    base = _median(times["BloxsAdapter"])
    return [
        [
            name,
            f"{_median(values):.3f}",
            f"{_median(values) / base:.2f}",
            f"{calls * hold:.2f}",
            f"{threads * calls * hold:.1f}",
        ]
        for name, values in times.items()
    ]


SCENARIOS = {
    1: "happy path",
    2: "streaming",
    3: "refresh storm",
    4: "quota throughput",
    5: "Retry-After precision",
    6: "fleet under one quota",
    7: "permit cost",
    8: "outage",
}
QUOTA_HEADER = [
    "server",
    "client",
    "efficiency (median)",
    "range",
    "seconds (median)",
    "429s (median)",
    "refused share",
    "failed (all runs)",
    "most in any 1 s at the server (max)",
]


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
        default=",".join(map(str, SCENARIOS)),
        help="comma-separated scenario numbers, such as 1,5 (a partial run writes no files)",
    )
    args = parser.parse_args()
    try:
        only = {int(part) for part in args.only.split(",") if part.strip()}
    except ValueError:
        parser.error(f"--only takes scenario numbers such as 1,5, not {args.only!r}")
    if not only or not only <= set(SCENARIOS):
        parser.error(f"--only takes scenario numbers from 1 to {len(SCENARIOS)}, not {args.only!r}")
    quick = args.quick
    stream_size = (16 if quick else 256) * 1024 * 1024
    # the quota scenarios: N = 8Q requests, so the ideal client takes 7 s (quick: 1 s)
    quota, total = (20, 40) if quick else (50, 400)
    fleet_quota, fleet_total = (32, 64) if quick else (quota, total)
    trials = 1 if quick else 3
    storm_processes, storm_threads = (4, 4) if quick else (8, 8)
    runs = "1 run" if trials == 1 else f"{trials} runs each"
    # the outage: calls from 8 threads, its length (at least the batch's), the breaker's open_for
    outage_calls, outage_for, open_for = (80, 3.0, 0.5) if quick else (2000, 30.0, 5.0)
    recovery: list[list[str]] = []  # scenario 8's second table, filled by its first

    def outage_batch(s: Servers) -> list[list[str]]:
        batch, recovery[:] = outage(
            s, threads=8, total=outage_calls, outage=outage_for, open_for=open_for
        )
        return batch

    redis = RedisServer()  # started below when a scenario needs it
    # a key is a scenario's number, or its number and a letter for another table of it
    scenarios: dict[int | str, tuple[Callable[[Servers], list[list[str]]], str, list[str]]] = {
        1: (
            lambda s: happy_path(s, 500 if quick else 5000),
            f"## 1. Happy-path overhead ({500 if quick else 5000:,} keep-alive GETs each, "
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
        "1b": (
            lambda s: telemetry_cost(s, 500 if quick else 5000),
            f"## 1b. Telemetry with an SDK ({500 if quick else 5000:,} keep-alive GETs each, "
            "a batch span processor into an in-memory exporter and an in-memory metric reader, "
            "in a process of its own)",
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
            lambda s: streaming(s, 1 if quick else 3, stream_size),
            f"## 2. Streaming download ({stream_size >> 20} MiB, stream=True, "
            "a fresh process per trial)",
            ["adapter", "median seconds", "time ratio", "peak RSS MiB", "RSS ratio"],
        ),
        3: (
            lambda s: refresh_storm(s, 64, 1 if quick else 3),
            "## 3. Refresh storm (64 threads, one Session, the server revokes the token)",
            ["client", "token calls (median)", "range", "ms until all done", "succeeded"],
        ),
        # the second table of scenario 3: a fleet of processes sharing one credential
        "3b": (
            lambda s: refresh_storm_fleet(
                s, redis, processes=storm_processes, threads=storm_threads, trials=trials
            ),
            f"## 3b. Refresh storm in a fleet ({storm_processes} processes x {storm_threads} "
            f"threads, one credential: at start, and after the server revokes the token; {runs})",
            [
                "client",
                "token calls at start (median)",
                "range",
                "token calls after revocation (median)",
                "range",
                "ms until all done, start / revoked (median)",
                "every call 200",
                "library warnings (all runs)",
                "release spread ms (max)",
            ],
        ),
        4: (
            lambda s: quota_throughput(s, quota, total, 8, trials),
            f"## 4. Throughput under a server quota (Q = {quota} per 1 s window, 8 threads, "
            f"N = {total} requests, ideal {_ideal(quota, total):g} s, {runs})",
            QUOTA_HEADER,
        ),
        5: (
            lambda s: retry_after_precision(s, 2 if quick else 5),
            "## 5. Retry-After precision (the delay the server saw, minus the wait it asked for)",
            ["Retry-After s", "median ms late", "max ms late", "min ms late", "early"],
        ),
        6: (
            lambda s: fleet(
                s,
                redis,
                quota=fleet_quota,
                total=fleet_total,
                processes=4,
                threads=4,
                trials=trials,
                variants=("none",) if quick else tuple(_VARIANTS),
            ),
            f"## 6. A fleet under one quota (Q = {fleet_quota} per 1 s window, 4 processes x 4 "
            f"threads, N = {fleet_total} requests, ideal {_ideal(fleet_quota, fleet_total):g} s, "
            f"{runs})",
            [*QUOTA_HEADER, "store fallbacks"],
        ),
        # the second table of scenario 6: the same fleet on a busy host
        "6b": (
            lambda s: fleet(
                s,
                redis,
                quota=fleet_quota,
                total=fleet_total,
                processes=4,
                threads=4,
                trials=trials,
                variants=("none",),
                busy=True,
            ),
            f"## 6b. The fleet on a busy host ({NEIGHBOURS} CPU-bound processes beside it on "
            f"the machine's cores; no Retry-After; Q = {fleet_quota} per 1 s window, "
            f"N = {fleet_total} requests, ideal {_ideal(fleet_quota, fleet_total):g} s, {runs})",
            [*QUOTA_HEADER, "store fallbacks"],
        ),
        7: (
            lambda s: permit_cost(s, redis, 200 if quick else 3000),
            f"## 7. The cost of a permit when nothing waits ({200 if quick else 3000:,} "
            "keep-alive GETs each, in blocks of 20, shuffled each round; rule (10**9, 1 s))",
            [
                "store",
                "median µs/request",
                "overhead µs",
                "ratio",
                "client CPU overhead µs",
                "a permit alone µs (acquire, finish)",
                "of which finish µs (the end stamp)",
                "Redis round trips/request",
            ],
        ),
        8: (
            outage_batch,
            f"## 8. An outage: {outage_calls:,} calls from 8 threads while the API answers 503 "
            f"(no Retry-After), with and without a circuit breaker (3 retries, "
            f"backoff_factor={OUTAGE_BACKOFF:g}; 1 run)",
            [
                "client",
                "seconds for the batch",
                "requests to the dead server",
                "503 after retries",
                "failed fast (CircuitOpenError)",
                "200",
                "x less time",
                "x fewer requests",
            ],
        ),
        # the second table of scenario 8: the rest of the outage, and the recovery
        "8b": (
            lambda s: recovery,
            f"## 8b. The rest of the outage ({outage_for:g} s, or the batch if longer; a call "
            f"every {TRICKLE * 1000:g} ms after the batch) and the recovery",
            [
                "client",
                "outage s",
                "requests to the dead server after the batch",
                "circuit_open / circuit_closed alerts",
                "open period at the recovery s",
                "recovery s (until a call ends 200)",
                "that call: sent s after the recovery / ms",
                "target: open_for + that call s",
                "then one call per thread: 200",
            ],
        ),
        "8c": (
            lambda s: closed_circuit(s, 64, 5 if quick else 10, 2 if quick else 7),
            "## 8c. 64 threads through a closed circuit: each sends "
            f"{5 if quick else 10} GETs the server holds 50 ms (median of "
            f"{2 if quick else 7} interleaved rounds)",
            [
                "client",
                "seconds per round (median)",
                "ratio",
                "if fully parallel s",
                "if serialized s",
            ],
        ),
    }
    servers = Servers(stream_size)
    sections = [f"Machine: {_machine()}", ""]
    results: dict[int | str, list[list[str]]] = {}
    try:
        if only & {3, 6, 7}:
            redis.start()
        for key, (run, title, header) in scenarios.items():
            number = key if isinstance(key, int) else int(key.rstrip("abcdefgh"))
            if number in only:
                print(
                    f"{key}/{len(SCENARIOS)} {SCENARIOS[number]} ...",
                    file=sys.stderr,
                    flush=True,
                )
                results[key] = run(servers)
                sections += _section(title, header, results[key])
    finally:
        servers.close()
        redis.close()
    report = "\n".join(sections)
    print(report)
    if not quick and len(results) == len(scenarios):
        (HERE / "results.md").write_text(report + "\n")
        chart = _chart(results[1], results[3])
        if chart:
            print(f"\nchart: {chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
