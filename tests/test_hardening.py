"""Security and reliability hardening: one regression test (or a few) per finding.

Each test is named after the behaviour it holds; each section names the finding
it came from. Every one goes through real loopback sockets: the package's
simulator, the scriptable test server, or the raw-socket server for faults below
HTTP. A wait is checked on a fake clock; the few tests that must meet a real
socket's timing (a slow answer, a trickled body) bound it loosely, against an
answer that would take far longer.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests
from urllib3.util.timeout import Timeout

import requests_bloxs_errors as rbe
from requests_bloxs_errors import clock as clock_module
from requests_bloxs_errors.credentials.refusals import FreshRefusals
from requests_bloxs_errors.pipeline.steps import Step
from requests_bloxs_errors.simulator import COMPLEXES
from requests_bloxs_errors.urls import Prefix

from .helpers.rawserver import RawServer, respond
from .helpers.server import Reply, json_reply

SECRET = "S3CR3T-do-not-show-7f3a9c"


def finishes(fn, limit: float = 20.0):
    """Run ``fn`` in a thread; fail (instead of hanging) when it does not end in ``limit`` s."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still running after {limit}s: a hang"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


# -- no deadlock when a token request meets its own credential (finding 1) ---------


def test_install_with_bloxs_token_auth_sends_requests(sim):
    """The README's example: install() with credentials, then requests.get()."""
    key, secret = sim.bloxs_credentials
    rbe.install(sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret))
    response = finishes(lambda: requests.get(sim.url + COMPLEXES, timeout=5))
    assert response.status_code == 200
    (token_request,) = sim.token_requests()
    assert "Authorization" not in token_request.headers


def test_install_with_a_fetch_token_that_calls_requests_post(sim):
    """The README's TokenAuth example under install(): fetch_token's own
    requests.post goes through the installed adapter, unsigned."""
    key, secret = sim.bloxs_credentials

    def fetch_token():
        answer = requests.post(
            sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=10
        )
        answer.raise_for_status()
        return answer.json()["token"], 24 * 3600

    rbe.install(sim.url + "/", auth=rbe.TokenAuth(fetch_token))
    response = finishes(lambda: requests.get(sim.url + COMPLEXES, timeout=5))
    assert response.status_code == 200
    (token_request,) = sim.token_requests()
    assert "Authorization" not in token_request.headers


def test_a_fetch_token_using_the_mounted_session_itself_does_not_deadlock(sim, session):
    key, secret = sim.bloxs_credentials

    def fetch_token():
        answer = session.post(
            sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=10
        )
        return answer.json()["token"]

    rbe.mount(session, sim.url + "/", auth=rbe.TokenAuth(fetch_token))
    response = finishes(lambda: session.get(sim.url + COMPLEXES, timeout=5))
    assert response.status_code == 200
    assert len(sim.token_requests()) == 1


def test_a_re_entrant_sign_is_a_clear_error_not_a_hang(sim, session):
    """As a plain requests auth the adapter is not there to route around the
    credential: signing from inside its own fetch must fail at once."""
    key, secret = sim.bloxs_credentials

    def fetch_token():
        answer = session.post(
            sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=10
        )
        return answer.json()["token"]

    session.auth = rbe.TokenAuth(fetch_token)
    with pytest.raises(RuntimeError, match="from inside its own token fetch"):
        finishes(lambda: session.get(sim.url + COMPLEXES, timeout=5))


# -- the secret never follows a redirect (finding 2) ------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("vendor", ["bloxs", "dealcloud"])
def test_token_requests_never_follow_redirects(server, other_server, session, status, vendor):
    other_server.route("POST", "/steal", Reply(200, '{"token": "x", "access_token": "x"}'))
    location = other_server.url("/steal?key=QUERY-VALUE")
    if vendor == "bloxs":
        auth = rbe.BloxsTokenAuth(server.url(""), "key-1", SECRET)
        server.route("POST", "/Authorization", Reply(status, "", {"Location": location}))
    else:
        auth = rbe.ClientCredentialsAuth(server.url("/oauth/token"), "client", SECRET)
        server.route("POST", "/oauth/token", Reply(status, "", {"Location": location}))
    rbe.mount(session, server.url("/"), auth=auth)
    error = pytest.raises(rbe.TokenResponseError, session.get, server.url("/a")).value
    assert other_server.seen() == []  # the other origin never got the secret
    assert f"localhost:{other_server.port}" in str(error)
    assert "QUERY-VALUE" not in str(error)
    assert "steal" not in str(error)


# -- dot segments do not carry credentials out of the prefix (finding 3) ------------


@pytest.mark.parametrize(
    "path",
    ["/api/../outside", "/api/%2e%2e/outside", "/api/%2E%2e%2foutside", "/api/x/../../outside"],
)
def test_dot_segments_leave_the_prefix(path):
    prefix = Prefix.parse("https://acme.bloxs.io/api/")
    assert not prefix.matches("https://acme.bloxs.io" + path)
    assert prefix.matches("https://acme.bloxs.io/api/x/../y")


@pytest.mark.parametrize("location", ["/api/../outside", "/api/%2e%2e/outside"])
def test_a_redirect_through_dot_segments_is_not_signed(server, session, location):
    rbe.mount(session, server.url("/api/"), auth=rbe.TokenAuth(lambda: "tok"))
    server.route("GET", "/api/start", Reply(302, "", {"Location": location}))
    session.get(server.url("/api/start"), allow_redirects=True)
    start, followed = server.seen()
    assert start.headers.get("Authorization") == "Bearer tok"
    assert "Authorization" not in followed.headers


def test_a_direct_request_with_encoded_dots_is_not_signed(server, session):
    rbe.mount(session, server.url("/api/"), auth=rbe.TokenAuth(lambda: "tok"))
    session.get(server.url("/api/%2e%2e/outside"))
    (seen,) = server.seen()
    assert "Authorization" not in seen.headers


# -- the deadline covers everything; waits never overflow (findings 4 to 8) ---------


def test_the_deadline_covers_a_token_endpoint_asking_to_wait(sim, session, clock):
    key, secret = sim.bloxs_credentials
    sim.fail(503, path="/Authorization", retry_after=2, times=None)
    auth = rbe.BloxsTokenAuth(sim.url, key, secret, clock=clock)
    rbe.mount(session, sim.url + "/", auth=auth, deadline=1, clock=clock)
    with pytest.raises(rbe.ServiceUnavailableError):
        session.get(sim.url + COMPLEXES, timeout=10)
    assert clock.sleeps == []  # it was three waits of 2 s
    assert len(sim.token_requests()) == 1  # the 2 s wait would cross the deadline


#: How long the slow answers below take: far past their calls' deadline of 1 s, so
#: that a loose bound tells a call that waited for one from a call that did not.
SLOW = 20.0
#: The loose bound on a call with a deadline of 1 s: it only catches a call that
#: waited for a slow answer (real time; a busy machine may add seconds).
LOOSE = SLOW / 2


def test_the_deadline_covers_a_slow_token_endpoint_and_its_waiters(sim, session):
    # Real time: the token endpoint's slow answer meets a real read timeout.
    key, secret = sim.bloxs_credentials
    sim.slow(SLOW, path="/Authorization", times=None)
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret), deadline=1)

    def call() -> type[BaseException]:
        with pytest.raises(requests.Timeout) as caught:
            session.get(sim.url + COMPLEXES, timeout=10)
        return type(caught.value)

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        kinds = list(pool.map(lambda _: call(), range(4)))
    assert time.monotonic() - started < LOOSE  # it was the answer's 20 s, more for waiters
    # every call ran out of its time: the threads that waited for the fetch, and
    # the one that fetched, whose wait for the token endpoint's answer ended at
    # the deadline with a ReadTimeout that is also a DeadlineExceeded (the
    # waiters that get the lock in time raise a copy of it; see
    # tests/pipeline/test_head_deadline.py)
    assert all(issubclass(kind, rbe.DeadlineExceeded) for kind in kinds), kinds
    assert any(issubclass(kind, requests.ReadTimeout) for kind in kinds), kinds


def _trickled_error(conn, _request) -> None:
    """A 404 whose body of 2,000 bytes takes :data:`SLOW` seconds."""
    head = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2000\r\nContent-Type: text/plain\r\n\r\n"
    conn.sendall(head)
    try:
        for _ in range(2000):
            conn.sendall(b"x")
            time.sleep(SLOW / 2000)
    except OSError:
        pass  # the client closed it at its deadline


def test_reading_an_error_body_stops_at_the_deadline(session):
    # Real time: the body trickles over a real socket.
    server = RawServer(_trickled_error)
    try:
        rbe.mount(session, "http://", deadline=1)
        started = time.monotonic()
        response = session.get(server.url("/slow-body"), timeout=5)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < LOOSE  # the whole body takes 20 s
    assert response.status_code == 404
    assert response.error_info.body_truncated
    assert 0 < len(response.content) < 2000


def test_a_urllib3_timeout_object_is_capped_by_the_deadline(server, session):
    # Real time: the server's late answer meets a real read timeout.
    server.route("GET", "/slow", Reply(200, "late", delay=SLOW))
    rbe.mount(session, "http://", deadline=1)
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        session.get(server.url("/slow"), timeout=Timeout(connect=5, read=30))
    assert time.monotonic() - started < LOOSE  # uncapped, it waits for the 20 s answer


class _Depth(Step):
    """Records how deep the stack is as each attempt begins."""

    def __init__(self) -> None:
        self.depths: list[int] = []

    def before_attempt(self, call) -> None:
        frame, depth = inspect.currentframe(), 0
        while frame is not None:
            frame, depth = frame.f_back, depth + 1
        self.depths.append(depth)


def test_a_million_retries_end_at_the_deadline_without_recursion(server, session, clock):
    # each retry waits the server's 1 s on the fake clock: a deadline of 150.5 s leaves
    # room for 151 attempts (each sent with half a second left: none cut short)
    server.route("GET", "/down", Reply(503, "down", {"Retry-After": "1"}))
    depth = _Depth()
    rbe.mount(
        session,
        "http://",
        max_retries=10**6,
        backoff_factor=0,
        deadline=150.5,
        clock=clock,
        steps=[depth],
    )
    response = session.get(server.url("/down"))
    assert response.status_code == 503
    journal = rbe.attempts(response)
    assert len(journal) == len(server.seen()) == 151
    assert "deadline" in journal[-1].decision
    assert clock.sleeps == [1.0] * 150
    # every attempt begins from the same frame: a loop, which a million retries
    # cannot overflow, not a recursion one frame deeper each time
    assert len(set(depth.depths)) == 1


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "headers",
    [
        {"Retry-After": "99999999999999999999"},
        {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"},
        {"retry-after-ms": "9" * 30},
    ],
)
def test_a_huge_retry_after_is_a_long_sleep_not_an_overflow(server, session, monkeypatch, headers):
    """With max_retry_after=None the wait is slept, in pieces time.sleep accepts."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(min(seconds, 0.0))  # the real sleep accepts the piece...
        raise _Stop  # ...and one piece is proof enough

    monkeypatch.setattr(
        clock_module, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    )
    server.route("GET", "/later", Reply(503, "later", headers))
    rbe.mount(session, "http://", max_retry_after=None)
    with pytest.raises(_Stop):
        session.get(server.url("/later"))
    assert slept
    assert 0 < slept[0] <= threading.TIMEOUT_MAX
    assert slept[0] <= 86400


# -- a remembered refusal raises a fresh exception each time (finding 9) ------------


def test_remembered_refusals_do_not_grow_a_traceback(sim, session):
    key, _ = sim.bloxs_credentials
    auth = rbe.BloxsTokenAuth(sim.url, key, "wrong-secret-123")
    rbe.mount(session, sim.url + "/", auth=auth)
    errors = []
    for _ in range(200):
        with pytest.raises(rbe.AuthenticationError) as caught:
            session.get(sim.url + COMPLEXES)
        errors.append(caught.value)
    depths = {len(traceback.extract_tb(error.__traceback__)) for error in errors[1:]}
    assert max(depths) <= len(traceback.extract_tb(errors[0].__traceback__))
    assert len({id(error) for error in errors}) == len(errors)  # a new object every time
    assert len(sim.token_requests()) == 1
    assert str(errors[-1]) == str(errors[0])


# -- a resource that refuses every token does not cost a token per call (finding 11) ---


def test_fresh_tokens_refused_for_a_request_are_remembered(server, session, clock):
    fetched = []

    def fetch_token() -> str:
        fetched.append(1)
        return f"t{len(fetched)}"

    server.route("GET", "/admin", Reply(403, '{"title": "Forbidden"}'))
    auth = rbe.TokenAuth(fetch_token, clock=clock)
    rbe.mount(session, server.url("/"), auth=auth, clock=clock)
    for _ in range(50):
        assert session.get(server.url("/admin")).status_code == 403
    assert len(fetched) == 2  # the first token, and one fresh token that did not help
    last = rbe.attempts(session.get(server.url("/admin")))
    assert "refused for this request" in last[-1].decision
    clock.advance(FreshRefusals.TTL / 2)
    session.get(server.url("/admin"))
    assert len(fetched) == 2  # still remembered
    clock.advance(FreshRefusals.TTL / 2)  # forgotten (a role may have been granted meanwhile)
    session.get(server.url("/admin"))
    assert len(fetched) == 3


# -- a secret echoed by the token endpoint is redacted everywhere (finding 12) ------


def _echoing_endpoint(server, secret_text: str) -> None:
    body = {
        "title": f"bad secret {secret_text}",
        "detail": "x" * 480 + secret_text,  # crosses the 500-character cut
        "traceId": "00-abc-01",
        "errors": {"apiSecret": [f"{secret_text} is not valid"], secret_text: ["echoed key"]},
    }
    server.route("POST", "/Authorization", json_reply(400, json.dumps(body)))


def _assert_nowhere(error: BaseException, secret: str) -> None:
    assert isinstance(error, rbe.BloxsError)
    for text in (
        str(error),
        repr(error.info),
        repr(error.errors),
        error.info.message,
        error.info.detail or "",
        error.info.title or "",
        error.response.text,
        repr(error.response.request.body),
    ):
        assert secret[:7] not in text, text[:200]


def test_a_secret_echoed_by_the_token_endpoint_is_redacted(server, session):
    _echoing_endpoint(server, SECRET)
    rbe.mount(session, server.url("/"), auth=rbe.BloxsTokenAuth(server.url(""), "key-1", SECRET))
    error = pytest.raises(rbe.AuthenticationError, session.get, server.url("/a")).value
    _assert_nowhere(error, SECRET)
    assert "***" in error.info.title


def test_a_secret_cut_by_the_body_cap_shows_no_beginning(server, session):
    filler = "y" * (rbe.BODY_CAP - 5)
    server.route(
        "POST", "/Authorization", Reply(400, filler + SECRET, {"Content-Type": "text/plain"})
    )
    rbe.mount(session, server.url("/"), auth=rbe.BloxsTokenAuth(server.url(""), "key-1", SECRET))
    error = pytest.raises(rbe.AuthenticationError, session.get, server.url("/a")).value
    assert SECRET[:5] not in error.response.text[-20:]
    _assert_nowhere(error, SECRET)


# -- text from the network is cleaned before any message (finding 13) ---------------


def test_the_reason_phrase_is_cleaned_and_capped(session):
    reason = b"\x1b[31mRED\x1b[0m \x85next " + b"A" * 20000
    server = RawServer(respond(b"404 " + reason))
    try:
        rbe.mount(session, "http://")
        response = session.get(server.url("/x"))
    finally:
        server.close()
    info = response.error_info
    assert info.message.isprintable()
    assert "\x1b" not in str(pytest.raises(rbe.NotFoundError, response.raise_for_status).value)
    assert len(info.message) <= 500


# -- a bad prefix does not echo its password (finding 14) ----------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        "https://user:PASSW0RD@host:99999/",
        "ftp://user:PASSW0RD@host/",
        "https://user:PASSW0RD@[::1/",
    ],
)
def test_an_invalid_prefix_does_not_echo_its_password(session, prefix):
    error = pytest.raises(ValueError, rbe.mount, session, prefix).value
    assert "PASSW0RD" not in str(error)


def test_an_invalid_token_url_does_not_echo_its_password():
    error = pytest.raises(
        ValueError, rbe.ClientCredentialsAuth, "https://u:PASSW0RD@h:99999/t", "id", "s"
    ).value
    assert "PASSW0RD" not in str(error)


# -- values from the token server (finding 15) -----------------------------------------


@pytest.mark.parametrize(
    "token", ["   ", "a\r\nX-Evil: 1", "nul\x00", "caf\u00e9\u2603", "\x1b[2J"]
)
def test_an_unusable_token_is_a_token_response_error_at_fetch(server, session, token):
    server.route("POST", "/Authorization", json_reply(200, json.dumps({"token": token})))
    rbe.mount(session, server.url("/"), auth=rbe.BloxsTokenAuth(server.url(""), "key-1", SECRET))
    for _ in range(3):
        error = pytest.raises(rbe.TokenResponseError, session.get, server.url("/a")).value
        assert "unusable" in str(error)
    assert len(server.seen("POST", "/Authorization")) == 1  # remembered, not refetched
    assert server.seen("GET") == []


@pytest.mark.parametrize("expires_in", ["NaN", "Infinity", "-Infinity", "soon", None, 1e400])
def test_a_garbage_lifetime_is_an_unknown_lifetime(server, session, expires_in):
    answer = {"access_token": "tok", "expires_in": expires_in}
    server.route("POST", "/t", Reply(200, json.dumps(answer).replace("1e400", "1e400")))
    server.route("GET", "/a", Reply(200, "ok"))
    rbe.mount(session, server.url("/"), auth=rbe.ClientCredentialsAuth(server.url("/t"), "c", "s"))
    for _ in range(3):
        assert session.get(server.url("/a")).status_code == 200
    assert len(server.seen("POST", "/t")) == 1


# -- a failed early renewal keeps the still-valid token (finding 16) -------------------


def test_a_failed_early_renewal_keeps_the_valid_token(server, session, rbe_logs, clock):
    fetches = []

    def fetch_token():
        fetches.append(clock.monotonic())
        if len(fetches) > 1:
            raise requests.ConnectionError("token endpoint down")
        return "t1", 1.0  # renewed 0.1 s before it expires

    server.route("GET", "/a", Reply(200, "ok"))
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(fetch_token, clock=clock))
    assert session.get(server.url("/a")).status_code == 200
    clock.advance(0.92)  # inside the renew-early window, before expiry
    for _ in range(3):
        assert session.get(server.url("/a")).status_code == 200
    assert len(fetches) == 2  # one renewal tried; the others wait for its retry
    assert [r.headers["Authorization"] for r in server.seen()] == ["Bearer t1"] * 4
    warnings = [r for r in rbe_logs.records if "Renewing the token" in r.getMessage()]
    assert len(warnings) == 1
    assert "token endpoint down" not in warnings[0].getMessage()
    clock.advance(0.08)  # now it has expired: the failure is the caller's
    with pytest.raises(requests.ConnectionError):
        session.get(server.url("/a"))
    assert logging.WARNING in {r.levelno for r in warnings}


# -- the same on the command line (findings 13 and 14) ------------------------------


def test_the_cli_prints_no_terminal_escapes_from_the_server():
    from .helpers.cli import run

    body = b"\x1b]0;pwned\x07\x1b[2J<h1>\x1b[31mdown\x1b[0m</h1>\r\nline two\x85\xe2\x80\xae"
    server = RawServer(respond(b"500 \x1b[5mBlink", body, (b"Content-Type: text/html",)))
    try:
        result = run("request", "GET", server.url("/x"), "--max-retries", "0")
    finally:
        server.close()
    assert result.returncode == 1
    assert "\x1b" not in result.stdout
    assert "\u202e" not in result.stdout  # no bidi override either
    assert "line two" in result.stdout


def test_the_cli_does_not_echo_a_password_in_a_bad_url():
    from .helpers.cli import assert_one_line_error, run

    result = run("request", "GET", "https://user:PASSW0RD@host:99999/x")
    assert_one_line_error(result)
    assert "PASSW0RD" not in result.stderr + result.stdout
