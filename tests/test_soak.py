"""Soak with accounting: many threads, mixed requests, random faults; every request accounted for.

16 threads x 300 calls (x10 with --soak-long): GETs, POSTs with and without
an Idempotency-Key, PUTs with file bodies, against the simulator answering
429, 500, 503 (with and without Retry-After) and dropped connections at
random, while a controller revokes the token every 0.4 s. The server's own
record then proves the invariants. It runs in real time (threads against a real
server); its one time bound is loose: it catches a call that hung, never a busy
machine (the deadline's precision is checked on a fake clock elsewhere).
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from collections import Counter, defaultdict

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import BLOXS_TOKEN_PATH, COMPLEXES, Simulator

pytestmark = pytest.mark.slow  # the soak

DEADLINE = 5.0
TIMEOUT = 1.0
#: Seconds after which a call counts as hung: far past any call's deadline.
HUNG = 6 * DEADLINE
REFUSED_UNPROCESSED = {401, 429}  # turned away before anything was done (so is a 503 + Retry-After)


def test_soak(request: pytest.FixtureRequest) -> None:
    threads = 16
    calls = 300 * (10 if request.config.getoption("--soak-long") else 1)
    with Simulator(
        limits=dict.fromkeys(("authorization", "get", "update", "filter"), 10**9)
    ) as sim:
        sim.fail(429, path=COMPLEXES, every=17, times=None, retry_after="0")
        sim.fail(500, path=COMPLEXES, every=13, times=None)
        maintenance = sim.fail(503, path=COMPLEXES, every=11, times=None, retry_after="0.01")
        sim.fail(503, path=COMPLEXES, every=23, times=None)
        sim.drop(path=COMPLEXES, every=29, times=None)
        session = requests.Session()
        rbe.mount(
            session,
            sim.url + "/api/",
            auth=rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials),
            max_retries=4,
            backoff_factor=0.005,
            backoff_max=0.02,
            deadline=DEADLINE,
            pool_maxsize=threads,
        )
        revocations = 0
        done = threading.Event()

        def controller() -> None:
            nonlocal revocations
            while not done.wait(0.4):
                sim.revoke_tokens()
                revocations += 1

        outcomes: list[tuple[str, str, str, float]] = []  # (kind, operation, marker, seconds)
        expected_bodies: dict[str, bytes] = {}
        lock = threading.Lock()

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for n in range(calls):
                marker = f"m{seed}-{n}"
                operation = rng.choice(["get", "get", "post", "post-key", "put"])
                started = time.monotonic()
                try:
                    if operation == "get":
                        response = session.get(
                            f"{sim.url}{COMPLEXES}/{rng.randint(1, 25)}", timeout=TIMEOUT
                        )
                    elif operation in ("post", "post-key"):
                        body = json.dumps({"name": marker, "units": n}).encode()
                        headers = {"Content-Type": "application/json"}
                        if operation == "post-key":
                            headers["Idempotency-Key"] = marker
                        with lock:
                            expected_bodies[marker] = body
                        response = session.post(
                            sim.url + COMPLEXES, data=body, headers=headers, timeout=TIMEOUT
                        )
                    else:
                        padding = "x" * rng.randint(0, 20_000)
                        body = json.dumps({"name": marker, "note": padding}).encode()
                        with lock:
                            expected_bodies[marker] = body
                        response = session.put(
                            f"{sim.url}{COMPLEXES}/{rng.randint(1, 25)}",
                            data=io.BytesIO(body),
                            headers={"Content-Type": "application/json"},
                            timeout=TIMEOUT,
                        )
                    if response.status_code >= 400:
                        try:
                            response.raise_for_status()
                            kind = "bug: no exception"
                        except rbe.BloxsError as error:
                            kind = f"typed {type(error).__name__}: {error}"
                    else:
                        kind = "ok"
                except requests.RequestException as error:
                    kind = f"transport {type(error).__name__}: {error}"
                except Exception as error:  # anything else is a bug in the adapter
                    kind = f"bug: {type(error).__module__}.{type(error).__name__}: {error}"
                with lock:
                    outcomes.append((kind, operation, marker, time.monotonic() - started))

        control = threading.Thread(target=controller)
        control.start()
        pool = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(300)
        done.set()
        control.join()
        seen = sim.requests
        secrets = sim.secret_values()

    # every call ended in exactly one outcome, none of them a bug
    assert len(outcomes) == threads * calls
    bugs = [o for o in outcomes if o[0].startswith("bug")]
    assert not bugs, bugs[:5]
    kinds = Counter(o[0].split()[0] for o in outcomes)
    print(dict(Counter(o[0].split(":")[0] for o in outcomes)))
    assert set(kinds) <= {"ok", "typed", "transport"}
    assert kinds["ok"] > threads * calls * 0.5  # the faults were survived, mostly

    by_marker: dict[str, list] = defaultdict(list)
    for record in seen:
        if record.path.startswith(COMPLEXES) and record.method in ("POST", "PUT"):
            try:
                by_marker[json.loads(record.body)["name"]].append(record)
            except (ValueError, KeyError, TypeError):
                pytest.fail(f"a body arrived broken: {record.body[:80]!r}")

    # no POST without an Idempotency-Key reached the server twice (beyond refusals)
    for marker in (o[2] for o in outcomes if o[1] == "post"):
        reached = [
            r
            for r in by_marker[marker]
            if r.status not in REFUSED_UNPROCESSED and r.fault != maintenance.name
        ]
        assert len(reached) <= 1, (marker, [r.status for r in by_marker[marker]])

    # every body arrived whole, on every attempt
    for marker, records in by_marker.items():
        assert all(r.body == expected_bodies[marker] for r in records), marker
    retried = sum(1 for records in by_marker.values() if len(records) > 1)
    assert retried > 0  # retries really happened, bodies and all

    # the token endpoint was called once per revocation at most (single-flight)
    fetches = sum(1 for r in seen if r.path == BLOXS_TOKEN_PATH)
    assert 2 <= fetches <= revocations + 1, (fetches, revocations)

    # nothing hung
    slowest = max(o[3] for o in outcomes)
    assert slowest < HUNG, slowest

    # no secret in any exception message (logs are scanned by conftest for every test)
    texts = [o[0] for o in outcomes if o[0] != "ok"]
    assert texts
    assert not [t for t in texts for s in secrets if len(s) >= 8 and s in t]
