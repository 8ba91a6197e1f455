"""The vendor credentials against the simulator, and the HMAC signature on its own."""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import (
    BLOXS_TOKEN_PATH,
    COMPLEXES,
    DEALCLOUD_TOKEN_PATH,
    Simulator,
)

ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"


def bloxs_session(sim: Simulator, **auth_kwargs) -> requests.Session:
    key, secret = sim.bloxs_credentials
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret, **auth_kwargs))
    return session


# -- Bloxs bearer tokens ------------------------------------------------------


def test_bloxs_token_is_fetched_once_and_used(sim):
    session = bloxs_session(sim)
    for _ in range(3):
        assert session.get(sim.url + COMPLEXES).status_code == 200
    (fetch,) = sim.token_requests()
    assert fetch.method == "POST"
    assert fetch.path == BLOXS_TOKEN_PATH
    assert fetch.headers["Content-Type"] == "application/json"
    assert fetch.body == b'{"apiKey": "demo-key", "apiSecret": "demo-secret"}'
    data = sim.seen("GET", COMPLEXES)
    assert len({r.headers["Authorization"] for r in data}) == 1
    assert data[0].headers["Authorization"].startswith("Bearer bl-")


def test_bloxs_token_lifetime_comes_from_expiration(clock):
    # The expiration is a date on the simulator's clock: the credential's must be the
    # same one (a real simulator's date drifts ahead of a fake clock on a busy host).
    with Simulator(clock=clock) as sim:
        sim.bloxs_token_lifetime = 1.0  # renewal margin: 10 % of the lifetime
        session = bloxs_session(sim, clock=clock)
        session.get(sim.url + COMPLEXES)
        clock.advance(0.85)  # not yet inside the margin
        session.get(sim.url + COMPLEXES)
        assert len(sim.token_requests()) == 1
        clock.advance(0.1)  # inside it: renewed before it expires
        assert session.get(sim.url + COMPLEXES).status_code == 200
        assert len(sim.token_requests()) == 2
        assert all(r.status == 200 for r in sim.seen("GET", COMPLEXES))  # renewed in time


def test_bloxs_revoked_token_is_refreshed_once(sim):
    session = bloxs_session(sim)
    session.get(sim.url + COMPLEXES)
    sim.revoke_tokens()
    response = session.get(sim.url + COMPLEXES)
    assert response.status_code == 200
    assert [r.status for r in sim.seen("GET", COMPLEXES)] == [200, 401, 200]
    assert len(sim.token_requests()) == 2


def test_bloxs_refused_credentials_raise_authentication_error_at_once(sim, rbe_logs):
    session = requests.Session()
    auth = rbe.BloxsTokenAuth(sim.url, "demo-key", "not-the-secret-9f2e")
    rbe.mount(session, sim.url + "/", auth=auth)
    with pytest.raises(rbe.AuthenticationError) as caught:
        session.get(sim.url + COMPLEXES)
    text = str(caught.value)
    assert "api_key" in text
    assert "api_secret" in text
    assert "apiKey: The API key and secret do not match" in text
    assert "not-the-secret-9f2e" not in text
    assert "not-the-secret-9f2e" not in repr(auth)
    assert all("not-the-secret-9f2e" not in r.getMessage() for r in rbe_logs.records)
    assert caught.value.status_code == 400
    assert len(sim.token_requests()) == 1  # no retry loop
    assert sim.seen("GET", COMPLEXES) == []  # nothing sent without a token


def test_refused_credentials_are_fetched_once_for_many_threads(sim):
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, "demo-key", "wrong"))
    sim.slow(0.2, path=BLOXS_TOKEN_PATH)  # keep the others waiting on the first fetch
    barrier = threading.Barrier(16)

    def call(_: int) -> str:
        barrier.wait()
        try:
            session.get(sim.url + COMPLEXES)
        except rbe.AuthenticationError:
            return "refused"
        return "sent"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(call, range(16)))
    assert outcomes == ["refused"] * 16
    assert len(sim.token_requests()) == 1


@pytest.mark.parametrize(
    ("status", "headers", "fetches"),
    [(429, {"retry_after": 0}, 2), (503, {"retry_after": 0}, 2), (502, {}, 1)],
)
def test_token_endpoint_errors_follow_the_retry_rules(sim, status, headers, fetches):
    sim.fail(status, path=BLOXS_TOKEN_PATH, method="POST", times=1, **headers)
    session = bloxs_session(sim)
    if fetches == 2:
        assert session.get(sim.url + COMPLEXES).status_code == 200
    else:  # a POST is not resent after a 502: the error is raised, typed
        with pytest.raises(rbe.ServerError):
            session.get(sim.url + COMPLEXES)
    assert len(sim.token_requests()) == fetches


def test_token_endpoint_answering_garbage_is_a_clear_error(sim):
    sim.fail(
        200, path=BLOXS_TOKEN_PATH, body="<html>login</html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(rbe.TokenResponseError, match="without a JSON object"):
        bloxs_session(sim).get(sim.url + COMPLEXES)


# -- OAuth2 client credentials (DealCloud) --------------------------------------


def dealcloud_session(
    sim: Simulator, scope: str | None = "data", secret: str | None = None, **auth_kwargs
):
    token_url, client_id, client_secret = sim.dealcloud_credentials
    auth = rbe.ClientCredentialsAuth(
        token_url, client_id, secret or client_secret, scope=scope, **auth_kwargs
    )
    session = requests.Session()
    rbe.mount(session, sim.url + "/api/rest/", auth=auth)
    return session, auth


def test_client_credentials_grant(sim):
    session, _ = dealcloud_session(sim)
    assert session.get(sim.url + ENTRIES).status_code == 200
    (fetch,) = sim.token_requests()
    assert fetch.path == DEALCLOUD_TOKEN_PATH
    assert fetch.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = dict(pair.split("=") for pair in fetch.body.decode().split("&"))
    assert form == {
        "grant_type": "client_credentials",
        "client_id": "demo-client",
        "client_secret": "demo-client-secret",
        "scope": "data",
    }


def test_client_credentials_use_expires_in(sim, clock):
    sim.dealcloud_token_lifetime = 1
    session, _ = dealcloud_session(sim, clock=clock)
    session.get(sim.url + ENTRIES)
    clock.advance(0.85)
    session.get(sim.url + ENTRIES)
    assert len(sim.token_requests()) == 1
    clock.advance(0.1)  # inside the renewal margin (10 % of expires_in)
    session.get(sim.url + ENTRIES)
    assert len(sim.token_requests()) == 2


def test_invalid_client_names_the_credential_to_check(sim):
    session, auth = dealcloud_session(sim, secret="leaked-if-printed")
    with pytest.raises(rbe.AuthenticationError) as caught:
        session.get(sim.url + ENTRIES)
    text = str(caught.value)
    assert "client_id (demo-client) and client_secret" in text
    assert "invalid_client" in text
    assert "leaked-if-printed" not in text
    assert "leaked-if-printed" not in repr(auth)
    assert caught.value.status_code == 401


def test_invalid_scope_names_the_scope(sim):
    session, _ = dealcloud_session(sim, scope="backup")
    with pytest.raises(rbe.AuthenticationError, match="the scope 'backup' is granted"):
        session.get(sim.url + ENTRIES)


def test_missing_data_scope_is_a_permission_error_after_one_refresh(sim):
    session, _ = dealcloud_session(sim, scope="publish")
    response = session.get(sim.url + ENTRIES)
    assert response.status_code == 403
    error = pytest.raises(rbe.PermissionDeniedError, response.raise_for_status).value
    assert error.info.error_code == "insufficient_scope"
    assert [a.decision for a in error.history] == ["reauth", "returned"]
    assert len(sim.token_requests()) == 2


def test_dealcloud_quota_is_retried_after_retry_after(sim):
    sim.dealcloud_quota = (2, 1.0)
    session, _ = dealcloud_session(sim)
    statuses = [session.get(sim.url + ENTRIES).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    served = [r.status for r in sim.seen("GET", ENTRIES)]
    assert served == [200, 200, 429, 200]


# -- Bloxs v1 HMAC signature ---------------------------------------------------------


def test_signature_matches_the_documented_formula():
    # computed here from the documentation, independently of the signer
    token_parts = b"my-key:1700000000:42"
    expected = hmac.new(b"my-secret", token_parts, hashlib.sha256).hexdigest()
    assert rbe.bloxs_signature("my-key", "my-secret", 1700000000, 42) == expected
    assert expected == expected.lower()
    assert len(expected) == 64


def test_hmac_headers_for_a_get_and_a_post():
    auth = rbe.BloxsHmacAuth("my-key", "my-secret", clock=lambda: 1700000000.9)
    get = requests.Request("GET", "https://acme.bloxs.io/Test").prepare()
    auth.sign(get)
    signature = hmac.new(b"my-secret", b"my-key:1700000000:0", hashlib.sha256).hexdigest()
    assert get.headers["Authorization"] == f"bloxs my-key:{signature}"
    assert get.headers["x-timestamp"] == "1700000000"
    post = requests.Request("POST", "https://acme.bloxs.io/x", json={"a": "é"}).prepare()
    auth.sign(post)
    size = len(post.body)
    signature = hmac.new(
        b"my-secret", f"my-key:1700000000:{size}".encode(), hashlib.sha256
    ).hexdigest()
    assert post.headers["Authorization"] == f"bloxs my-key:{signature}"


def test_simulator_accepts_hmac_signed_requests(sim):
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsHmacAuth(*sim.bloxs_credentials))
    assert session.get(sim.url + "/Test").status_code == 200
    assert session.post(sim.url + COMPLEXES, json={"name": "Signed"}).status_code == 201
    assert sim.token_requests() == []


def test_every_attempt_is_signed_with_a_fresh_timestamp(sim):
    ticks = iter(range(1_800_000_000, 1_800_000_100, 7))
    clock_lock = threading.Lock()

    def clock() -> float:
        with clock_lock:
            return float(next(ticks))

    sim.hmac_skew = 10**12  # the fake clock is far from the simulator's
    sim.fail(503, path="/Test", retry_after="0.1", times=2)
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsHmacAuth(*sim.bloxs_credentials, clock=clock))
    assert session.get(sim.url + "/Test").status_code == 200
    stamps = [r.headers["x-timestamp"] for r in sim.seen("GET", "/Test")]
    assert stamps == ["1800000000", "1800000007", "1800000014"]


def test_a_stale_signature_is_re_signed_on_401(sim):
    now = [0.0]  # first far in the past (clock skew), then right

    def clock() -> float:
        import time

        return now[0] or time.time()

    auth = rbe.BloxsHmacAuth(*sim.bloxs_credentials, clock=clock)
    original_refresh = auth.refresh

    def refresh(request, response):
        now[0] = 0.0
        return original_refresh(request, response)

    now[0] = 1_000_000.0
    auth.refresh = refresh
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=auth)
    assert session.get(sim.url + "/Test").status_code == 200
    assert [r.status for r in sim.seen("GET", "/Test")] == [401, 200]


# -- configuration and secrecy ------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (lambda: rbe.BloxsTokenAuth("https://acme.bloxs.io", "", "s"), ValueError),
        (lambda: rbe.BloxsTokenAuth("acme.bloxs.io", "k", "s"), ValueError),
        (lambda: rbe.ClientCredentialsAuth("https://x.io/token", "id", ""), ValueError),
        (
            lambda: rbe.ClientCredentialsAuth("https://x.io/token", "id", "s", scope=["data"]),
            TypeError,
        ),
        (lambda: rbe.BloxsHmacAuth("k:ey", "s"), ValueError),
        (lambda: rbe.BloxsHmacAuth("key", ""), ValueError),
    ],
)
def test_bad_credentials_configuration(factory, error):
    with pytest.raises(error):
        factory()


def test_providers_pickle_and_keep_no_token(sim):
    auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials)
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=auth)
    session.get(sim.url + COMPLEXES)
    token = sim.seen("GET", COMPLEXES)[0].headers["Authorization"].split()[1]
    data = pickle.dumps(auth)
    assert token.encode() not in data
    clone = pickle.loads(data)
    other = requests.Session()
    rbe.mount(other, sim.url + "/", auth=clone)
    assert other.get(sim.url + COMPLEXES).status_code == 200
    for cls_auth in (
        rbe.ClientCredentialsAuth(*sim.dealcloud_credentials),
        rbe.BloxsHmacAuth(*sim.bloxs_credentials),
    ):
        assert type(pickle.loads(pickle.dumps(cls_auth))) is type(cls_auth)


def test_no_secret_or_token_in_reprs_or_logs(sim, rbe_logs):
    rbe_logs.set_level(logging.DEBUG)
    key, secret = sim.bloxs_credentials
    token_url, client_id, client_secret = sim.dealcloud_credentials
    providers = [
        rbe.BloxsTokenAuth(sim.url, key, secret),
        rbe.ClientCredentialsAuth(token_url, client_id, client_secret, scope="data"),
        rbe.BloxsHmacAuth(key, secret),
    ]
    sim.fail(503, path=COMPLEXES, retry_after=0, times=3)
    tokens = []
    for auth in providers:
        session = requests.Session()
        rbe.mount(session, sim.url + "/", auth=auth)
        path = ENTRIES if isinstance(auth, rbe.ClientCredentialsAuth) else COMPLEXES
        response = session.get(sim.url + path)
        tokens.append(response.request.headers["Authorization"].split(" ", 1)[1])
    texts = [repr(p) for p in providers] + [r.getMessage() for r in rbe_logs.records]
    for text in texts:
        for secret_value in (secret, client_secret, *tokens):
            assert secret_value not in text


def test_a_refusal_is_remembered_then_forgotten(sim):
    auth = rbe.BloxsTokenAuth(sim.url, "demo-key", "wrong")
    session = requests.Session()
    rbe.mount(session, sim.url + "/", auth=auth)
    for _ in range(5):  # a worker looping over items with a bad secret
        with pytest.raises(rbe.AuthenticationError):
            session.get(sim.url + COMPLEXES)
    assert len(sim.token_requests()) == 1
    auth.api_secret = "demo-secret"  # fixed in place
    auth.invalidate()
    assert session.get(sim.url + COMPLEXES).status_code == 200
    assert len(sim.token_requests()) == 2


def test_a_transient_token_failure_is_not_remembered(sim):
    sim.fail(502, path=BLOXS_TOKEN_PATH, times=1)
    session = bloxs_session(sim)
    with pytest.raises(rbe.ServerError):
        session.get(sim.url + COMPLEXES)
    assert session.get(sim.url + COMPLEXES).status_code == 200  # the next call tries again
