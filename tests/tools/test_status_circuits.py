"""``status`` shows the circuits each process published (issue 28), by host and process.

Real subprocesses (a script of its own, and one under ``run``) open their circuits
against failing loopback servers; ``status`` reads the SQLite file or the Redis they
published to, as a subprocess too.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.simulator import COMPLEXES, Simulator
from requests_bloxs_errors.storage import CircuitRecord, open_backend, parse

from ..helpers.cli import CLI, run
from ..helpers.server import json_reply

ROOT = str(Path(__file__).resolve().parents[2])
HOST = socket.gethostname() or "localhost"
ISO_AGO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)"

#: A process of its own whose breaker publishes to the URL it is given.
OWN_BREAKER = """
import os, sys
import requests, requests_bloxs_errors as rbe
api, storage = sys.argv[1], sys.argv[2]
session = requests.Session()
breaker = rbe.CircuitBreaker(failures=2, open_for=30, storage=storage)
rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
statuses = [session.get(api + "/x", timeout=10).status_code for _ in range(3)]
print(os.getpid(), statuses)
"""

#: A legacy script: ``run`` gives it the adapter, configured from the environment.
LEGACY = """
import os, sys
import requests
statuses = []
for _ in range(3):
    try:
        statuses.append(requests.get(sys.argv[1], timeout=10).status_code)
    except requests.RequestException as exc:
        statuses.append(type(exc).__name__)
print(os.getpid(), statuses)
"""


def _status_json(storage: str) -> dict:
    shown = run("status", "--storage", storage, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def test_status_shows_each_processs_open_circuit_by_host_and_pid(server, tmp_path):
    server.route("GET", "/x", json_reply(500, '{"traceId": "00-abc-01"}'))
    storage = f"sqlite:///{tmp_path}/rbe.db"
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY)
    with Simulator() as sim:
        sim.fail(500, path=COMPLEXES, times=10)
        key, secret = sim.bloxs_credentials
        env = {
            **os.environ,
            "BLOXS_BASE_URL": sim.url,
            "BLOXS_API_KEY": key,
            "BLOXS_API_SECRET": secret,
            "RBE_CIRCUIT_BREAKER": "2/30",
            "RBE_RATE_LIMIT": "bloxs",
            "RBE_STORAGE": storage,
            "RBE_MAX_RETRIES": "0",
        }
        under_run = subprocess.run(
            [*CLI, "run", str(script), sim.url + COMPLEXES],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        simulated = sim.url.rstrip("/")
    own = subprocess.run(
        [sys.executable, "-c", OWN_BREAKER, server.url(""), storage],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert under_run.returncode == 0, under_run.stderr
    assert own.returncode == 0, own.stderr
    run_pid, run_statuses = under_run.stdout.split(" ", 1)
    own_pid, own_statuses = own.stdout.split(" ", 1)
    assert run_statuses.strip() == "[500, 500, 503]"  # the third failed fast (a local 503)
    assert own_statuses.strip() == "[500, 500, 503]"
    found = _status_json(storage)
    assert found["storage"]["entries"] is not None  # the rate limit's section still reads
    circuits = found["circuits"]
    assert circuits["url"] == storage
    rows = [
        (e["host"], e["holder_host"], e["pid"], e["state"], e["failures"])
        for e in circuits["entries"]
    ]
    assert sorted(rows) == rows  # by host, then process
    assert sorted(rows) == sorted(
        [
            (f"http://127.0.0.1:{server.port}", HOST, int(own_pid), "open", 2),
            (simulated, HOST, int(run_pid), "open", 2),
        ]
    )
    now = time.time()
    for entry in circuits["entries"]:
        assert now - 60 < entry["since"] <= entry["published"] <= now + 1
        assert entry["since_iso"].endswith("Z")
    text = run("status", "--storage", storage)
    assert text.returncode == 0, text.stderr
    assert f"circuits published to {storage}" in text.stdout
    for pid in (own_pid, run_pid):
        (line,) = [line for line in text.stdout.splitlines() if f"pid {pid}" in line]
        assert " open " in line
        assert len(re.findall(ISO_AGO, line)) == 2  # since, and when published


def test_an_expired_record_is_not_shown(tmp_path):
    storage = f"sqlite:///{tmp_path}/rbe.db"
    now = time.time()
    old = open_backend(parse(storage), FakeClock(wall=now - 200))  # its ttl ended 100 s ago
    old.publish_circuit(CircuitRecord("https://old.example:443", "open", 0, 5, HOST, 11, 0), 100)
    old.close()
    fresh = open_backend(parse(storage), FakeClock(wall=now))
    record = CircuitRecord("https://new.example:443", "half-open", now - 3, 5, HOST, 12, now)
    fresh.publish_circuit(record, 100)
    fresh.close()
    entries = _status_json(storage)["circuits"]["entries"]
    assert [(e["host"], e["pid"], e["state"]) for e in entries] == [
        ("https://new.example:443", 12, "half-open")
    ]


def test_a_store_without_circuits_says_none_published(tmp_path):
    storage = f"sqlite:///{tmp_path}/rbe.db"
    limit = rbe.RateLimit({"*": "5/second"}, storage=storage)
    limit.store.pause("https://acme.bloxs.io:443|*", 30.0)  # the file exists, with a pause
    limit.close()
    assert _status_json(storage)["circuits"]["entries"] == []
    text = run("status", "--storage", storage)
    assert text.returncode == 0, text.stderr
    assert "(none published)" in text.stdout


def test_status_reads_the_circuits_a_process_published_to_redis(server, session, redis_url):
    server.route("GET", "/x", json_reply(503, "{}"))
    breaker = rbe.CircuitBreaker(failures=1, storage=redis_url)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    assert session.get(server.url("/x")).status_code == 503
    (entry,) = _status_json(redis_url)["circuits"]["entries"]
    assert (entry["host"], entry["pid"], entry["state"], entry["failures"]) == (
        f"http://127.0.0.1:{server.port}",
        os.getpid(),
        "open",
        1,
    )


def test_a_missing_store_is_one_error_not_two(tmp_path):
    shown = run("status", "--storage", f"sqlite:///{tmp_path}/none.db", "--json")
    assert shown.returncode == 1
    assert len(shown.stderr.strip().splitlines()) == 1
    assert "circuits" not in json.loads(shown.stdout)
