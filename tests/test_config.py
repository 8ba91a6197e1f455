"""Configuration errors at construction, and pickling."""

from __future__ import annotations

import pickle

import pytest
import requests
from urllib3.util.retry import Retry

import requests_bloxs_errors as rbe

from .helpers.server import Reply


def fetch_token() -> str:  # module level, so it pickles
    return "pickled-token"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_retries": -1}, ValueError, "max_retries must be >= 0"),
        ({"max_retries": "3"}, TypeError, "max_retries must be an int"),
        ({"max_retries": True}, TypeError, "max_retries must be an int"),
        ({"max_retries": 2.5}, TypeError, "max_retries must be an int"),
        ({"backoff_factor": -0.1}, ValueError, "backoff_factor"),
        ({"backoff_factor": "fast"}, TypeError, "backoff_factor"),
        ({"backoff_factor": float("nan")}, ValueError, "backoff_factor"),
        ({"max_retry_after": -5}, ValueError, "max_retry_after"),
        ({"deadline": 0}, ValueError, "deadline must be > 0"),
        ({"deadline": "10"}, TypeError, "deadline"),
        ({"raise_errors": "yes"}, TypeError, "raise_errors"),
        ({"auth": "token"}, TypeError, "auth must provide sign"),
        ({"on_retry": "print"}, TypeError, "on_retry must be a callable"),
        ({"on_give_up": [print, 3]}, TypeError, "on_give_up"),
        ({"prefix": "acme.bloxs.io"}, ValueError, r"must start with 'http://' or 'https://'"),
        ({"prefix": "ftp://files/"}, ValueError, "must start with"),
        ({"prefix": "https://user:pw@acme.bloxs.io/"}, ValueError, "credentials"),
        ({"prefix": "https://acme.bloxs.io/?key=1"}, ValueError, "query string"),
        ({"prefix": 42}, TypeError, "prefix must be a string"),
        ({"pool_maxsize_typo": 4}, TypeError, "pool_maxsize_typo"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        rbe.BloxsAdapter(**kwargs)


def test_token_auth_needs_a_callable():
    with pytest.raises(TypeError, match="fetch_token must be a callable"):
        rbe.TokenAuth("my-token")


def test_mount_needs_a_session():
    with pytest.raises(TypeError, match=r"requests\.Session"):
        rbe.mount(object(), "https://")


def test_http_adapter_keywords_pass_through():
    adapter = rbe.BloxsAdapter(pool_connections=3, pool_maxsize=7, pool_block=True)
    assert (adapter._pool_connections, adapter._pool_maxsize, adapter._pool_block) == (3, 7, True)


def test_max_retries_can_be_reassigned_like_on_http_adapter():
    adapter = rbe.BloxsAdapter(max_retries=3, max_retry_after=9)
    adapter.max_retries = 5
    assert adapter.max_retries.total == 5
    assert adapter.max_retries.max_retry_after == 9
    adapter.max_retries = Retry(total=1, status_forcelist=[502])
    assert isinstance(adapter.max_retries, rbe.BloxsRetry)
    assert adapter.max_retries.status_forcelist == [502]
    with pytest.raises(ValueError, match="max_retries must be >= 0"):
        adapter.max_retries = -2


def test_adapter_pickle_round_trip(server):
    adapter = rbe.BloxsAdapter(
        prefix=server.url("/"),
        auth=rbe.TokenAuth(fetch_token),
        max_retries=2,
        backoff_factor=0.01,
        deadline=5,
        raise_errors=True,
        max_retry_after=12,
    )
    clone = pickle.loads(pickle.dumps(adapter))
    assert isinstance(clone, rbe.BloxsAdapter)
    assert clone.max_retries.total == 2
    assert clone.max_retries.max_retry_after == 12
    session = requests.Session()
    session.mount("http://", clone)
    server.route("GET", "/r", Reply(503, "down"), Reply(200, "ok"))
    assert session.get(server.url("/r")).text == "ok"
    assert server.seen()[0].headers["Authorization"] == "Bearer pickled-token"
    server.route("GET", "/missing", Reply(404, "nope"))
    with pytest.raises(rbe.NotFoundError):  # raise_errors survived
        session.get(server.url("/missing"))
    server.route("GET", "/later", Reply(503, "later", {"Retry-After": "10"}))
    with pytest.raises(rbe.ServiceUnavailableError) as caught:
        session.get(server.url("/later"))
    # the deadline survived: a wait of 10 s (within max_retry_after) would cross it
    assert "deadline" in rbe.attempts(caught.value)[-1].decision


def test_session_with_adapter_pickles(server):
    session = requests.Session()
    rbe.mount(session, "http://", max_retries=1)
    clone = pickle.loads(pickle.dumps(session))
    assert isinstance(clone.get_adapter("http://x"), rbe.BloxsAdapter)


def test_token_auth_pickles_without_its_token():
    auth = rbe.TokenAuth(fetch_token)
    request = requests.Request("GET", "https://x.io/").prepare()
    auth.sign(request)
    data = pickle.dumps(auth)
    assert b"pickled-token" not in data
    clone = pickle.loads(data)
    clone.sign(request)
    assert request.headers["Authorization"] == "Bearer pickled-token"


def test_error_response_and_exception_pickle(server, session, fast):
    server.route(
        "GET",
        "/r",
        Reply(
            400,
            '{"title": "bad", "errors": {"Name": ["required"]}}',
            {"Content-Type": "application/json"},
        ),
    )
    response = session.get(server.url("/r"))
    clone = pickle.loads(pickle.dumps(response))
    error = pytest.raises(rbe.BadRequestError, clone.raise_for_status).value
    assert error.errors == {"Name": ["required"]}
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is rbe.BadRequestError
    assert copy.errors == {"Name": ["required"]}
    assert str(copy) == str(error)
