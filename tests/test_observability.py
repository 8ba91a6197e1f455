"""Logs and hooks: one WARNING per retry, INFO on re-auth, ERROR on giving up; no secrets."""

from __future__ import annotations

import dataclasses
import logging
import pickle

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock

from .helpers.server import Recorded, Reply

TOKEN = "s3cr3t-T0KEN-value"
SECRET_QUERY = "api_secret=hunter2"


def ours(caplog, level=None):
    return [
        r
        for r in caplog.records
        if r.name == "requests_bloxs_errors" and (level is None or r.levelno == level)
    ]


def test_one_warning_per_retry_with_the_details(server, session, rbe_logs):
    rbe.mount(session, "http://", max_retries=3, backoff_factor=0.01)
    server.route(
        "GET", "/r", Reply(503, "x"), Reply(429, "x", {"Retry-After": "0.05"}), Reply(200, "ok")
    )
    session.get(server.url(f"/r?{SECRET_QUERY}"))
    warnings = ours(rbe_logs, logging.WARNING)
    assert len(warnings) == 2
    first, second = (w.getMessage() for w in warnings)
    assert first.startswith(
        f"Retrying GET {server.url('/r')}: attempt 1 of 4 got 503 (service_unavailable)"
    )
    assert "waiting 0." in first
    assert "attempt 2 of 4 got 429 (rate_limited); waiting 0.05s" in second
    assert not ours(rbe_logs, logging.ERROR)


def test_error_when_giving_up(server, session, rbe_logs):
    rbe.mount(session, "http://", max_retries=1, backoff_factor=0.01)
    server.route("GET", "/r", Reply(500, "x", {"X-Request-Id": "req-77"}))
    session.get(server.url("/r"))
    (error,) = ours(rbe_logs, logging.ERROR)
    message = error.getMessage()
    assert f"Giving up on GET {server.url('/r')} after 2 attempts" in message
    assert "retries exhausted" in message
    assert "req-77" in message


def test_non_retryable_errors_do_not_log_a_give_up(server, session, rbe_logs):
    rbe.mount(session, "http://")
    server.route("GET", "/r", Reply(404, "x"))
    session.get(server.url("/r"))
    assert not ours(rbe_logs, logging.ERROR)
    assert not ours(rbe_logs, logging.WARNING)


def test_10_a_write_not_resent_because_unsafe_is_a_give_up(server, session, rbe_logs):
    # a 500 would be retried for a GET; a POST without an Idempotency-Key is not resent,
    # and that is a give-up the operator hears of (it used to pass in silence)
    events: list[rbe.GiveUpEvent] = []
    rbe.mount(session, "http://", on_give_up=events.append)
    server.route("POST", "/w", Reply(500, "x"))
    session.post(server.url("/w"))
    (error,) = ours(rbe_logs, logging.ERROR)
    assert "Giving up on POST" in error.getMessage()
    assert "may have been processed" in error.getMessage()
    (event,) = events
    assert (event.method, event.status, event.sent) == ("POST", 500, True)
    assert "Idempotency-Key" in event.reason


def test_10_a_call_refused_for_want_of_a_permit_is_a_give_up(server, session, rbe_logs):
    events: list[rbe.GiveUpEvent] = []
    server.route("GET", "/x", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (1, 10.0)}, max_wait=0.5, clock=FakeClock())
    rbe.mount(session, "http://", rate_limit=limit, on_give_up=events.append)
    assert session.get(server.url("/x")).status_code == 200
    refused = session.get(server.url("/x"))
    assert (refused.status_code, refused.local) == (429, True)
    (error,) = ours(rbe_logs, logging.ERROR)
    assert "Giving up on GET" in error.getMessage()
    assert "local 429 (rate_limited)" in error.getMessage()
    (event,) = events
    assert (event.status, event.kind, event.sent, event.attempts) == (429, "rate_limited", False, 0)
    assert event.reason.startswith("not sent: the next '*' permit")


def test_hooks_receive_frozen_events(server, session):
    events: list[object] = []
    auth_calls = []

    def fetch():
        auth_calls.append(1)
        return f"t{len(auth_calls)}"

    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.TokenAuth(fetch),
        max_retries=1,
        backoff_factor=0.01,
        on_retry=events.append,
        on_reauth=[events.append],
        on_give_up=events.append,
    )

    def answer(request: Recorded) -> Reply:
        if request.headers["Authorization"] == "Bearer t1":
            return Reply(401, "expired")
        return Reply(503, "down")

    server.route_fn("GET", "/r", answer)
    response = session.get(server.url("/r"))
    assert response.status_code == 503
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ReauthEvent", "RetryEvent", "GiveUpEvent"]
    reauth, retry, give_up = events
    assert (reauth.status, reauth.kind) == (401, "unauthorized")
    assert (retry.attempt, retry.status, retry.kind) == (2, 503, "service_unavailable")
    assert give_up.attempts == 3
    assert [a.decision for a in give_up.history] == [
        "reauth",
        "retry",
        "gave up: retries exhausted",
    ]
    for event in events:
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.url = "changed"


def test_a_raising_hook_does_not_change_the_outcome(server, session, rbe_logs):
    def broken(_event):
        raise RuntimeError("hook bug")

    rbe.mount(session, "http://", backoff_factor=0.01, on_retry=broken)
    server.route("GET", "/r", Reply(503, "x"), Reply(200, "ok"))
    assert session.get(server.url("/r")).text == "ok"
    assert any("hook raised" in r.getMessage() for r in ours(rbe_logs, logging.ERROR))


def test_secrets_never_reach_logs_messages_or_reprs(server, session, rbe_logs):
    """Drive every path (retry, re-auth, give-up, typed error) and search all output."""
    issued = []

    def fetch():
        issued.append(f"{TOKEN}-{len(issued)}")
        return issued[-1]

    auth = rbe.TokenAuth(fetch)
    adapter = rbe.mount(session, server.url("/"), auth=auth, max_retries=1, backoff_factor=0.01)

    def answer(request: Recorded) -> Reply:
        if request.headers["Authorization"].endswith("-0"):
            return Reply(401, "expired")
        return Reply(503, "down", {"X-Request-Id": "trace-1"})

    server.route_fn("GET", "/r", answer)
    response = session.get(server.url(f"/r?{SECRET_QUERY}&token={TOKEN}"))
    error = pytest.raises(rbe.ServiceUnavailableError, response.raise_for_status).value
    assert response.request.headers["Authorization"] == f"Bearer {TOKEN}-1"  # it was really used
    texts = [r.getMessage() for r in ours(rbe_logs)]
    texts += [
        str(error),
        repr(error),
        repr(error.info),
        repr(error.history),
        repr(auth),
        repr(adapter),
    ]
    texts += [repr(adapter.max_retries), str(pickle.loads(pickle.dumps(error)))]
    texts += [repr(a) for a in error.history]
    assert len(texts) > 8
    for text in texts:
        assert TOKEN not in text
        assert "hunter2" not in text
        assert "api_secret" not in text


def test_exception_text_is_one_line_with_the_useful_parts(server, session):
    server.route(
        "POST",
        "/api/v1/complexes/filter",
        Reply(
            400,
            '{"title": "One or more validation errors occurred.", "traceId": "00-ab-01",'
            ' "errors": {"Paging.PageSize": ["The field PageSize must be between 1 and 1000."]}}',
            {"Content-Type": "application/problem+json"},
        ),
    )
    rbe.mount(session, "http://")
    response = session.post(server.url("/api/v1/complexes/filter?page=1"), json={})
    text = str(pytest.raises(rbe.BadRequestError, response.raise_for_status).value)
    assert "\n" not in text
    assert text.startswith(f"400 bad_request for POST {server.url('/api/v1/complexes/filter')}:")
    assert "Paging.PageSize: The field PageSize must be between 1 and 1000." in text
    assert "trace id 00-ab-01" in text
    assert "page=1" not in text


def test_the_logger_has_a_null_handler():
    logger = logging.getLogger("requests_bloxs_errors")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def test_requests_own_exceptions_pass_through_unchanged(session):
    rbe.mount(session, "http://", max_retries=0)
    with pytest.raises(requests.exceptions.InvalidURL):
        session.get("http://[::1/")
