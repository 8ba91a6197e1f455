"""Retries through urllib3's real retry path, against a loopback server.

Waits are checked on a fake clock (``clock.sleeps``) or counted in the attempt
journal; the few tests that meet a real socket's timeout, or check a wait end to
end as the server saw it, bound real time loosely and say why.
"""

from __future__ import annotations

import itertools
import time
from email.utils import formatdate

import pytest
import requests
from urllib3.response import HTTPResponse
from urllib3.util.retry import Retry

import requests_bloxs_errors as rbe

from ..helpers import wait_until
from ..helpers.server import Reply, ScriptServer, json_reply

ISE = json_reply(500, '{"error": "internal_server_error"}')


def gaps(records):
    """Seconds between consecutive requests as the server saw them."""
    return [b.at - a.at for a, b in itertools.pairwise(records)]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_idempotent_methods_are_retried_until_success(server, session, fast, method, status):
    server.route(method, "/r", Reply(status, "no"), Reply(status, "no"), Reply(200, "ok"))
    response = session.request(method, server.url("/r"))
    assert response.status_code == 200
    assert len(server.seen(method, "/r")) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 415, 409, 422, 501])
def test_non_retryable_statuses_are_sent_once(server, session, fast, status):
    server.route("GET", "/r", Reply(status, "no"), Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert response.status_code == status
    assert len(server.seen("GET", "/r")) == 1


def test_exhausted_retries_return_the_last_response_with_its_body(server, session):
    rbe.mount(session, "http://", max_retries=2, backoff_factor=0.01)
    server.route(
        "GET",
        "/r",
        ISE,
        ISE,
        json_reply(503, '{"title": "maintenance"}', **{"X-Request-Id": "r-3"}),
    )
    response = session.get(server.url("/r"))
    assert len(server.seen()) == 3
    assert response.status_code == 503
    assert response.json() == {"title": "maintenance"}
    with pytest.raises(rbe.ServiceUnavailableError) as caught:
        response.raise_for_status()
    error = caught.value
    assert error.attempts == 3
    assert [a.status for a in error.history] == [500, 500, 503]
    assert [a.decision for a in error.history] == ["retry", "retry", "gave up: retries exhausted"]
    assert error.trace_id == "r-3"
    assert error.response is response


def test_zero_retries_sends_once(server, session):
    rbe.mount(session, "http://", max_retries=0)
    server.route("GET", "/r", Reply(503, "down"), Reply(200, "ok"))
    assert session.get(server.url("/r")).status_code == 503
    assert len(server.seen()) == 1


# -- POST and PATCH ------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_post_is_retried_on_429(server, session, fast, method):
    server.route(method, "/w", Reply(429, "slow down", {"Retry-After": "0"}), Reply(201, "made"))
    response = session.request(method, server.url("/w"), json={"a": 1})
    assert response.status_code == 201
    assert [r.body for r in server.seen()] == [b'{"a": 1}', b'{"a": 1}']


@pytest.mark.parametrize("status", [500, 502, 504])
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_post_without_idempotency_key_is_never_duplicated_on_5xx(
    server, session, fast, method, status
):
    server.route(method, "/w", Reply(status, "oops"), Reply(201, "made"))
    response = session.request(method, server.url("/w"), json={"a": 1})
    assert response.status_code == status
    assert len(server.seen()) == 1
    info = rbe.classify(response)
    assert info.retryable is False
    assert response.attempts[-1].decision.startswith("not retried:")


def test_post_503_without_retry_after_is_sent_once(server, session, fast):
    server.route("POST", "/w", Reply(503, "down"), Reply(201, "made"))
    assert session.post(server.url("/w"), data=b"x").status_code == 503
    assert len(server.seen()) == 1


@pytest.mark.parametrize(
    "headers",
    [{"Retry-After": "0"}, {"Retry-After": "0.05"}, {"retry-after-ms": "50"}],
)
def test_post_503_with_usable_retry_after_is_retried(server, session, fast, headers):
    server.route("POST", "/w", Reply(503, "down", headers), Reply(201, "made"))
    assert session.post(server.url("/w"), data=b"x").status_code == 201
    assert len(server.seen()) == 2


def test_post_503_with_garbage_retry_after_is_sent_once(server, session, fast):
    server.route("POST", "/w", Reply(503, "down", {"Retry-After": "soon"}), Reply(201, "made"))
    assert session.post(server.url("/w"), data=b"x").status_code == 503
    assert len(server.seen()) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_post_with_idempotency_key_is_retried_on_5xx(server, session, fast, status):
    server.route("POST", "/w", Reply(status, "oops"), Reply(201, "made"))
    response = session.post(server.url("/w"), json={"a": 1}, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 201
    seen = server.seen()
    assert len(seen) == 2
    assert {r.headers["Idempotency-Key"] for r in seen} == {"k-1"}


def test_post_read_timeout_is_not_retried(server, session, fast):
    server.route("POST", "/w", Reply(200, "late", delay=0.5), Reply(201, "made"))
    with pytest.raises(requests.exceptions.ReadTimeout) as caught:
        session.post(server.url("/w"), data=b"x", timeout=(2, 0.2))
    assert [a.kind for a in rbe.attempts(caught.value)] == ["ReadTimeoutError"]
    # a retry would have reached the server while the slow handler finished
    assert not wait_until(lambda: len(server.seen()) > 1, timeout=0.4)
    assert len(server.seen()) == 1


def test_get_read_timeout_is_retried(server, session, fast):
    server.route("GET", "/r", Reply(200, "late", delay=0.5), Reply(200, "quick"))
    response = session.get(server.url("/r"), timeout=(2, 0.2))
    assert response.text == "quick"


def test_post_read_timeout_with_idempotency_key_is_retried(server, session, fast):
    server.route("POST", "/w", Reply(200, "late", delay=0.5), Reply(201, "made"))
    response = session.post(
        server.url("/w"), data=b"x", timeout=(2, 0.2), headers={"Idempotency-Key": "k"}
    )
    assert response.status_code == 201


def test_exhausted_read_timeouts_raise_read_timeout_not_connection_error(server, session):
    rbe.mount(session, "http://", max_retries=1, backoff_factor=0.01)
    server.route("GET", "/r", Reply(200, "late", delay=0.4))
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(server.url("/r"), timeout=(2, 0.1))


def test_connection_refused_is_retried_then_raised_as_connection_error(session, rbe_logs):
    rbe.mount(session, "http://", max_retries=2, backoff_factor=0.01)
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post("http://127.0.0.1:9/never", data=b"x", timeout=1)
    retries = [
        r
        for r in rbe_logs.records
        if r.name == "requests_bloxs_errors" and r.levelname == "WARNING"
    ]
    # a refused connection never reached the server: safe to retry even for POST
    assert len(retries) == 2
    give_up = [r for r in rbe_logs.records if r.levelname == "ERROR"]
    assert len(give_up) == 1
    assert "NewConnectionError" in give_up[0].getMessage()


# -- Retry-After -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "1"}, 1.0),
        ({"Retry-After": "0.4"}, 0.4),
        ({"retry-after-ms": "300"}, 0.3),
        ({"x-ms-retry-after-ms": "300"}, 0.3),
    ],
)
def test_retry_after_forms_are_honoured(server, session, clock, headers, expected):
    rbe.mount(session, "http://", backoff_factor=0.0, clock=clock)
    server.route("GET", "/r", Reply(429, "wait", headers), Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert response.status_code == 200
    assert clock.sleeps == [pytest.approx(expected)]  # exactly what the server asked
    assert rbe.attempts(response)[0].wait == pytest.approx(expected)


def test_a_retry_after_is_never_early_on_the_wall_clock(server, session):
    """End to end, on the real clock: as the server sees it, never early (the exact
    wait is checked on a fake clock above; a busy machine only makes it later)."""
    rbe.mount(session, "http://", backoff_factor=0.0)
    server.route("GET", "/r", Reply(429, "wait", {"Retry-After": "0.4"}), Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert response.status_code == 200
    assert rbe.attempts(response)[0].wait == pytest.approx(0.4)
    (gap,) = gaps(server.seen())
    assert gap >= 0.4  # never early
    assert gap < 0.4 * 10  # loose: it only catches a wait in the wrong unit


def test_retry_after_http_date_is_honoured(server, session, clock):
    rbe.mount(session, "http://", backoff_factor=0.0, clock=clock)

    def dated(_):
        now = time.time()
        # whole seconds only in an HTTP-date: aim 2 s ahead, compare to the server's Date
        return Reply(
            503,
            "down",
            {
                "Retry-After": formatdate(int(now) + 2, usegmt=True),
                "Date": formatdate(int(now), usegmt=True),
            },
        )

    replies = iter([dated, lambda _: Reply(200, "ok")])
    server.route_fn("GET", "/r", lambda request: next(replies)(request))  # noqa: PLW0108
    assert session.get(server.url("/r")).status_code == 200
    (wait,) = clock.sleeps
    assert 1.5 <= wait < 3.0


@pytest.mark.parametrize("value", ["-1", "", "soon", "1e3", "Mon, 99 Foo"])
def test_unusable_retry_after_falls_back_to_backoff(server, session, clock, value):
    rbe.mount(session, "http://", backoff_factor=0.01, backoff_max=0.05, clock=clock)
    server.route("GET", "/r", Reply(503, "down", {"Retry-After": value}), Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert response.status_code == 200
    first = rbe.attempts(response)[0]
    assert first.wait_reason == "backoff"
    assert 0 < first.wait <= 0.05
    assert clock.sleeps == [first.wait]


def test_retry_after_longer_than_the_cap_is_not_slept_on(server, session, clock):
    rbe.mount(session, "http://", max_retry_after=1.0, clock=clock)
    server.route("GET", "/r", Reply(429, "later", {"Retry-After": "3600"}), Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert clock.sleeps == []
    assert response.status_code == 429
    assert len(server.seen()) == 1
    error = pytest.raises(rbe.RateLimitError, response.raise_for_status).value
    assert error.retry_after == 3600.0
    assert "max_retry_after" in error.history[-1].decision


def test_raise_errors_raises_rate_limit_with_retry_after(server, session):
    rbe.mount(session, "http://", max_retry_after=1.0, raise_errors=True)
    server.route(
        "GET",
        "/r",
        Reply(
            429,
            "API calls quota exceeded! maximum admitted 5 per 1 second.",
            {"Retry-After": "120"},
        ),
    )
    with pytest.raises(rbe.RateLimitError) as caught:
        session.get(server.url("/r"))
    assert caught.value.retry_after == 120.0
    assert caught.value.quota == (5, 1.0)
    assert caught.value.status_code == 429


def test_403_with_retry_after_is_a_rate_limit_retried_without_reauth(server, session):
    refreshed = []
    auth = rbe.TokenAuth(lambda: refreshed.append(1) or f"t{len(refreshed)}")
    rbe.mount(session, server.url("/"), auth=auth, backoff_factor=0.01)
    server.route(
        "GET",
        "/r",
        Reply(403, "Out of call volume quota.", {"Retry-After": "0.1"}),
        Reply(200, "ok"),
    )
    assert session.get(server.url("/r")).status_code == 200
    assert len(refreshed) == 1  # the first fetch only, no refresh
    assert len(server.seen()) == 2


def test_403_quota_beyond_cap_raises_rate_limit_error(server, session):
    rbe.mount(session, "http://", max_retry_after=5)
    server.route("GET", "/r", Reply(403, "Out of call volume quota.", {"Retry-After": "86400"}))
    response = session.get(server.url("/r"))
    error = pytest.raises(rbe.RateLimitError, response.raise_for_status).value
    assert error.status_code == 403
    assert error.kind == "quota_exceeded"
    assert error.retry_after == 86400.0


# -- back-off and the deadline -----------------------------------------------------


def test_backoff_grows_and_is_capped(server, session, clock):
    rbe.mount(session, "http://", max_retries=4, backoff_factor=0.1, backoff_max=0.25, clock=clock)
    server.route("GET", "/r", ISE, ISE, ISE, ISE, Reply(200, "ok"))
    assert session.get(server.url("/r")).status_code == 200
    waits = clock.sleeps
    # 0.1, 0.2, then capped at 0.25 twice (jitter adds up to 0.1 before the cap)
    assert len(waits) == 4
    assert 0.1 <= waits[0] <= 0.2
    assert 0.2 <= waits[1] <= 0.25
    assert waits[2:] == [0.25, 0.25]


def test_deadline_stops_retries_and_returns_the_last_response(server, session, clock):
    rbe.mount(session, "http://", max_retries=10, backoff_factor=0.2, deadline=1.0, clock=clock)
    server.route("GET", "/r", ISE)
    started = clock.monotonic()
    response = session.get(server.url("/r"))
    assert clock.monotonic() - started < 1.0  # no sleep crosses the deadline
    assert response.status_code == 500
    error = pytest.raises(rbe.ServerError, response.raise_for_status).value
    assert "deadline" in error.history[-1].decision
    assert 2 <= error.attempts < 10


def test_deadline_also_stops_retry_after_waits(server, session, clock):
    rbe.mount(session, "http://", deadline=0.5, clock=clock)
    server.route("GET", "/r", Reply(503, "down", {"Retry-After": "2"}), Reply(200, "ok"))
    assert session.get(server.url("/r")).status_code == 503
    assert clock.sleeps == []  # a wait that would cross the deadline is not begun


def test_deadline_clamps_the_read_timeout(server, session):
    # Real time: the deadline meets a real socket's read. Unclamped, the call would
    # get the late answer (no ReadTimeout); the loose bound only catches that wait.
    rbe.mount(session, "http://", max_retries=0, deadline=0.3)
    server.route("GET", "/r", Reply(200, "late", delay=20))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(server.url("/r"), timeout=30)
    assert time.monotonic() - started < 10


# -- a user's own Retry ------------------------------------------------------------


def test_a_user_retry_object_counts_and_forcelist_win(server, session):
    rbe.mount(
        session, "http://", max_retries=Retry(total=1, status_forcelist=[418], backoff_factor=0)
    )
    server.route("GET", "/teapot", Reply(418, "tea"), Reply(418, "tea"), Reply(200, "ok"))
    assert session.get(server.url("/teapot")).status_code == 418
    assert len(server.seen()) == 2  # total=1: one retry
    server.route("GET", "/ise", ISE, Reply(200, "ok"))
    assert session.get(server.url("/ise")).status_code == 500  # 500 not in their forcelist


def test_a_user_retry_object_still_obeys_method_safety(server, session):
    rbe.mount(
        session, "http://", max_retries=Retry(total=3, status_forcelist=[500], allowed_methods=None)
    )
    server.route("POST", "/w", ISE, Reply(201, "made"))
    assert session.post(server.url("/w"), data=b"x").status_code == 500
    assert len(server.seen()) == 1


def test_a_user_retry_never_raises_retry_error(server, session):
    rbe.mount(
        session, "http://", max_retries=Retry(total=1, status_forcelist=[503], raise_on_status=True)
    )
    server.route("GET", "/r", Reply(503, "down"))
    response = session.get(
        server.url("/r")
    )  # plain urllib3 would raise RetryError with no response
    assert response.status_code == 503
    assert response.text == "down"


def test_bloxs_retry_fields_survive_increment():
    policy = rbe.BloxsRetry(total=3, max_retry_after=7.0, backoff_max=2.0, backoff_jitter=0.5)
    later = policy.increment("GET", "/x", response=HTTPResponse(body=b"", status=503))
    assert isinstance(later, rbe.BloxsRetry)
    assert (later.max_retry_after, later.backoff_max, later.backoff_jitter) == (7.0, 2.0, 0.5)
    assert later.total == 2
    assert later.raise_on_status is False


def test_shared_policy_is_not_mutated_by_calls(server, session):
    adapter = rbe.mount(session, "http://", max_retries=2, backoff_factor=0.01)
    policy = adapter.max_retries
    server.route("GET", "/r", ISE, Reply(200, "ok"))
    session.get(server.url("/r"))
    assert adapter.max_retries is policy
    assert policy.total == 2
    assert policy.history == ()


def test_large_intermediate_error_body_is_not_drained(server, session):
    # a 20 MiB 503 body on an attempt that gets retried: read at most the cap, then close
    rbe.mount(session, "http://", backoff_factor=0.0)
    big = b"x" * (20 * 1024 * 1024)
    server.route("GET", "/r", Reply(503, big), Reply(200, "ok"))
    assert session.get(server.url("/r")).text == "ok"


def test_ok_response_after_retries_is_a_plain_response(server, session, fast):
    server.route("GET", "/r", ISE, Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert type(response) is requests.Response


def test_server_fixture_records_in_order(server):
    # the helper the timing tests rely on
    assert isinstance(server, ScriptServer)
    assert server.seen() == []


def test_a_user_forcelisted_status_is_not_retried_for_post(server, session):
    rbe.mount(
        session, "http://", max_retries=Retry(total=2, status_forcelist=[409], backoff_factor=0)
    )
    server.route("POST", "/w", Reply(409, "conflict"), Reply(201, "made"))
    assert session.post(server.url("/w"), data=b"x").status_code == 409
    assert len(server.seen()) == 1


def test_403_quota_follows_429_in_a_user_forcelist(server, session):
    rbe.mount(
        session, "http://", max_retries=Retry(total=2, status_forcelist=[500], backoff_factor=0)
    )
    server.route("GET", "/r", Reply(403, "quota", {"Retry-After": "0"}), Reply(200, "ok"))
    assert session.get(server.url("/r")).status_code == 403
    assert len(server.seen()) == 1


def test_attempts_tell_the_story_of_a_retried_success(server, session):
    rbe.mount(session, "http://", backoff_factor=0.01)
    server.route("GET", "/r", ISE, Reply(429, "x", {"Retry-After": "0.05"}), Reply(200, "ok"))
    story = rbe.attempts(session.get(server.url("/r")))
    assert [(a.number, a.status, a.kind, a.decision) for a in story] == [
        (1, 500, "internal_server_error", "retry"),
        (2, 429, "rate_limited", "retry"),
        (3, 200, "ok", "returned"),
    ]
    assert story[1].wait == 0.05
    assert story[0].wait > 0


def test_attempts_of_a_first_try_response(server, session, fast):
    server.route("GET", "/r", Reply(200, "ok"))
    response = session.get(server.url("/r"))
    assert not hasattr(response, "_bloxs_history")  # the happy path records nothing
    assert rbe.attempts(response) == (rbe.Attempt(1, 200, "ok", 0.0, "returned"),)


def test_each_attempt_gets_only_the_time_left_before_the_deadline(server, session):
    # Real time: the deadline meets a real socket's read. The first answer comes in
    # time; the retry's comes 20 s later, past the deadline of 3 s: it must time out
    # at the deadline (with the caller's 30 s read timeout it would get the 200).
    rbe.mount(session, "http://", max_retries=5, backoff_factor=0.0, deadline=3.0)
    server.route("GET", "/r", Reply(503, "busy", delay=0.2), Reply(200, "late", delay=20))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout) as caught:
        session.get(server.url("/r"), timeout=30)
    assert time.monotonic() - started < 10  # loose: it only catches the 20 s wait
    assert [a.status for a in rbe.attempts(caught.value)] == [503, None]
    assert len(server.seen()) == 2
