"""The adapter's own attempt loop: what it must keep apart, and where steps plug in."""

from __future__ import annotations

import logging
import socket

import pytest
import requests
from requests.adapters import HTTPAdapter

import requests_bloxs_errors as rbe
from requests_bloxs_errors.pipeline.steps import Step

from ..helpers.proxy import ForwardProxy
from ..helpers.server import Reply


@pytest.fixture
def proxy():
    forward = ForwardProxy()
    yield forward
    forward.close()


@pytest.mark.parametrize("signed", [True, False])
def test_proxy_credentials_never_reach_the_callers_objects(server, session, proxy, signed):
    """urllib3 merges the proxy's headers into the headers it is given; each attempt
    gets a fresh copy, so nothing lands in the caller's request or the response's."""
    session.trust_env = False
    server.route("GET", "/a", Reply(503, "busy"), Reply(200, "ok"))
    if signed:
        rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(lambda: "tok"), backoff_factor=0.01)
    else:
        rbe.mount(session, "http://", backoff_factor=0.01)
    prepared = session.prepare_request(requests.Request("GET", server.url("/a")))
    response = session.send(prepared, proxies={"http": proxy.url()})
    assert response.status_code == 200
    assert len(proxy.seen) == 2  # both attempts went through the proxy, with its login
    assert all(headers.get("Proxy-Authorization") == proxy.expected for *_, headers in proxy.seen)
    for headers in (response.request.headers, prepared.headers, response.history and {}):
        assert "Proxy-Authorization" not in headers
    assert "Authorization" not in prepared.headers  # the caller's request stays unsigned
    expected = "Bearer tok" if signed else None
    assert [r.headers.get("Authorization") for r in server.seen()] == [expected, expected]


def test_a_call_made_from_a_hook_keeps_its_own_journal_and_deadline(server, other_server, clock):
    inner = requests.Session()
    rbe.mount(inner, "http://", backoff_factor=0.01, deadline=0.5, clock=clock)
    other_server.route("GET", "/inner", Reply(503, "busy", {"Retry-After": "0.3"}))
    inner_calls: list[requests.Response] = []

    def hook(event: rbe.RetryEvent) -> None:
        inner_calls.append(inner.get(other_server.url("/inner")))

    with requests.Session() as outer:
        rbe.mount(outer, "http://", backoff_factor=0.01, deadline=30, on_retry=hook)
        server.route("GET", "/outer", Reply(503, "busy"), Reply(200, "ok"))
        response = outer.get(server.url("/outer"))
    assert response.status_code == 200
    assert [(a.status, a.decision) for a in rbe.attempts(response)] == [
        (503, "retry"),
        (200, "returned"),
    ]
    (answer,) = inner_calls
    assert answer.status_code == 503
    story = rbe.attempts(answer)
    # its own 0.5 s deadline: a second wait of 0.3 s would cross it (under the
    # outer call's 30 s it would have used all 3 retries)
    assert [a.decision.split(":")[0] for a in story] == ["retry", "gave up"]
    assert "deadline" in story[-1].decision
    assert len(story) == len(other_server.seen())
    assert clock.sleeps == [0.3]  # its one wait, on its own clock
    inner.close()


def test_a_plain_adapter_with_bloxs_retry_in_a_hook_does_not_touch_the_outer_call(
    server, other_server
):
    plain = requests.Session()
    plain.mount("http://", HTTPAdapter(max_retries=rbe.BloxsRetry(total=2, backoff_factor=0)))
    other_server.route("GET", "/plain", Reply(503, "busy"), Reply(200, "ok"))
    statuses = []

    def hook(event: rbe.RetryEvent) -> None:
        statuses.append(plain.get(other_server.url("/plain")).status_code)

    with requests.Session() as outer:
        rbe.mount(outer, "http://", backoff_factor=0.01, on_retry=hook)
        server.route("GET", "/outer", Reply(503, "busy"), Reply(200, "ok"))
        response = outer.get(server.url("/outer"))
    assert statuses == [200]  # urllib3 retried the plain call by the table's rules
    assert [a.decision for a in rbe.attempts(response)] == ["retry", "returned"]
    plain.close()


class Recorder(Step):
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def before_attempt(self, call) -> None:
        self.calls.append(("before", len(call.journal)))

    def after_response(self, call, response, rule, retry_after) -> None:
        self.calls.append(("response", response.status_code, rule.kind, retry_after))

    def after_failure(self, call, failure) -> None:
        self.calls.append(("failure", failure.rule.kind))

    def on_outcome(self, call, response, failure) -> None:
        outcome = response.status_code if response is not None else failure.kind
        self.calls.append(("outcome", outcome))


def test_steps_run_at_their_named_places_for_responses(server, session):
    recorder = Recorder()
    rbe.mount(session, "http://", backoff_factor=0.01, steps=[recorder])
    server.route("GET", "/a", Reply(429, "slow down", {"Retry-After": "0"}), Reply(200, "ok"))
    assert session.get(server.url("/a")).status_code == 200
    assert recorder.calls == [
        ("before", 0),
        ("response", 429, "rate_limited", 0.0),
        ("before", 1),
        ("outcome", 200),
    ]


def test_steps_run_at_their_named_places_for_failures(session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: connections are refused
    recorder = Recorder()
    rbe.mount(session, "http://", max_retries=1, backoff_factor=0.01, steps=[recorder])
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/")
    assert recorder.calls == [
        ("before", 0),
        ("failure", "not_sent"),
        ("before", 1),
        ("failure", "not_sent"),
        ("outcome", "NewConnectionError"),
    ]


def test_a_post_with_an_idempotency_key_is_resent_after_a_read_timeout(server, session):
    rbe.mount(session, "http://", backoff_factor=0.01)
    server.route("POST", "/orders", Reply(201, "late", delay=1.0), Reply(201, "created"))
    response = session.post(
        server.url("/orders"), json={"n": 1}, headers={"Idempotency-Key": "k-1"}, timeout=0.3
    )
    assert response.status_code == 201
    assert [a.kind for a in rbe.attempts(response)] == ["ReadTimeoutError", "ok"]
    unkeyed = server.seen("POST")
    server.route("POST", "/orders", Reply(201, "late", delay=1.0), Reply(201, "created"))
    with pytest.raises(requests.ReadTimeout):
        session.post(server.url("/orders"), json={"n": 2}, timeout=0.3)
    assert len(server.seen("POST")) == len(unkeyed) + 1  # sent once, never twice


def test_the_calls_retry_is_left_on_response_raw_as_urllib3_does(server, session, fast):
    server.route("GET", "/a", Reply(503, "busy"), Reply(503, "busy"), Reply(200, "ok"))
    response = session.get(server.url("/a"))
    assert [h.status for h in response.raw.retries.history] == [503, 503]
    assert "?" not in response.raw.retries.history[0].url  # redacted, as the journal is


def test_one_warning_per_retry_and_none_from_urllib3(server, session, fast, rbe_logs):
    server.route("GET", "/a", Reply(fault="reset"), Reply(200, "ok"))
    assert session.get(server.url("/a?token=QUERY")).status_code == 200
    warnings = [r for r in rbe_logs.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["requests_bloxs_errors"]
    assert "QUERY" not in warnings[0].getMessage()


@pytest.mark.parametrize("status", [600, 999])
def test_a_status_of_600_or_more_comes_back_as_it_is(server, session, fast, status):
    """requests does not treat these as HTTP errors; neither does the adapter."""
    server.route("GET", "/odd", Reply(status, "odd"))
    response = session.get(server.url("/odd"))
    assert response.status_code == status
    assert response.text == "odd"
    assert rbe.classify(response) is None
    assert len(server.seen()) == 1
