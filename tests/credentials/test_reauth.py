"""Re-authentication on 401/403, single-flight refresh, and where tokens may go."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import requests_bloxs_errors as rbe

from ..helpers.server import Recorded, Reply


class TokenEndpoint:
    """Issues t1, t2, ... and counts the calls; thread-safe."""

    def __init__(self, lifetime: float | None = None, delay: float = 0.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
            token = f"t{self.calls}"
        time.sleep(self.delay)  # a slow token endpoint widens the race window
        return token if self.lifetime is None else (token, self.lifetime)


OK = Reply(200, "ok")


def accept(valid: set[str], refusal: int = 401):
    """A route that accepts only the bearer tokens in ``valid`` (a live set)."""

    def answer(request: Recorded) -> Reply:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return OK if token in valid else Reply(refusal, '{"error": "invalid_client"}')

    return answer


def test_requests_under_the_prefix_are_signed(server, session):
    tokens = TokenEndpoint()
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens))
    server.route("GET", "/a", Reply(200, "ok"))
    session.get(server.url("/a"))
    session.get(server.url("/a"))
    assert [r.headers["Authorization"] for r in server.seen()] == ["Bearer t1", "Bearer t1"]
    assert tokens.calls == 1


@pytest.mark.parametrize("refusal", [401, 403])
def test_refusal_refreshes_once_and_resends(server, session, refusal, rbe_logs):
    tokens = TokenEndpoint()
    valid = {"t2"}
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens))
    server.route_fn("GET", "/a", accept(valid, refusal=refusal))
    response = session.get(server.url("/a"))
    assert response.status_code == 200
    assert tokens.calls == 2
    assert [r.headers["Authorization"] for r in server.seen()] == ["Bearer t1", "Bearer t2"]
    (failed,) = response.history
    assert failed.status_code == refusal
    assert failed.json() == {"error": "invalid_client"}  # read before it was closed
    reauth = [
        r
        for r in rbe_logs.records
        if r.levelno == logging.INFO and r.name == "requests_bloxs_errors"
    ]
    assert len(reauth) == 1
    assert str(refusal) in reauth[0].getMessage()


@pytest.mark.parametrize(
    ("refusal", "error"), [(401, rbe.AuthenticationError), (403, rbe.PermissionDeniedError)]
)
def test_a_second_refusal_is_the_typed_error_not_a_loop(server, session, refusal, error):
    tokens = TokenEndpoint()
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens), raise_errors=True)
    server.route_fn("GET", "/a", accept(set(), refusal=refusal))
    with pytest.raises(error) as caught:
        session.get(server.url("/a"))
    assert tokens.calls == 2
    assert len(server.seen()) == 2
    assert caught.value.attempts == 2
    assert [a.decision for a in caught.value.history] == ["reauth", "returned"]
    assert isinstance(caught.value, requests.HTTPError)


def test_reauth_resends_a_rewound_file_body(server, session):
    tokens = TokenEndpoint()
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens))
    server.route_fn("PUT", "/f", accept({"t2"}))
    body = io.BytesIO(b"the whole body")
    assert session.put(server.url("/f"), data=body).status_code == 200
    assert [r.body for r in server.seen()] == [b"the whole body"] * 2


def test_reauth_does_not_resend_a_generator_body(server, session):
    tokens = TokenEndpoint()
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens))
    server.route_fn("PUT", "/f", accept({"t2"}))
    response = session.put(server.url("/f"), data=iter([b"once"]))
    assert response.status_code == 401
    assert len(server.seen()) == 1
    assert tokens.calls == 1


def test_without_auth_a_401_is_just_the_typed_error(server, session, fast):
    server.route(
        "GET", "/a", Reply(401, '{"error": "invalid_client"}', {"Content-Type": "application/json"})
    )
    response = session.get(server.url("/a"))
    error = pytest.raises(rbe.AuthenticationError, response.raise_for_status).value
    assert error.info.error_code == "invalid_client"
    assert len(server.seen()) == 1


def test_refresh_storm_fetches_one_token(server, session):
    """32 threads on one Session all get 401 for a revoked token: one fetch."""
    tokens = TokenEndpoint(delay=0.05)
    valid = {"t1"}
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens), pool_maxsize=32)
    server.route_fn("GET", "/a", accept(valid))
    assert session.get(server.url("/a")).status_code == 200  # t1 fetched and used
    valid.clear()
    valid.add("t2")  # the server revokes t1 early; t2 is what the next fetch returns
    barrier = threading.Barrier(32)

    def call(_: int) -> int:
        barrier.wait()
        return session.get(server.url("/a")).status_code

    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(call, range(32)))
    assert statuses == [200] * 32
    assert tokens.calls == 2  # the first token, and exactly one refresh


def test_expired_token_storm_fetches_one_token(server, session, clock):
    """32 threads find the token expired (by its lifetime) together: one fetch."""
    tokens = TokenEndpoint(lifetime=0.5, delay=0.05)
    auth = rbe.TokenAuth(tokens, clock=clock)
    rbe.mount(session, server.url("/"), auth=auth, pool_maxsize=32)
    server.route("GET", "/a", Reply(200, "ok"))
    session.get(server.url("/a"))
    clock.advance(0.5)
    barrier = threading.Barrier(32)

    def call(_: int) -> int:
        barrier.wait()
        return session.get(server.url("/a")).status_code

    with ThreadPoolExecutor(32) as pool:
        assert list(pool.map(call, range(32))) == [200] * 32
    assert tokens.calls == 2
    assert {r.headers["Authorization"] for r in server.seen()[1:]} == {"Bearer t2"}


def test_token_is_renewed_before_its_known_expiry(server, session, clock):
    tokens = TokenEndpoint(lifetime=1.0)
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens, clock=clock))
    server.route("GET", "/a", Reply(200, "ok"))
    session.get(server.url("/a"))
    clock.advance(0.89)  # not yet inside the renewal margin (10 % of the lifetime)
    session.get(server.url("/a"))
    clock.advance(0.02)  # inside it, not yet expired
    session.get(server.url("/a"))
    assert [r.headers["Authorization"] for r in server.seen()] == [
        "Bearer t1",
        "Bearer t1",
        "Bearer t2",
    ]
    assert tokens.calls == 2


def _mount(session, prefix, auth, wide):
    if wide:  # the adapter also handles the redirected hop, outside its prefix
        session.mount("http://", rbe.BloxsAdapter(prefix=prefix, auth=auth))
    else:
        rbe.mount(session, prefix, auth=auth)


@pytest.mark.parametrize("wide", [False, True])
def test_redirect_to_another_host_carries_no_token(server, other_server, session, wide):
    _mount(session, server.url("/"), rbe.TokenAuth(TokenEndpoint()), wide)
    server.route("GET", "/go", Reply(302, "", {"Location": other_server.url("/landing")}))
    other_server.route("GET", "/landing", Reply(200, "landed"))
    response = session.get(server.url("/go"))
    assert response.text == "landed"
    assert server.seen()[0].headers["Authorization"] == "Bearer t1"
    assert "Authorization" not in other_server.seen()[0].headers


@pytest.mark.parametrize("wide", [False, True])
def test_redirect_outside_the_prefix_on_the_same_host_carries_no_token(server, session, wide):
    _mount(session, server.url("/api/"), rbe.TokenAuth(TokenEndpoint()), wide)
    server.route("GET", "/api/go", Reply(302, "", {"Location": "/public/landing"}))
    server.route("GET", "/public/landing", Reply(200, "landed"))
    assert session.get(server.url("/api/go")).text == "landed"
    first, second = server.seen()
    assert first.headers["Authorization"] == "Bearer t1"
    assert "Authorization" not in second.headers


def test_prefix_match_is_by_whole_path_segment(server, session):
    tokens = TokenEndpoint()
    adapter = rbe.BloxsAdapter(prefix=server.url("/api"), auth=rbe.TokenAuth(tokens))
    session.mount("http://", adapter)  # deliberately wider than its prefix
    server.route("GET", "/api-other/x", Reply(200, "ok"))
    server.route("GET", "/api/x", Reply(200, "ok"))
    session.get(server.url("/api-other/x"))
    session.get(server.url("/api/x"))
    first, second = server.seen()
    assert "Authorization" not in first.headers
    assert second.headers["Authorization"] == "Bearer t1"


def test_callers_request_is_not_modified(server, session):
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(TokenEndpoint()))
    server.route("GET", "/a", Reply(200, "ok"))
    prepared = session.prepare_request(requests.Request("GET", server.url("/a")))
    session.send(prepared)
    assert "Authorization" not in prepared.headers


def test_auth_needs_a_prefix_with_a_host(session):
    auth = rbe.TokenAuth(TokenEndpoint())
    with pytest.raises(ValueError, match="names a host"):
        rbe.mount(session, "https://", auth=auth)
    with pytest.raises(ValueError, match="names a host"):
        rbe.install("http://", auth=auth)
    with pytest.raises(ValueError, match="names a host"):
        rbe.BloxsAdapter(auth=auth)


def test_plain_http_to_a_remote_host_warns_once(rbe_logs):
    # once per prefix and process: a host no other test of this process names
    prefix = f"http://api-{os.urandom(4).hex()}.example.com/"
    auth = rbe.TokenAuth(TokenEndpoint())
    rbe.BloxsAdapter(prefix=prefix, auth=auth)
    rbe.BloxsAdapter(prefix=prefix, auth=auth)
    rbe.install(prefix, auth=auth)  # an adapter per Session from now on
    requests.Session()
    requests.Session()
    warnings = [r for r in rbe_logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "plain HTTP" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "prefix", ["http://127.0.0.1:8080/", "http://localhost/", "http://[::1]/", "https://x.io/"]
)
def test_loopback_or_https_does_not_warn(rbe_logs, prefix):
    rbe.BloxsAdapter(prefix=prefix, auth=rbe.TokenAuth(TokenEndpoint()))
    assert not [r for r in rbe_logs.records if r.levelno >= logging.WARNING]


def test_token_auth_rejects_bad_tokens(server, session):
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(lambda: 42))
    with pytest.raises(TypeError, match="token string"):
        session.get(server.url("/a"))
    for token in ("a\r\nX-Evil: 1", "   ", "nul\x00", "caf\u00e9\u2603", "\x1b[31m"):
        rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(lambda token=token: token))
        error = pytest.raises(rbe.TokenResponseError, session.get, server.url("/a")).value
        assert "unusable" in str(error)
        assert token.strip() not in str(error) or not token.strip()
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(lambda: ("t", "soon")))
    with pytest.raises(TypeError, match="expires_in"):
        session.get(server.url("/a"))
    assert server.seen() == []  # nothing was sent with a broken credential


def test_token_auth_is_also_a_plain_requests_auth(server, session):
    server.route("GET", "/a", Reply(200, "ok"))
    session.get(server.url("/a"), auth=rbe.TokenAuth(lambda: "plain"))
    assert server.seen()[0].headers["Authorization"] == "Bearer plain"


def test_each_retry_is_re_signed_after_the_wait(server, session):
    """A token that expires during a Retry-After wait is renewed before the retry."""
    tokens = TokenEndpoint(lifetime=0.3)
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(tokens))
    server.route("GET", "/a", Reply(503, "busy", {"Retry-After": "0.4"}), Reply(200, "ok"))
    response = session.get(server.url("/a"))
    assert response.status_code == 200
    assert [r.headers["Authorization"] for r in server.seen()] == ["Bearer t1", "Bearer t2"]
    # what the response reports as sent is what was sent last
    assert response.request.headers["Authorization"] == "Bearer t2"
    copied = response.request.headers.copy()
    copied["Authorization"] = "changed"
    assert response.request.headers["Authorization"] == "Bearer t2"  # a real copy again


def test_a_refused_re_sign_raises_the_credentials_error_not_connection_error(server, session):
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("token endpoint refused the secret")
        return "t1", 0.2

    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(fetch))
    server.route("GET", "/a", Reply(503, "busy", {"Retry-After": "0.3"}), Reply(200, "ok"))
    with pytest.raises(RuntimeError, match="token endpoint refused"):
        session.get(server.url("/a"))
    assert len(server.seen()) == 1
