"""The circuit breaker: fail fast while a host keeps failing, one probe, alerts once per outage."""

from __future__ import annotations

import logging
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock

from ..helpers import refused
from ..helpers.redisserver import free_port
from ..helpers.server import Reply, json_reply

ROOT = Path(__file__).resolve().parents[2]


def _failing(server, status: int = 500, path: str = "/x", method: str = "GET") -> None:
    server.route(method, path, json_reply(status, '{"traceId": "00-abc-01"}'))


def test_five_failed_calls_open_the_circuit_and_the_sixth_fails_fast(server, session, clock):
    _failing(server)
    breaker = rbe.CircuitBreaker(failures=5, open_for=30, clock=clock)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, clock=clock)
    for _ in range(5):
        assert session.get(server.url("/x")).status_code == 500
    clock.advance(1.0)
    reply = session.get(server.url("/x?secret=zz"))  # a local 503, as errors are not raised
    caught = refused(reply, rbe.CircuitOpenError)
    assert clock.sleeps == []  # failed fast: nothing waited for
    assert len(server.seen()) == 5  # the sixth never reached the server
    error = caught.value
    assert isinstance(error, rbe.ServiceUnavailableError)
    assert isinstance(error, requests.HTTPError)
    assert error.response is reply
    assert error.retry_after == pytest.approx(29.0)  # what is left of open_for
    assert "zz" not in str(error)
    assert len(server.seen()) == 5  # the sixth never reached the network
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "open"
    raising = requests.Session()
    rbe.mount(raising, "http://", circuit_breaker=breaker, max_retries=0, raise_errors=True)
    with pytest.raises(rbe.CircuitOpenError) as raised:  # raised at once when asked to
        raising.get(server.url("/x"))
    assert raised.value.response is None
    assert raised.value.attempts == 0
    assert len(server.seen()) == 5


def test_4xx_429_and_successes_do_not_count_and_a_success_resets(server, session):
    outcomes = iter([500] * 4 + [404, 429, 200] + [500] * 4 + [200])
    server.route_fn("GET", "/x", lambda r: Reply(next(outcomes), "x"))
    breaker = rbe.CircuitBreaker(failures=5, open_for=30)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    statuses = [session.get(server.url("/x")).status_code for _ in range(12)]
    assert statuses == [500] * 4 + [404, 429, 200] + [500] * 4 + [200]
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "closed"


def test_connection_failures_count_but_a_bad_url_does_not(session):
    port = free_port()  # nothing listens there
    breaker = rbe.CircuitBreaker(failures=3, open_for=30)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            session.get(f"http://127.0.0.1:{port}/")
    refused(session.get(f"http://127.0.0.1:{port}/"), rbe.CircuitOpenError)
    for _ in range(4):
        with pytest.raises(requests.exceptions.InvalidURL):
            session.get("http://[::1/")
    assert breaker.state("http://[::1]:80") == "closed"


def test_after_open_for_exactly_one_probe_goes_while_the_others_fail_fast(server, session):
    clock = FakeClock()
    server.route("GET", "/x", Reply(500, "down"))
    breaker = rbe.CircuitBreaker(failures=2, open_for=0.3, clock=clock)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, pool_maxsize=8)
    for _ in range(2):
        session.get(server.url("/x"))
    probing, release = threading.Event(), threading.Event()

    def slow_probe(request) -> Reply:  # the probe takes a while: until the others ran
        probing.set()
        release.wait(10)
        return Reply(200, "back")

    server.route_fn("GET", "/x", slow_probe)
    clock.advance(0.3)
    before = len(server.seen())

    def call(_: int) -> str:
        response = session.get(server.url("/x"))
        return "fast" if getattr(response, "local", False) else str(response.status_code)

    with ThreadPoolExecutor(8) as pool:
        probe = pool.submit(call, 0)
        assert probing.wait(10)
        others = list(pool.map(call, range(7)))
        release.set()
        outcomes = [probe.result(), *others]
    assert sorted(outcomes) == ["200"] + ["fast"] * 7
    assert len(server.seen()) - before == 1
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "closed"
    assert session.get(server.url("/x")).status_code == 200


def test_a_failed_probe_opens_the_circuit_again_for_longer(server, session):
    server.route("GET", "/x", Reply(500, "down"))
    clock = FakeClock()
    rbe.mount(
        session,
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=1, open_for=1.0, clock=clock),
        max_retries=0,
    )
    session.get(server.url("/x"))
    clock.advance(1.0)
    assert session.get(server.url("/x")).status_code == 500  # the probe, failed
    caught = refused(session.get(server.url("/x")), rbe.CircuitOpenError)
    assert caught.value.retry_after == 2.0  # twice open_for


def test_an_announced_maintenance_opens_the_circuit_for_its_length(server, session):
    server.route("GET", "/x", Reply(503, "maintenance", {"Retry-After": "120"}))
    rbe.mount(session, "http://", circuit_breaker=rbe.CircuitBreaker(), max_retry_after=60)
    response = session.get(server.url("/x"))
    assert response.status_code == 503  # Retry-After over max_retry_after: returned at once
    caught = refused(session.get(server.url("/x")), rbe.CircuitOpenError)
    assert 115 < caught.value.retry_after <= 120


def test_alerts_come_once_per_transition(server, session, caplog):
    clock = FakeClock()
    alerts: list[rbe.AlertEvent] = []
    server.route("GET", "/x", json_reply(500, '{"traceId": "00-trace-7"}'))
    rbe.mount(
        session,
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=3, open_for=3.0, clock=clock),
        on_alert=alerts.append,
        max_retries=0,
    )
    for _ in range(3):
        session.get(server.url("/x"))
    for _ in range(1000):
        refused(session.get(server.url("/x")), rbe.CircuitOpenError)
    assert [a.kind for a in alerts] == ["circuit_open"]
    opened = alerts[0]
    assert opened.host == f"http://127.0.0.1:{server.port}"
    assert opened.failures == 3
    assert opened.trace_id == "00-trace-7"
    assert opened.until is not None
    assert opened.until == opened.at + 3.0
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and "circuit_open" in r.getMessage()
    ]
    assert len(errors) == 1
    assert "00-trace-7" in errors[0].getMessage()
    server.route("GET", "/x", Reply(200, "ok"))
    clock.advance(opened.until - clock.time())
    assert session.get(server.url("/x")).ok
    assert [a.kind for a in alerts] == ["circuit_open", "circuit_closed"]
    assert alerts[1].rejected == 1000


def test_a_closed_circuit_does_not_serialize_calls(server, session):
    # counted at the server: how many calls it was answering at once
    lock = threading.Lock()
    answering = most = 0

    def slow(request) -> Reply:
        nonlocal answering, most
        with lock:
            answering += 1
            most = max(most, answering)
        time.sleep(0.3)  # (real time: long enough for the other calls to arrive)
        with lock:
            answering -= 1
        return Reply(200, "ok")

    server.route_fn("GET", "/slow", slow)
    rbe.mount(session, "http://", circuit_breaker=rbe.CircuitBreaker(), pool_maxsize=64)
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda _: session.get(server.url("/slow")).status_code, range(64)))
    assert statuses == [200] * 64
    assert most >= 4  # serialized, the server would answer one call at a time


def test_an_adapter_with_a_breaker_and_an_outbox_pickles(tmp_path):
    adapter = rbe.BloxsAdapter(
        circuit_breaker=rbe.CircuitBreaker(failures=2), outbox=f"sqlite:///{tmp_path}/o.db"
    )
    copy = pickle.loads(pickle.dumps(adapter))
    assert copy.circuit_breaker.failures == 2
    assert copy.outbox.storage.path == f"{tmp_path}/o.db"


def test_bad_configuration_is_refused_when_the_adapter_is_made(tmp_path):
    with pytest.raises(ValueError, match="failures"):
        rbe.CircuitBreaker(failures=0)
    with pytest.raises(ValueError, match="open_for"):
        rbe.CircuitBreaker(open_for=-1)
    with pytest.raises(TypeError, match="circuit_breaker"):
        rbe.BloxsAdapter(circuit_breaker="yes")
    with pytest.raises(ValueError, match="outbox"):
        rbe.BloxsAdapter(outbox="redis://127.0.0.1:6379/0")
    with pytest.raises(TypeError, match="on_alert"):
        rbe.BloxsAdapter(on_alert=42)


def test_a_write_refused_by_an_open_circuit_is_kept_as_never_sent(server, session, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    alerts: list[rbe.AlertEvent] = []
    rbe.mount(
        session,
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=1),
        outbox=outbox_url,
        on_alert=alerts.append,
        max_retries=0,
    )
    session.post(server.url("/r"), data=b"first")
    caught = refused(session.post(server.url("/r"), data=b"second"), rbe.CircuitOpenError)
    entries = rbe.Outbox(outbox_url).entries()
    assert [e.body for e in entries] == [b"first", b"second"]
    assert caught.value.outbox_id == entries[1].id
    assert (entries[1].kind, entries[1].uncertain) == ("circuit_open", False)
    assert sorted(a.kind for a in alerts) == ["circuit_open", "queued"]  # one "queued", not two


def test_a_token_endpoint_that_is_down_counts_for_the_breaker_and_keeps_the_write(
    server, session, outbox_url
):
    server.route("POST", "/w", Reply(201, "ok"))
    breaker = rbe.CircuitBreaker(failures=2)
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(f"http://127.0.0.1:{free_port()}", "k", "s", max_retries=0),
        circuit_breaker=breaker,
        outbox=outbox_url,
        max_retries=0,
    )
    for n in range(2):
        with pytest.raises(requests.ConnectionError) as caught:
            session.post(server.url("/w"), data=str(n).encode())
        assert caught.value.outbox_id == n + 1
    refused(session.post(server.url("/w"), data=b"2"), rbe.CircuitOpenError)
    entries = rbe.Outbox(outbox_url).entries()
    assert [e.body for e in entries] == [b"0", b"1", b"2"]
    assert not any(e.uncertain for e in entries)  # none was sent
    assert server.seen() == []


def test_announced_maintenance_wins_over_the_failure_count_and_the_probe(server, session):
    server.route("GET", "/m", Reply(503, "maintenance", {"Retry-After": "600"}))
    breaker = rbe.CircuitBreaker(failures=1, open_for=0.2)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retry_after=60, max_retries=0)
    session.get(server.url("/m"))  # the 503 that crosses the count announces 600 s
    caught = refused(session.get(server.url("/m")), rbe.CircuitOpenError)
    assert caught.value.retry_after > 590
    assert caught.value.attempts == 0  # nothing was sent


def test_only_the_probe_reopens_a_half_open_circuit():
    clock = FakeClock()
    breaker = rbe.CircuitBreaker(failures=1, open_for=0.05, clock=clock)
    host = "https://api.example:443"
    breaker.record(host, True)
    clock.advance(0.05)
    assert breaker.admit(host) == (True, 0.0, True)  # the probe goes
    breaker.record(host, True, probe=False)  # a call admitted earlier fails its retries
    assert breaker.state(host) == "half-open"
    admitted, _, probe = breaker.admit(host)
    assert (admitted, probe) == (False, False)  # the probe is still in flight
    breaker.record(host, False, probe=True)
    assert breaker.state(host) == "closed"
