"""OpenTelemetry (issue 21): a CLIENT span per attempt with the HTTP semantic conventions,
waits and re-authentication as events, the fixed metrics, the global providers only.

The real SDK records everything here (an in-memory span exporter and metric
reader), over real sockets; the global providers are set for each test and
reset after it with OpenTelemetry's own test helpers.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import COMPLEXES

from ..helpers.otel import sdk
from ..helpers.server import Reply, json_reply

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def otel() -> Iterator[SimpleNamespace]:
    """Global providers with in-memory exporters, for this test only."""
    with sdk() as recorded:
        yield recorded


def _ours(spans: Any) -> list[Any]:
    return [s for s in spans if s.instrumentation_scope.name == "requests_bloxs_errors"]


def test_each_attempt_is_a_client_span_with_the_semantic_conventions(otel, server, session):
    server.route("GET", "/items", Reply(503, "busy"), Reply(200, "ok"))
    rbe.mount(session, "http://", backoff_factor=0.01)
    response = session.get(server.url("/items?token=s3cret&page=2"))
    assert response.status_code == 200
    first, second = _ours(otel.spans())
    for span in (first, second):
        assert (span.name, span.kind) == ("GET", SpanKind.CLIENT)
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == server.port
        # query values are redacted; nothing of the secret reaches the span
        assert span.attributes["url.full"] == server.url("/items?token=REDACTED&page=REDACTED")
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR
    assert "http.request.resend_count" not in first.attributes
    (retry,) = first.events
    assert retry.name == "rbe.retry"
    assert retry.attributes["rbe.error.kind"] == "service_unavailable"
    assert retry.attributes["rbe.wait.reason"] == "backoff"
    assert 0 < retry.attributes["rbe.wait.duration"] <= 0.05
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert "error.type" not in second.attributes
    assert second.status.status_code is StatusCode.UNSET
    assert first.end_time <= second.start_time  # the wait lies between them


def test_spans_nest_under_the_callers_span_and_a_token_request_under_its_attempt(otel, sim):
    key, secret = sim.bloxs_credentials
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret))
    with trace.get_tracer("the job").start_as_current_span("nightly sync") as job:
        assert session.get(sim.url + COMPLEXES, timeout=5).ok
    token, data = _ours(otel.spans())
    assert (token.name, data.name) == ("POST", "GET")
    assert data.parent.span_id == job.get_span_context().span_id
    assert token.parent.span_id == data.context.span_id  # fetched to sign that attempt
    assert token.context.trace_id == job.get_span_context().trace_id
    assert "apiSecret" not in str(token.attributes)
    assert _points_sum(otel.metrics(), "rbe.client.token.requests") == 1


def test_the_requests_instrumentations_span_is_the_parent_of_each_attempt(otel, server, session):
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    server.route("GET", "/x", Reply(500, "no"), Reply(200, "ok"))
    rbe.mount(session, "http://", backoff_factor=0.01)
    RequestsInstrumentor().instrument()
    try:
        assert session.get(server.url("/x")).ok
    finally:
        RequestsInstrumentor().uninstrument()
    spans = otel.spans()
    (call,) = [s for s in spans if s.instrumentation_scope.name != "requests_bloxs_errors"]
    attempts = _ours(spans)
    assert len(attempts) == 2
    assert {a.parent.span_id for a in attempts} == {call.context.span_id}


def test_a_reauthentication_is_an_event_and_a_resend(otel, sim):
    key, secret = sim.bloxs_credentials
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret))
    assert session.get(sim.url + COMPLEXES, timeout=5).ok
    sim.revoke_tokens()
    assert session.get(sim.url + COMPLEXES, timeout=5).ok
    gets = [s for s in _ours(otel.spans()) if s.name == "GET"]
    refused, resent = gets[1], gets[2]
    assert refused.attributes["http.response.status_code"] == 401
    assert [e.name for e in refused.events] == ["rbe.reauth"]
    assert resent.attributes["http.request.resend_count"] == 1
    retries = otel.metrics()["rbe.client.retries"]
    assert [(attrs, p.value) for attrs, p in retries] == [({"rbe.error.kind": "unauthorized"}, 1)]


def test_the_error_bodys_trace_id_is_on_the_span(otel, server, session):
    body = '{"title": "Bad Request", "status": 400, "traceId": "00-abc123-01", "errors": {}}'
    server.route("POST", "/items", json_reply(400, body))
    rbe.mount(session, "http://")
    assert session.post(server.url("/items"), json={}).status_code == 400
    (span,) = _ours(otel.spans())
    assert span.attributes["rbe.error.trace_id"] == "00-abc123-01"
    assert span.attributes["rbe.error.kind"] == "bad_request"
    assert span.attributes["error.type"] == "400"


def test_an_attempt_without_a_response_has_its_error_type(otel, server, session):
    server.route("GET", "/reset", Reply(fault="reset"))
    rbe.mount(session, "http://", max_retries=0)
    with pytest.raises(requests.ConnectionError):
        session.get(server.url("/reset"))
    (span,) = _ours(otel.spans())
    assert span.attributes["error.type"]
    assert "http.response.status_code" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR
    ((attributes, point),) = otel.metrics()["http.client.request.duration"]
    assert attributes["error.type"] == span.attributes["error.type"]
    assert point.count == 1


def test_the_metrics_count_attempts_resends_and_waits(otel, server, session):
    server.route(
        "GET",
        "/q",
        Reply(429, "slow down", {"Retry-After": "0"}),
        Reply(503, "busy"),
        Reply(200, "ok"),
    )
    limit = rbe.RateLimit({"*": (1, 0.2)})
    rbe.mount(session, "http://", rate_limit=limit, backoff_factor=0.01)
    assert session.get(server.url("/q")).ok
    found = otel.metrics()
    durations = {attrs["http.response.status_code"]: p.count for attrs, p in found[
        "http.client.request.duration"
    ]}  # fmt: skip
    assert durations == {429: 1, 503: 1, 200: 1}  # one measurement per attempt
    for attrs, _ in found["http.client.request.duration"]:
        assert attrs["url.scheme"] == "http"
        assert attrs["server.address"] == "127.0.0.1"
    retries = {attrs["rbe.error.kind"]: p.value for attrs, p in found["rbe.client.retries"]}
    assert retries == {"rate_limited": 1, "service_unavailable": 1}
    waits = {attrs["rbe.wait.reason"]: p.count for attrs, p in found["rbe.client.wait.duration"]}
    # the 429's Retry-After (0 s) was shorter than the pause it taught: the wait was
    # the limiter's hold; each retry then waited for a permit, a period after the last end
    assert waits["rate_limit"] >= 2
    assert waits.get("backoff", 0) + waits.get("retry_after", 0) + waits["rate_limit"] >= 3


def test_a_refused_call_is_an_rbe_refused_span_and_a_circuit_wait(otel, server, session):
    server.route("GET", "/down", Reply(500, "down"))
    breaker = rbe.CircuitBreaker(failures=1, open_for=30)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    assert session.get(server.url("/down")).status_code == 500
    refused = session.get(server.url("/down"))
    assert refused.status_code == 503  # a local reply
    spans = _ours(otel.spans())
    assert [s.name for s in spans] == ["GET", "rbe.refused"]
    span = spans[1]
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes["error.type"] == "circuit_open"
    assert 29 < span.attributes["rbe.wait.duration"] <= 30
    found = otel.metrics()
    ((attrs, point),) = found["rbe.client.wait.duration"]
    assert (attrs, point.count) == ({"rbe.wait.reason": "circuit"}, 1)
    gauge = {a["rbe.circuit.host"]: p.value for a, p in found["rbe.client.circuit.open"]}
    # (breakers of earlier tests in this process may still report, for their own hosts)
    assert gauge[server.url("").rstrip("/")] == 1


def test_the_outbox_gauge_counts_kept_writes(otel, server, session, outbox_url):
    server.route("POST", "/w", Reply(503, "down"))
    adapter = rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    for _ in range(2):
        session.post(server.url("/w"), data=b"x", headers={"Idempotency-Key": "k"})
    assert adapter.outbox is not None
    shown = adapter.outbox.storage.shown  # (outboxes of earlier tests in this process report too)
    gauge = {
        a["rbe.outbox.state"]: p.value
        for a, p in otel.metrics()["rbe.client.outbox.entries"]
        if a["rbe.outbox"] == shown
    }
    assert gauge == {"queued": 2, "dead": 0}


@pytest.mark.parametrize("how", ["argument", "variable"])
def test_telemetry_can_be_switched_off(otel, server, session, monkeypatch, how):
    server.route("GET", "/x", Reply(200, "ok"))
    if how == "argument":
        rbe.mount(session, "http://", telemetry=False)
    else:
        monkeypatch.setenv("RBE_TELEMETRY", "off")
        rbe.mount(session, "http://")
    assert session.get(server.url("/x")).ok
    assert _ours(otel.spans()) == []
    assert otel.metrics() == {}


def test_without_an_sdk_nothing_is_loaded_or_recorded(server):
    """No SDK configured (a fresh process): the adapter loads no OpenTelemetry module
    (only looks that the API is installed: its bare namespace package)."""
    server.route("GET", "/x", Reply(200, "ok"))
    code = (
        "import sys, requests, requests_bloxs_errors as rbe\n"
        "s = requests.Session()\n"
        "rbe.mount(s, 'http://')\n"
        f"assert s.get({server.url('/x')!r}).ok\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.')))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[]"


def test_telemetry_true_without_the_extra_names_it():
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the extra were not installed\n"
        "import requests_bloxs_errors as rbe\n"
        "try:\n"
        "    rbe.BloxsAdapter(telemetry=True)\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "print(rbe.BloxsAdapter() is not None)  # the default: quietly off\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode == 0, finished.stderr
    message, default = finished.stdout.splitlines()
    assert "pip install 'requests-bloxs-errors[otel]'" in message
    assert default == "True"


def test_a_bad_telemetry_value_is_a_type_error():
    with pytest.raises(TypeError, match="telemetry must be True, False or None"):
        rbe.BloxsAdapter(telemetry="yes")  # type: ignore[arg-type]


def _points_sum(found: dict[str, list[tuple[dict[str, Any], Any]]], name: str) -> int:
    return sum(p.value for _, p in found.get(name, []))


def test_a_simulated_outage_is_visible_in_one_trace(otel, sim):
    """The README's on-call story: a 503 then 200, all in one trace under the job."""
    sim.fail(503, path=COMPLEXES, times=1, retry_after=0)
    key, secret = sim.bloxs_credentials
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret))
    with trace.get_tracer("the job").start_as_current_span("sync"):
        assert session.get(sim.url + COMPLEXES, timeout=5).ok
    spans = _ours(otel.spans())
    assert len({s.context.trace_id for s in spans}) == 1
    (refused,) = [s for s in spans if s.attributes.get("http.response.status_code") == 503]
    (event,) = refused.events
    assert event.attributes["rbe.wait.reason"] == "retry_after"
