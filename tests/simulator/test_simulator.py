"""The simulator behaves like the APIs it stands in for, and its faults are scriptable."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.errors import parsing
from requests_bloxs_errors.simulator import COMPLEXES, Simulator

from ..helpers.cli import assert_users_suite_passes

ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"


def _raw(sim: Simulator) -> requests.Session:
    """A plain session (no adapter) with a valid Bloxs token: sees exactly what the server sends."""
    token = requests.post(
        sim.url + "/Authorization",
        json=dict(zip(("apiKey", "apiSecret"), sim.bloxs_credentials, strict=False)),
        timeout=5,
    ).json()["token"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture
def raw(sim: Simulator) -> requests.Session:
    """:func:`_raw` for the ``sim`` fixture's simulator."""
    return _raw(sim)


@pytest.fixture
def clocked(clock: FakeClock) -> Iterator[tuple[Simulator, requests.Session]]:
    """A simulator on the test's fake clock, and a plain session for it."""
    with Simulator(window=1.0, clock=clock) as simulator:
        yield simulator, _raw(simulator)


def test_bloxs_token_answer_shape(clocked, clock):
    sim, _ = clocked
    key, secret = sim.bloxs_credentials
    answer = requests.post(
        sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=5
    )
    document = answer.json()
    assert set(document) == {"token", "expiration"}
    expires = parsing.parse_iso8601(document["expiration"])
    assert expires - clock.time() == pytest.approx(24 * 3600, abs=1e-3)  # (to its millisecond)


def test_bloxs_token_refusal_is_a_validation_400(sim):
    answer = requests.post(sim.url + "/Authorization", json={"apiKey": "x"}, timeout=5)
    assert answer.status_code == 400
    assert rbe.classify(answer).errors == {"apiSecret": ("The apiSecret field is required.",)}


def test_rate_limit_window_per_type(clocked, clock):
    sim, raw = clocked
    sim.limits["get"] = 3
    statuses = [raw.get(sim.url + COMPLEXES).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = raw.get(sim.url + COMPLEXES)
    assert "Retry-After" not in limited.headers  # Bloxs documents none
    assert raw.post(sim.url + COMPLEXES + "/filter", json={}).status_code == 200  # another type
    clock.advance(1.0)  # the next window
    assert raw.get(sim.url + COMPLEXES).status_code == 200


def test_rate_limit_can_send_retry_after(sim, raw):
    sim.limits["get"] = 1
    sim.bloxs_retry_after = True
    raw.get(sim.url + COMPLEXES)
    limited = raw.get(sim.url + COMPLEXES)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"


def test_dealcloud_quota_message(sim):
    token_url, client_id, client_secret = sim.dealcloud_credentials
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    token = requests.post(token_url, data=form, timeout=5).json()
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 900
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    answers = [requests.get(sim.url + ENTRIES, headers=headers, timeout=5) for _ in range(6)]
    limited = answers[-1]
    assert limited.status_code == 429
    assert limited.headers["Content-Type"] == "text/plain"
    assert limited.text == "API calls quota exceeded! maximum admitted 5 per 1 second."
    assert limited.headers["Retry-After"] == "1"
    info = rbe.classify(limited)
    assert info.quota == (5, 1.0)
    assert info.trace_id == "appId=cid-v1:simulated-dealcloud"


def test_expired_and_revoked_tokens_get_401(clocked, clock):
    sim, raw = clocked
    assert raw.get(sim.url + COMPLEXES).status_code == 200
    sim.revoke_tokens()
    assert raw.get(sim.url + COMPLEXES).status_code == 401
    sim.bloxs_token_lifetime = 0.2
    key, secret = sim.bloxs_credentials
    token = requests.post(
        sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=5
    ).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    clock.advance(0.19)
    assert requests.get(sim.url + COMPLEXES, headers=bearer, timeout=5).status_code == 200
    clock.advance(0.02)  # its lifetime is over (0.19 + 0.01 may round to just under 0.2)
    assert requests.get(sim.url + COMPLEXES, headers=bearer, timeout=5).status_code == 401


def test_error_shapes(sim, raw):
    assert raw.get(sim.url + COMPLEXES + "/999").status_code == 404
    not_allowed = raw.get(sim.url + COMPLEXES + "/filter")
    assert not_allowed.status_code == 405
    assert not_allowed.headers["Allow"] == "POST"
    media = raw.put(sim.url + COMPLEXES + "/1", data="name=x")
    assert media.status_code == 415
    assert media.json()["title"] == "Unsupported Media Type"
    assert media.json()["traceId"].startswith("00-")
    invalid = raw.get(sim.url + COMPLEXES, params={"paging.pageSize": 5000})
    assert rbe.classify(invalid).errors == {
        "Paging.PageSize": ("The field PageSize must be between 1 and 1000.",)
    }


def test_fail_n_times_then_succeed(sim, raw):
    fault = sim.fail(500, path=COMPLEXES, times=2)
    statuses = [raw.get(sim.url + COMPLEXES).status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert fault.fired == 2
    assert [r.fault for r in sim.seen("GET", COMPLEXES)] == [fault.name, fault.name, None]


def test_fail_every_kth_request(sim, raw):
    sim.fail(503, path=COMPLEXES, every=3, times=None)
    statuses = [raw.get(sim.url + COMPLEXES).status_code for _ in range(7)]
    assert statuses == [200, 200, 503, 200, 200, 503, 200]


def test_fault_filters_by_method_and_path(sim, raw):
    sim.fail(500, path=COMPLEXES, method="POST", times=None)
    assert raw.get(sim.url + COMPLEXES).status_code == 200
    assert raw.post(sim.url + COMPLEXES, json={"name": "x"}).status_code == 500
    assert raw.get(sim.url + "/Test").status_code == 200


def test_maintenance_window(clocked, clock):
    sim, raw = clocked
    sim.maintenance(0.5)
    down = raw.get(sim.url + COMPLEXES)
    assert down.status_code == 503
    assert down.headers["Retry-After"] == "1"
    clock.advance(0.49)
    assert raw.get(sim.url + COMPLEXES).status_code == 503
    clock.advance(0.01)
    assert raw.get(sim.url + COMPLEXES).status_code == 200


def test_drop_resets_the_connection(sim, raw):
    sim.drop(path=COMPLEXES)
    with pytest.raises(requests.ConnectionError):
        raw.get(sim.url + COMPLEXES)
    assert sim.seen("GET", COMPLEXES)[0].status is None
    assert raw.get(sim.url + COMPLEXES).status_code == 200


def test_slow_answers_late_without_blocking_others(sim, raw):
    # Real time: an answer's delay is real (the client's socket times it). The slow
    # answer takes 20 s; the second request's read timeout is 5 s: it is answered
    # only if the slow answer held no lock it waits behind.
    sim.slow(20.0, path=COMPLEXES + "/1")
    with pytest.raises(requests.ReadTimeout):
        raw.get(sim.url + COMPLEXES + "/1", timeout=(2, 0.2))
    assert raw.get(sim.url + COMPLEXES + "/2", timeout=(2, 5)).status_code == 200


def test_the_adapter_against_a_scripted_maintenance(sim):
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials))
    session.get(sim.url + COMPLEXES)  # the token first: maintenance would hold it back too
    sim.maintenance(0.3)
    response = session.get(sim.url + COMPLEXES)
    assert response.status_code == 200
    assert [a.status for a in rbe.attempts(response)] == [503, 200]


def test_fixture_in_a_users_suite(tmp_path):
    """The installed pytest plugin gives another project's tests a running simulator."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import requests
            import requests_bloxs_errors as rbe

            def test_sync(bloxs_simulator):
                bloxs_simulator.fail(503, path="/api/v1/realestateobjects/complexes", retry_after=0)
                session = requests.Session()
                auth = rbe.BloxsTokenAuth(bloxs_simulator.url, *bloxs_simulator.bloxs_credentials)
                rbe.mount(session, bloxs_simulator.url + "/", auth=auth)
                response = session.get(bloxs_simulator.url + "/api/v1/realestateobjects/complexes")
                assert response.status_code == 200
                assert len(bloxs_simulator.seen("GET", "/api/v1/realestateobjects/complexes")) == 2
            """
        )
    )
    assert_users_suite_passes(tmp_path)
