"""Every way a call ends reaches the steps (issue 26, point 3).

A call that ends with an exception in the middle of the loop (a header value
that is not Latin-1, a body generator that raises, a signal handler's job
timeout) or with a re-authentication that fails must give back what each
step took: the rate limit's permit, the half-open circuit's probe slot, the
attempt's span; then the caller gets the exception unchanged. Each test goes
through a real loopback server.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest
import requests
from opentelemetry import trace

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock

from ..helpers import otel
from ..helpers.server import Reply, ScriptServer


class JobTimeout(Exception):
    """What a job runner's SIGALRM handler raises."""


def _limit(clock: FakeClock) -> rbe.RateLimit:
    return rbe.RateLimit({"*": (5, 60.0)}, clock=clock)


def _in_flight(limit: rbe.RateLimit) -> int:
    return sum(state.in_flight for state in limit.state())


@pytest.fixture
def traced() -> Iterator[object]:
    with otel.sdk() as sdk:
        yield sdk


def _unencodable(session: requests.Session, url: str) -> None:
    session.post(url, data=b"{}", headers={"X-City": "\u0141\u00f3d\u017a"}, timeout=5)


def _raising_body(session: requests.Session, url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"a":'
        raise ValueError("the generator broke")

    session.post(url, data=chunks(), timeout=5)


@pytest.mark.parametrize(
    ("send", "raised"),
    [(_unencodable, UnicodeEncodeError), (_raising_body, ValueError)],
    ids=["header_not_latin1", "body_generator_raises"],
)
def test_3_an_exception_in_the_middle_gives_back_permit_probe_and_span(
    server: ScriptServer, session: requests.Session, traced, send, raised
) -> None:
    clock = FakeClock()
    limit = _limit(clock)
    breaker = rbe.CircuitBreaker(failures=1, open_for=10.0, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, circuit_breaker=breaker, max_retries=0)
    server.route("POST", "/x", Reply(200, "ok"))
    server.route("GET", "/x", Reply(200, "ok"))
    server.route("GET", "/down", Reply(503, "down"))
    host = server.url("")
    session.get(server.url("/down"), timeout=5)  # one failure opens the circuit
    assert breaker.state(host) == "open"
    clock.advance(10.1)  # the next call is the probe

    with pytest.raises(raised):
        send(session, server.url("/x"))

    assert _in_flight(limit) == 0  # the permit ended: no category stalls for its hold
    assert breaker.state(host) == "half-open"
    # the probe slot was given back: the next call goes as the new probe, and closes it
    assert session.get(server.url("/x"), timeout=5).status_code == 200
    assert breaker.state(host) == "closed"
    # the interrupted attempt's span ended, with the exception's type, and is not current
    assert not trace.get_current_span().is_recording()
    interrupted = [s for s in traced.spans() if s.attributes.get("error.type") == raised.__name__]
    assert len(interrupted) == 1
    assert interrupted[0].end_time is not None
    assert interrupted[0].status.status_code.name == "ERROR"


def test_3_a_signal_handlers_job_timeout_gives_back_the_permit(
    server: ScriptServer, session: requests.Session, traced
) -> None:
    clock = FakeClock()
    limit = _limit(clock)
    rbe.mount(session, "http://", rate_limit=limit, max_retries=0)
    server.route("GET", "/slow", Reply(200, "late", delay=3.0))

    def alarm(signum: int, frame: object) -> None:
        raise JobTimeout("the job ran out of time")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(JobTimeout):  # the caller's own exception, unchanged
            session.get(server.url("/slow"), timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert _in_flight(limit) == 0
    assert not trace.get_current_span().is_recording()
    (span,) = [s for s in traced.spans() if s.attributes.get("error.type") == "JobTimeout"]
    assert span.end_time is not None


def test_3_a_write_whose_reauthentication_fails_is_kept_counted_and_its_span_ends(
    server: ScriptServer, session: requests.Session, traced, outbox_url: str
) -> None:
    server.route(
        "POST",
        "/Authorization",
        Reply(200, json.dumps({"token": "t1"}), {"Content-Type": "application/json"}),
        Reply(503, "token endpoint down"),
    )
    server.route("POST", "/w", Reply(401, "expired"))
    breaker = rbe.CircuitBreaker(failures=1, open_for=30.0)
    alerts: list[rbe.AlertEvent] = []
    adapter = rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "secret-value-1", max_retries=0),
        circuit_breaker=breaker,
        outbox=outbox_url,
        on_alert=alerts.append,
        max_retries=0,
    )
    with pytest.raises(rbe.ServerError) as caught:
        session.post(server.url("/w"), json={"name": "x"}, timeout=5)

    assert caught.value.outbox_id is not None  # kept for a replay
    assert adapter.outbox is not None
    (entry,) = adapter.outbox.entries()
    assert (entry.method, entry.id) == ("POST", caught.value.outbox_id)
    assert breaker.state(server.url("")) == "open"  # counted: the API's token endpoint is down
    assert "circuit_open" in [a.kind for a in alerts]
    assert not trace.get_current_span().is_recording()
    (span,) = [s for s in traced.spans() if s.attributes.get("http.response.status_code") == 401]
    assert span.end_time is not None


def test_3_a_job_timeout_while_waiting_for_a_permit_gives_the_reservation_back(
    server: ScriptServer, session: requests.Session
) -> None:
    limit = rbe.RateLimit({"*": (1, 5.0)})  # (the real clock: the wait is a real sleep)
    rbe.mount(session, "http://", rate_limit=limit, max_retries=0)
    server.route("GET", "/x", Reply(200, "ok"))
    assert session.get(server.url("/x"), timeout=5).status_code == 200

    def alarm(signum: int, frame: object) -> None:
        raise JobTimeout("the job ran out of time")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(JobTimeout):  # raised while the second call waits its turn
            session.get(server.url("/x"), timeout=5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    (state,) = limit.state()
    assert (state.in_flight, state.ended) == (0, 1)  # never sent: not counted
    assert len(server.seen("GET", "/x")) == 1
