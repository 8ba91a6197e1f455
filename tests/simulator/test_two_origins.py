"""The simulator serves Bloxs and DealCloud each on an origin of its own
(``dealcloud_port``), as production does: each origin answers only its own API's
paths, both run on one clock with one set of faults and limits, and what arrived
is counted (``summary()``) and seen as it is answered (``watch()``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.simulator import (
    BLOXS_TOKEN_PATH,
    COMPLEXES,
    DEALCLOUD_TOKEN_PATH,
    Seen,
    Simulator,
    Summary,
)

ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"


def _bloxs_token(sim: Simulator, api_key: str | None = None) -> requests.Response:
    key, secret = sim.bloxs_credentials
    return requests.post(
        sim.bloxs_url + BLOXS_TOKEN_PATH,
        json={"apiKey": api_key if api_key is not None else key, "apiSecret": secret},
        timeout=5,
    )


def _dealcloud_token(sim: Simulator, url: str | None = None) -> requests.Response:
    token_url, client_id, client_secret = sim.dealcloud_credentials
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }
    return requests.post(url or token_url, data=form, timeout=5)


@pytest.fixture
def split(clock: FakeClock) -> Iterator[Simulator]:
    """Both APIs, each on its own free port, on the test's fake clock."""
    with Simulator(dealcloud_port=0, window=1.0, clock=clock) as simulator:
        yield simulator


def test_each_api_has_an_origin_of_its_own(split):
    bloxs, dealcloud = urlsplit(split.bloxs_url), urlsplit(split.dealcloud_url)
    assert (
        (bloxs.scheme, bloxs.hostname)
        == (dealcloud.scheme, dealcloud.hostname)
        == (
            "http",
            "127.0.0.1",
        )
    )
    assert bloxs.port != dealcloud.port
    assert split.url == split.bloxs_url
    assert split.dealcloud_credentials[0] == split.dealcloud_url + DEALCLOUD_TOKEN_PATH


def test_each_origin_answers_its_own_apis_paths_and_refuses_the_others(split):
    bloxs = {"Authorization": "Bearer " + _bloxs_token(split).json()["token"]}
    dealcloud = {"Authorization": "Bearer " + _dealcloud_token(split).json()["access_token"]}
    assert requests.get(split.bloxs_url + COMPLEXES, headers=bloxs, timeout=5).status_code == 200
    assert requests.get(split.dealcloud_url + ENTRIES, headers=dealcloud, timeout=5).ok

    # the other API's paths, even with that API's own valid token: 404 there
    wrong = [
        requests.get(split.dealcloud_url + COMPLEXES, headers=bloxs, timeout=5),
        requests.get(split.dealcloud_url + "/Test", headers=bloxs, timeout=5),
        requests.post(
            split.dealcloud_url + BLOXS_TOKEN_PATH,
            json=dict(zip(("apiKey", "apiSecret"), split.bloxs_credentials, strict=True)),
            timeout=5,
        ),
        requests.get(split.bloxs_url + ENTRIES, headers=dealcloud, timeout=5),
        _dealcloud_token(split, url=split.bloxs_url + DEALCLOUD_TOKEN_PATH),
    ]
    assert [answer.status_code for answer in wrong] == [404] * 5
    # the 404 says where the path is served, for whoever pointed a client wrongly
    assert wrong[0].json()["detail"] == (
        f"This is the DealCloud API; this path is Bloxs's, at {split.bloxs_url}."
    )
    assert wrong[3].json()["detail"] == (
        f"This is the Bloxs API; this path is DealCloud's, at {split.dealcloud_url}."
    )
    assert [seen.misdirected for seen in split.requests] == [False] * 4 + [True] * 5


def test_one_address_still_serves_both_apis():
    with Simulator() as sim:
        assert sim.url == sim.bloxs_url == sim.dealcloud_url
        assert _bloxs_token(sim).status_code == 200
        assert _dealcloud_token(sim).status_code == 200
        assert [(seen.vendor, seen.misdirected) for seen in sim.requests] == [
            ("bloxs", False),
            ("dealcloud", False),
        ]


def test_the_adapter_signs_each_apis_calls_with_its_own_token(split):
    session = requests.Session()
    rbe.mount(
        session,
        split.bloxs_url + "/",
        auth=rbe.BloxsTokenAuth(split.bloxs_url, *split.bloxs_credentials),
    )
    rbe.mount(
        session,
        split.dealcloud_url + "/",
        auth=rbe.ClientCredentialsAuth(*split.dealcloud_credentials),
    )
    for _ in range(2):
        assert session.get(split.bloxs_url + COMPLEXES, timeout=5).status_code == 200
        assert session.get(split.dealcloud_url + ENTRIES, timeout=5).status_code == 200
    assert split.summary().tokens == {"bloxs": {"demo-key": 1}, "dealcloud": {"demo-client": 1}}


def test_the_summary_counts_requests_by_category_tokens_by_credential_and_429s(split):
    split.limits["get"] = 2
    bloxs = {"Authorization": "Bearer " + _bloxs_token(split).json()["token"]}
    assert _bloxs_token(split, api_key="someone-else").status_code == 400
    dealcloud = {"Authorization": "Bearer " + _dealcloud_token(split).json()["access_token"]}
    gets = [
        requests.get(split.bloxs_url + COMPLEXES, headers=bloxs, timeout=5).status_code
        for _ in range(3)
    ]
    assert gets == [200, 200, 429]
    requests.post(split.bloxs_url + COMPLEXES + "/filter", json={}, headers=bloxs, timeout=5)
    requests.get(split.bloxs_url + "/api/v1/documents/7/download", headers=bloxs, timeout=5)
    requests.put(split.bloxs_url + COMPLEXES + "/1", json={"name": "x"}, headers=bloxs, timeout=5)
    entries = [
        requests.get(split.dealcloud_url + ENTRIES, headers=dealcloud, timeout=5).status_code
        for _ in range(6)
    ]
    assert entries == [200] * 5 + [429]  # DealCloud's quota: 5 per second
    requests.get(split.dealcloud_url + COMPLEXES, headers=bloxs, timeout=5)  # misdirected
    split.drop(path="/Test")
    with pytest.raises(requests.ConnectionError):
        requests.get(split.bloxs_url + "/Test", timeout=5)

    summary = split.summary()
    assert summary == Summary(
        requests={
            "authorization": 2,
            "token": 1,
            "get": 4,  # three GETs of the complexes and the dropped /Test
            "filter": 1,
            "download": 1,
            "update": 1,
            "dealcloud": 6,
        },
        tokens={"bloxs": {"demo-key": 1, "someone-else": 1}, "dealcloud": {"demo-client": 1}},
        throttled={"get": 1, "dealcloud": 1},
        misdirected=1,
        dropped=1,
    )
    assert summary.total == len(split.requests) == 17


def test_one_clock_one_set_of_faults_and_limits_for_both_origins(split, clock):
    split.maintenance(5.0)
    assert _bloxs_token(split).status_code == 503
    assert _dealcloud_token(split).status_code == 503
    clock.advance(5.0)  # the maintenance is over on the one clock, for both
    token = _bloxs_token(split)
    assert token.status_code == 200
    assert _dealcloud_token(split).status_code == 200
    split.fail(500, path=ENTRIES, times=None)  # a fault on one API's path
    split.fail(502, path=COMPLEXES, times=None)
    bloxs = {"Authorization": "Bearer " + token.json()["token"]}
    assert requests.get(split.dealcloud_url + ENTRIES, timeout=5).status_code == 500
    assert requests.get(split.bloxs_url + COMPLEXES, headers=bloxs, timeout=5).status_code == 502
    # a path of the other API gets its 404 on the wrong origin: neither a fault nor a
    # rate limit of the API it belongs to counts it
    assert requests.get(split.bloxs_url + ENTRIES, timeout=5).status_code == 404
    assert requests.get(split.dealcloud_url + COMPLEXES, timeout=5).status_code == 404
    dates = {
        requests.get(url + "/nothing", timeout=5).headers["Date"]
        for url in (split.bloxs_url, split.dealcloud_url)
    }
    assert len(dates) == 1  # the Date of both, from the one (stopped) fake clock


def test_watch_sees_each_request_as_it_is_answered_with_the_credential_never_a_secret(split, clock):
    seen: list[Seen] = []
    split.watch(seen.append)
    key, secret = split.bloxs_credentials
    _bloxs_token(split)
    _dealcloud_token(split)
    requests.post(  # a client that put its secret where the key goes
        split.bloxs_url + BLOXS_TOKEN_PATH, json={"apiKey": secret, "apiSecret": key}, timeout=5
    )
    requests.get(split.bloxs_url + COMPLEXES + "?apiKey=in-the-query", timeout=5)
    assert [(s.vendor, s.method, s.path, s.status, s.credential) for s in seen] == [
        ("bloxs", "POST", BLOXS_TOKEN_PATH, 200, "demo-key"),
        ("dealcloud", "POST", DEALCLOUD_TOKEN_PATH, 200, "demo-client"),
        ("bloxs", "POST", BLOXS_TOKEN_PATH, 400, "(a secret, not shown)"),
        ("bloxs", "GET", COMPLEXES, 401, None),
    ]
    assert seen == split.requests
    assert {s.received for s in seen} == {clock.time()}  # arrival times on its clock


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"dealcloud_port": 70000},
            r"dealcloud_port must be 0 to 65535 \(0: any free port\), not 70000",
        ),
        ({"dealcloud_port": True}, "dealcloud_port must be 0 to 65535"),
        ({"port": 18080, "dealcloud_port": 18080}, "dealcloud_port must differ from port"),
    ],
)
def test_a_bad_dealcloud_port_is_named(settings, message):
    with pytest.raises(ValueError, match=message):
        Simulator(**settings)


def test_a_busy_dealcloud_port_is_named_and_leaves_no_port_taken():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with socket.socket() as probe:  # a port free now, for Bloxs
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        with pytest.raises(OSError, match="Address already in use") as caught:
            Simulator(port=free, dealcloud_port=taken)
    assert caught.value.filename == f"127.0.0.1:{taken}"
    with socket.socket() as again:  # Bloxs's listener was closed when DealCloud's failed
        again.bind(("127.0.0.1", free))


@pytest.mark.bloxs_simulator(dealcloud_port=0)
def test_the_fixtures_marker_gives_the_two_origin_form(bloxs_simulator):
    assert bloxs_simulator.bloxs_url != bloxs_simulator.dealcloud_url
    assert _dealcloud_token(bloxs_simulator).status_code == 200
    assert requests.get(bloxs_simulator.bloxs_url + ENTRIES, timeout=5).status_code == 404
    assert bloxs_simulator.summary().misdirected == 1


def test_the_factory_gives_the_two_origin_form(bloxs_simulator_factory):
    sim = bloxs_simulator_factory(dealcloud_port=0)
    assert sim.bloxs_url != sim.dealcloud_url
    assert _bloxs_token(sim).status_code == 200
    assert sim.summary().tokens == {"bloxs": {"demo-key": 1}}
