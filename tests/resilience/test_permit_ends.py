"""Pacing stamps each permit with the end of its attempt (issue 20), through the adapter:
a response (any status) or a failure ends it, a call that ends unsent gives it back,
a holder that dies blocks the fleet for its hold only; the rules in force and the
pauses are there to see.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import parse
from requests_bloxs_errors.storage.sqlite import SQLiteBackend
from requests_bloxs_errors.storage.windows import DEFAULT_HOLD, MAX_HOLD, MIN_HOLD, permit_hold

from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]


def _state(limit: rbe.RateLimit) -> tuple[int, int]:
    """``(in_flight, ended)`` of the limit's one category."""
    (state,) = limit.state()
    return state.in_flight, state.ended


def test_a_slow_answer_moves_the_next_permit_by_its_length(server, session):
    # Real time, end to end: the server's slow answer is real. What is asserted is a
    # lower bound between arrivals at the server, which a busy machine only lengthens.
    server.route("GET", "/slow", Reply(200, "ok", delay=0.3))
    rbe.mount(session, "http://", rate_limit=rbe.RateLimit({"*": (1, 0.5)}))
    assert session.get(server.url("/slow")).ok
    assert session.get(server.url("/slow")).ok
    first, second = (r.at for r in server.seen())
    # the server counted the first when it arrived, and answered 0.3 s later: the
    # next arrival comes a period after the answer, not after the permit
    assert second - first >= 0.3 + 0.5 - 0.01


def test_every_attempt_ends_its_permit_and_a_retry_counts_from_the_last_end(server, session, clock):
    server.route("GET", "/r", Reply(503, "busy", {"Retry-After": "0"}), Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (1, 0.4)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    response = session.get(server.url("/r"))
    assert response.status_code == 200
    first, second = rbe.attempts(response)
    assert (first.status, second.status) == (503, 200)
    assert second.paced == pytest.approx(0.4)  # a period after the 503 ended
    assert _state(limit) == (0, 1)  # both ended; the 503's a period ago, no longer counted


def test_an_attempt_that_fails_ends_its_permit(server, session, clock):
    server.route("GET", "/reset", Reply(fault="reset"))
    limit = rbe.RateLimit({"*": (2, 1.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, max_retries=0, clock=clock)
    with pytest.raises(requests.ConnectionError):
        session.get(server.url("/reset"))
    assert _state(limit) == (0, 1)


def test_a_call_that_ends_unsent_gives_its_permit_back(server, session, clock):
    server.route("GET", "/x", Reply(200, "ok"))

    def no_token() -> str:
        raise RuntimeError("the vault is sealed")

    limit = rbe.RateLimit({"*": (1, 30.0)}, clock=clock)
    rbe.mount(session, server.url("/"), rate_limit=limit, auth=rbe.TokenAuth(no_token), clock=clock)
    with pytest.raises(RuntimeError, match="sealed"):
        session.get(server.url("/x"))
    assert server.seen() == []
    assert _state(limit) == (0, 0)  # nothing went out: the next call needs not wait


def test_a_killed_holder_blocks_the_fleet_for_its_hold_only(tmp_path):
    storage = f"sqlite:///{tmp_path}/fleet.db"
    key = "http://127.0.0.1:1|*"
    taker = (
        "import os, sys\n"
        "from requests_bloxs_errors.storage import open_backend, parse\n"
        f"store = open_backend(parse({storage!r}))\n"
        f"grant = store.acquire({key!r}, (1, 1.0), 60, hold=10.0)\n"
        "print(grant.stamp, flush=True)\n"
        "os.kill(os.getpid(), 9)  # its request in flight, it dies\n"
    )
    died = subprocess.run(
        [sys.executable, "-c", taker],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert died.returncode == -9
    assert died.stdout.strip().isdigit()
    clock = FakeClock(wall=time.time())
    survivor = SQLiteBackend(parse(storage), clock)
    blocked = survivor.acquire(key, (1, 1.0), 60)
    assert not blocked.firm  # the dead one's permit still counts as in flight
    clock.advance(10.0)  # its hold
    confirmed = survivor.confirm(key, blocked.stamp, (1, 1.0), 60)
    assert confirmed.firm
    assert confirmed.wait <= 1.0  # a period after the hold, not longer


@pytest.mark.parametrize(
    ("timeout", "left", "hold"),
    [
        (None, None, DEFAULT_HOLD),  # no timeout: a minute
        (10.0, None, 10.0),  # connect and read together (requests' (5, 5))
        (1.0, None, MIN_HOLD),  # room for a descheduled sender
        (3600.0, None, MAX_HOLD),
        (60.0, 12.0, 12.0),  # no longer than the call may run
        (60.0, 0.5, MIN_HOLD),
    ],
)
def test_a_permits_hold_follows_the_attempts_timeout(timeout, left, hold):
    assert permit_hold(timeout, left) == hold


def test_pauses_and_learned_rules_are_visible(server, session, clock):
    server.route(
        "GET", "/limited", Reply(429, "maximum admitted 2 per 1 second", {"Retry-After": "7"})
    )
    limit = rbe.RateLimit({"*": (10, 1.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, max_retries=0, clock=clock)
    assert session.get(server.url("/limited")).status_code == 429
    assert limit.rules == {"*": (2, 1.0)}  # learned, in force
    assert limit.configured_rules == {"*": (10, 1.0)}
    (state,) = limit.state()
    assert state.category == "*"
    assert (state.rule, state.learned) == ((2, 1.0), True)
    assert state.paused_for == pytest.approx(1.0)  # 7 s asked, cut to the rule's period
    clock.advance(0.4)
    assert limit.state()[0].paused_for == pytest.approx(0.6)


def test_4_a_call_that_runs_out_of_time_ends_its_permit_and_reports_no_outage(
    server, session, tmp_path, rbe_logs
):
    # the attempt's read timeout is the deadline: when it fires there is no time left,
    # and ending the permit must still reach the shared store (no WARNING, no outage)
    server.route("GET", "/slow", Reply(200, "late", delay=2.0))
    limit = rbe.RateLimit({"*": (5, 60.0)}, storage=f"sqlite:///{tmp_path}/limits.db")
    rbe.mount(session, "http://", rate_limit=limit, deadline=0.4, max_retries=0)
    with pytest.raises(requests.exceptions.RequestException):
        session.get(server.url("/slow"))
    assert _state(limit) == (0, 1)  # ended in the shared file, not left in flight
    about_the_store = [r for r in rbe_logs.records if "limits.db" in r.getMessage()]
    assert not [r for r in about_the_store if r.levelno >= logging.WARNING]
    assert not limit.store.failing  # no outage recorded: the store was never at fault
