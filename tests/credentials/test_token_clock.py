"""A credential's time is its clock's: its token requests' retries and waits, and a
token's lifetime, measured on the clock of the server that stated its expiry."""

from __future__ import annotations

import time

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import SYSTEM, FakeClock
from requests_bloxs_errors.credentials import signing
from requests_bloxs_errors.simulator import COMPLEXES, DEALCLOUD_TOKEN_PATH, Simulator

ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"


def test_a_token_requests_retries_wait_on_the_credentials_clock(sim):
    clock = FakeClock()
    token_url, client_id, client_secret = sim.dealcloud_credentials
    auth = rbe.ClientCredentialsAuth(token_url, client_id, client_secret, clock=clock)
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=auth)  # the adapter on the real clock
    sim.fail(429, path=DEALCLOUD_TOKEN_PATH, times=2, retry_after=10)
    started = time.monotonic()
    assert session.get(sim.url + ENTRIES, timeout=5).status_code == 200
    assert time.monotonic() - started < 5.0  # two real waits would be 20 s
    assert clock.sleeps == [10.0, 10.0]
    assert [r.status for r in sim.token_requests()] == [429, 429, 200]


@pytest.mark.parametrize("server_off_by", [-3600.0, +3600.0])
def test_a_tokens_lifetime_is_measured_on_the_clock_of_the_server_that_states_it(server_off_by):
    """A server an hour behind or ahead (its ``Date`` and its ``expiration`` on its own
    clock): the 600 s token is renewed 60 s before it expires on the credential's clock,
    not at once (behind) nor an hour late (ahead)."""
    server_clock = FakeClock.starting_now()
    server_clock.step_wall(server_off_by)
    clock = FakeClock.starting_now()
    with Simulator(clock=server_clock, bloxs_token_lifetime=600.0) as sim:
        auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials, clock=clock)
        session = requests.Session()
        rbe.mount(session, sim.url + "/", auth=auth)
        for _ in range(3):
            assert session.get(sim.url + COMPLEXES, timeout=5).status_code == 200
        assert len(sim.token_requests()) == 1
        clock.advance(535.0)
        session.get(sim.url + COMPLEXES, timeout=5)
        assert len(sim.token_requests()) == 1
        clock.advance(6.0)  # inside the renewal margin (the Date's rounding: 1 s)
        session.get(sim.url + COMPLEXES, timeout=5)
        assert len(sim.token_requests()) == 2


def test_a_nested_signing_scope_carries_a_deadline_on_another_clock_over_as_seconds_left():
    """A credential working for a call on one clock, inside a call on another: the
    earlier deadline wins, compared as seconds left, not as readings of two clocks."""
    outer_clock = FakeClock()  # monotonic 1000: far from the real clock's reading
    with signing.signing(object(), 1030.0, clock=outer_clock):
        with signing.signing(object(), SYSTEM.monotonic() + 10.0, clock=SYSTEM) as inner:
            assert inner.clock is outer_clock
            assert inner.deadline == pytest.approx(1010.0, abs=1.0)
            assert signing.time_left() == pytest.approx(10.0, abs=1.0)
        with signing.signing(object(), SYSTEM.monotonic() + 60.0, clock=SYSTEM) as inner:
            assert inner.deadline == 1030.0  # the outer deadline is the earlier
