"""Waiting is not sending (issue 28): five ``run`` workers share a ``2/10s`` rule in
SQLite, then in Redis. ``status --json`` shows the two permits that were sent and the
four workers waiting, each with its pid; killed while they wait, the four hold
nobody: a fresh run gets its permit when the window allows, not a hold later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers.cli import CLI
from ..helpers.server import Reply, ScriptServer

SCRIPT = """\
import sys
import requests

for _ in range(int(sys.argv[2])):
    print(requests.get(sys.argv[1], timeout=30).status_code, flush=True)
"""
#: Seconds a run may take to start (an interpreter, requests, the package) on a busy host.
START = 30.0


@pytest.fixture
def api() -> Iterator[ScriptServer]:
    server = ScriptServer()
    server.route("GET", "/items", Reply(200, "ok"))
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path}/quota.db"


def _env(storage: str, api: ScriptServer) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("RBE_", "BLOXS_", "DEALCLOUD_"))
    }
    return {
        **clean,
        "NO_COLOR": "1",
        "RBE_PREFIX": api.url("/"),
        "RBE_RATE_LIMIT": "2/10s",
        "RBE_STORAGE": storage,
    }


def _worker(
    script: Path, env: dict[str, str], api: ScriptServer, requests: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "run", str(script), api.url("/items"), str(requests)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _status(storage: str, env: dict[str, str]) -> dict[str, Any]:
    finished = subprocess.run(
        [*CLI, "status", "--storage", storage, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=START,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    (row,) = json.loads(finished.stdout)["storage"]["entries"]
    return dict(row)


def _waiting_pids(row: dict[str, Any]) -> set[int]:
    return {held["pid"] for held in row["holders"] if held["state"] == "waiting"}


def test_status_tells_waiting_from_sent_and_workers_killed_while_waiting_hold_nobody(
    api: ScriptServer, storage: str, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    env = _env(storage, api)
    first = _worker(script, env, api, 2)  # sends the window's two permits
    _, err = first.communicate(timeout=START)
    assert first.returncode == 0, err
    sent_at = time.monotonic()
    waiters = [_worker(script, env, api, 1) for _ in range(4)]
    try:
        pids = {worker.pid for worker in waiters}
        give_up = time.monotonic() + START
        row: dict[str, Any] = {}
        while time.monotonic() < give_up:  # until all four have reserved and wait
            row = _status(storage, env)
            if _waiting_pids(row) == pids:
                break
            time.sleep(0.2)
        assert _waiting_pids(row) == pids, row
        assert (row["sent"], row["in_flight"], row["waiting"]) == (2, 0, 4), row
        assert len(api.seen("GET", "/items")) == 2  # nothing else was sent
        for worker in waiters:
            worker.send_signal(signal.SIGTERM)
        for worker in waiters:
            worker.communicate(timeout=START)
        killed_at = time.monotonic()
        fresh = _worker(script, env, api, 1)
        waiters.append(fresh)  # (stopped at the end, should it hang)
        out, err = fresh.communicate(timeout=START + 15)
        assert (fresh.returncode, out.split()) == (0, ["200"]), err
        arrived = api.seen("GET", "/items")
        assert len(arrived) == 3  # the killed four sent nothing
        # It went when the window allowed (10 s after the first two ended), and at
        # once when that had passed: within seconds, and not a hold later (before,
        # the killed four's reservations held it over a minute, then a local 429).
        # The bound leaves room for starting an interpreter on a busy host.
        allowed = max(sent_at + 10.0, killed_at)
        assert arrived[2].at - allowed < 8.0, "the fresh run waited for the dead workers"
    finally:
        for worker in waiters:
            if worker.poll() is None:
                worker.kill()
            worker.communicate()
