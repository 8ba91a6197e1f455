"""Pacing the server can verify (issue 20): never more than N arrivals in any interval
of the period, as a server in its own process stamps them, while three CPU-bound
processes keep the host's two cores busy, and while a jittery network delays
requests on their way.

A permit stamped when it was reserved let more than N requests into one
second here: a client descheduled between its permit and its connect, or a
request the network held back, arrived late while the permit N after it went
on time. Stamped with the end of its attempt, no such delay can do that.

What the tests assert is deterministic (a count of arrivals); how long a round
takes depends on the host, and is bounded only to catch a hang.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..helpers.arrivals import most_in_any

ROOT = Path(__file__).resolve().parents[2]
RULE = 10  # per second
#: The rounds: the most seconds the network may delay a request in each.
JITTER = (0.0, 0.0, 0.1)

#: fleets of processes on a host they load on purpose: run alone (nox does), since the
#: neighbours would slow every test beside them
pytestmark = [pytest.mark.slow, pytest.mark.machine]


@contextmanager
def busy_host(processes: int = 3) -> Iterator[None]:
    """``processes`` CPU-bound neighbours for the duration."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


class ArrivalServer:
    """The server process (:mod:`tests.helpers.arrivals`)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.arrivals"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self._stdin, self._stdout = self.process.stdin, self.process.stdout
        self.url = f"http://127.0.0.1:{int(self._stdout.readline())}/count"

    def take(self, jitter: float = 0.0) -> list[float]:
        """The arrivals since the last call; ``jitter`` from now on."""
        self._stdin.write(f"{jitter}\n")
        self._stdin.flush()
        times: list[float] = json.loads(self._stdout.readline())
        return times

    def close(self) -> None:
        with self.process:  # (closes its pipes)
            self._stdin.close()
            self.process.wait(timeout=10)


@pytest.fixture
def arrivals() -> Iterator[ArrivalServer]:
    server = ArrivalServer()
    yield server
    server.close()


def _fleet(url: str, storage: str, processes: int, threads: int, calls: int) -> list[int]:
    """``processes`` clients sharing ``storage``, each ``threads`` x ``calls`` GETs."""
    command = [sys.executable, "-m", "tests.helpers.paced_client", url, storage]
    command += [str(RULE), "1.0", str(threads), str(calls)]
    fleet = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in fleet]
    assert [process.returncode for process in fleet] == [0] * processes
    return [status for output in outputs for status in json.loads(output)]


def _rounds(arrivals: ArrivalServer, storage: str, processes: int, threads: int) -> list[int]:
    """The most arrivals in any second, per round (all 200 OK, none lost)."""
    calls = 32 // (processes * threads) or 3
    sent = processes * threads * calls
    worst = []
    with busy_host():
        for jitter in JITTER:
            arrivals.take(jitter)
            assert _fleet(arrivals.url, storage, processes, threads, calls) == [200] * sent
            times = arrivals.take()
            assert len(times) == sent
            worst.append(most_in_any(times, 1.0))
    return worst


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_four_processes_sharing_a_store_never_exceed_the_rule_at_the_server(
    arrivals, tmp_path, request, kind
):
    if kind == "sqlite":
        storage = f"sqlite:///{tmp_path}/fleet.db"
    else:
        storage = request.getfixturevalue("redis_url")
    worst = _rounds(arrivals, storage, processes=4, threads=2)
    assert max(worst) <= RULE, worst


def test_twelve_threads_of_one_process_never_exceed_the_rule_at_the_server(arrivals):
    worst = _rounds(arrivals, "memory://", processes=1, threads=12)
    assert max(worst) <= RULE, worst
