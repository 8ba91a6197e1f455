"""One clock, end to end: the simulator, the adapter and the credential read the clock
they are given, and a clock given to one of them alone changes nothing else.

Every test goes through the real simulator over loopback.
"""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import SYSTEM, Clock, FakeClock
from requests_bloxs_errors.errors import parsing
from requests_bloxs_errors.simulator import BLOXS_TOKEN_PATH, COMPLEXES, Simulator


def test_a_maintenance_met_by_the_token_request_passes_without_sleeping_on_one_fake_clock():
    """The issue's scenario: one FakeClock for the simulator, install() and the
    credential; a 30 s maintenance meets the token request, then 5 calls."""
    clock = FakeClock()
    started = time.monotonic()
    with Simulator(clock=clock) as sim:
        auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials, clock=clock)
        rbe.install(sim.url + "/", clock=clock, auth=auth)
        sim.maintenance(30)
        statuses = [requests.get(sim.url + COMPLEXES, timeout=5).status_code for _ in range(5)]
        rbe.uninstall()
    took = time.monotonic() - started
    assert statuses == [200] * 5
    # one token fetch: its first attempt met the maintenance, its retry got the token
    assert [r.status for r in sim.token_requests()] == [503, 200]
    assert clock.sleeps == [30.0]  # the Retry-After, waited on the fake clock
    assert took < 5.0  # a real wait would be 30 s (90 s before: three of them)


def test_one_fake_clock_for_all_makes_one_token_request_until_renewal_is_due():
    clock = FakeClock()  # its wall clock is years from the real one: only it counts
    with Simulator(clock=clock, bloxs_token_lifetime=600.0) as sim:
        auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials, clock=clock)
        session = requests.Session()
        rbe.mount(session, sim.url + "/", auth=auth, clock=clock)
        for _ in range(5):
            assert session.get(sim.url + COMPLEXES, timeout=5).status_code == 200
        assert len(sim.token_requests()) == 1
        clock.advance(539.0)  # renewal: 60 s before expiry; not yet
        session.get(sim.url + COMPLEXES, timeout=5)
        assert len(sim.token_requests()) == 1
        clock.advance(1.0)
        session.get(sim.url + COMPLEXES, timeout=5)
        assert len(sim.token_requests()) == 2
    assert all(r.status == 200 for r in sim.seen("GET", COMPLEXES))  # never an expired token


@pytest.mark.parametrize("fake", ["simulator", "adapter", "credential"])
@pytest.mark.parametrize("start", ["fixed", "real readings"])
def test_a_fake_clock_given_to_one_part_alone_changes_no_token_count(fake, start):
    """The parts not given the fake clock keep the real one, and the calls go as
    with real clocks everywhere: one token for five calls."""
    fake_clock = FakeClock() if start == "fixed" else FakeClock.starting_now()

    def clock_of(part: str) -> Clock:
        return fake_clock if part == fake else SYSTEM

    with Simulator(clock=clock_of("simulator")) as sim:
        auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials, clock=clock_of("credential"))
        session = requests.Session()
        rbe.mount(session, sim.url + "/", auth=auth, clock=clock_of("adapter"))
        statuses = [session.get(sim.url + COMPLEXES, timeout=5).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert len(sim.token_requests()) == 1


def test_the_simulators_date_expiration_and_arrival_times_are_on_its_clock():
    clock = FakeClock()
    with Simulator(clock=clock) as sim:
        answer = requests.post(
            sim.url + BLOXS_TOKEN_PATH,
            json=dict(zip(("apiKey", "apiSecret"), sim.bloxs_credentials, strict=True)),
            timeout=5,
        )
        clock.advance(7.5)
        later = requests.get(sim.url + "/Test", timeout=5)
    assert answer.headers["Date"] == formatdate(1_700_000_000, usegmt=True)
    assert later.headers["Date"] == formatdate(1_700_000_007.5, usegmt=True)
    expires = parsing.parse_iso8601(answer.json()["expiration"])
    assert expires == 1_700_000_000 + 24 * 3600.0
    assert [r.at for r in sim.requests] == [1000.0, 1007.5]


def test_a_deadline_on_the_adapters_fake_clock_holds_a_real_clock_credentials_token_request():
    """The call's deadline (30 s on the adapter's fake clock) reaches the credential's
    token request as 30 s on the credential's real clock, not as a reading of another
    clock (then long past, and the token request timed out at once)."""
    clock = FakeClock()
    with Simulator() as sim:
        auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials)
        session = requests.Session()
        rbe.mount(session, sim.url + "/", auth=auth, deadline=30, clock=clock)
        sim.fail(503, path=BLOXS_TOKEN_PATH, retry_after=0.2)
        response = session.get(sim.url + COMPLEXES, timeout=5)
    assert response.status_code == 200
    assert [r.status for r in sim.token_requests()] == [503, 200]
    assert clock.sleeps == []  # the token request's wait was the credential's: real
