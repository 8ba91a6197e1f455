"""classify() on real responses: every table row, the body cap, what it never touches."""

from __future__ import annotations

import json

import pytest
import requests

import requests_bloxs_errors as rbe

from ..helpers.server import Reply, json_reply

CASES = [
    (
        json_reply(
            400,
            json.dumps(
                {
                    "title": "One or more validation errors occurred.",
                    "traceId": "00-1-00",
                    "errors": {"Name": ["The Name field is required."]},
                }
            ),
        ),
        "bad_request",
        rbe.BadRequestError,
    ),
    (json_reply(401, '{"error": "invalid_client"}'), "unauthorized", rbe.AuthenticationError),
    (Reply(403, "forbidden"), "forbidden", rbe.PermissionDeniedError),
    (Reply(404, ""), "not_found", rbe.NotFoundError),
    (Reply(405, ""), "method_not_allowed", rbe.MethodNotAllowedError),
    (
        json_reply(
            415,
            json.dumps(
                {
                    "type": "https://tools.ietf.org/html/rfc9110#section-15.5.16",
                    "title": "Unsupported Media Type",
                    "status": 415,
                    "traceId": "00-e5301e29-8d92b268-00",
                }
            ),
        ),
        "unsupported_media_type",
        rbe.UnsupportedMediaTypeError,
    ),
    (
        Reply(
            429,
            "API calls quota exceeded! maximum admitted 5 per 1 second.",
            {
                "Content-Type": "text/plain",
                "Retry-After": "1",
                "Request-Context": "appId=cid-v1:4d41dfdfabd7",
            },
        ),
        "rate_limited",
        rbe.RateLimitError,
    ),
    (
        json_reply(500, '{"error": "internal_server_error"}'),
        "internal_server_error",
        rbe.ServerError,
    ),
    (
        Reply(502, "<html><title>502 Bad Gateway</title></html>", {"Content-Type": "text/html"}),
        "bad_gateway",
        rbe.ServerError,
    ),
    (
        Reply(503, "maintenance", {"Retry-After": "30"}),
        "service_unavailable",
        rbe.ServiceUnavailableError,
    ),
    (Reply(504, ""), "gateway_timeout", rbe.ServerError),
    (
        Reply(403, "Out of call volume quota.", {"Retry-After": "60"}),
        "quota_exceeded",
        rbe.RateLimitError,
    ),
    (Reply(422, "unprocessable"), "client_error", rbe.ClientError),
    (Reply(507, "full"), "server_error", rbe.ServerError),
]


@pytest.mark.parametrize(("reply", "kind", "error"), CASES)
def test_every_row_from_a_real_response(server, reply, kind, error):
    server.route("GET", "/r", reply)
    response = requests.get(server.url("/r"), timeout=5)  # plain requests: classify() stands alone
    info = rbe.classify(response)
    assert info.kind == kind
    assert info.status == reply.status
    assert type(rbe.error_for(response)) is error
    assert response.content == (reply.body.encode() if isinstance(reply.body, str) else reply.body)


def test_classify_details(server):
    details = {}
    for path, reply in {
        "/400": CASES[0][0],
        "/415": CASES[5][0],
        "/429": CASES[6][0],
        "/502": CASES[8][0],
    }.items():
        server.route("GET", path, reply)
        details[path] = rbe.classify(requests.get(server.url(path), timeout=5))
    assert details["/400"].errors == {"Name": ("The Name field is required.",)}
    assert details["/400"].trace_id == "00-1-00"
    assert details["/415"].trace_id == "00-e5301e29-8d92b268-00"
    assert details["/415"].title == "Unsupported Media Type"
    assert details["/429"].quota == (5, 1.0)
    assert details["/429"].retry_after == 1.0
    assert details["/429"].trace_id == "appId=cid-v1:4d41dfdfabd7"
    assert details["/502"].message == "502 Bad Gateway"


def test_classify_is_none_below_400_and_reads_nothing(server):
    server.route("GET", "/ok", Reply(200, "x" * 100_000))
    response = requests.get(server.url("/ok"), stream=True, timeout=5)
    assert rbe.classify(response) is None
    assert response._content is False
    assert len(response.content) == 100_000


def test_classify_is_cached_and_frozen(server, session, fast):
    server.route("GET", "/r", Reply(404, "nope"))
    response = session.get(server.url("/r"))
    assert rbe.classify(response) is rbe.classify(response)
    with pytest.raises(AttributeError):
        rbe.classify(response).kind = "ok"


def test_an_error_body_is_classified_from_its_first_64_kib_and_stays_whole(server, session, fast):
    """The quota text past the cap is not seen by classify(), but the caller
    still gets every byte (streamed or not)."""
    big = b"E" * (5 * 1024 * 1024) + b" maximum admitted 5 per 1 second"
    server.route("GET", "/r", Reply(429, big, {"Content-Type": "text/plain"}))
    rbe.mount(session, "http://", max_retries=0)
    for stream in (True, False):
        response = session.get(server.url("/r"), stream=stream)
        info = rbe.classify(response)
        assert info.body_truncated is True
        assert info.quota is None  # it lies beyond what was read
        assert response.content == big


def test_retryable_depends_on_the_request(server, session):
    rbe.mount(session, "http://", max_retries=0)
    server.route("GET", "/r", Reply(500, "x"))
    server.route("POST", "/r", Reply(500, "x"))
    assert rbe.classify(session.get(server.url("/r"))).retryable is True
    assert rbe.classify(session.post(server.url("/r"))).retryable is False
    response = session.post(server.url("/r"), headers={"Idempotency-Key": "k"})
    assert rbe.classify(response).retryable is True


def test_classify_never_raises_on_a_broken_response():
    response = requests.Response()
    response.status_code = 500
    response.raw = None
    info = rbe.classify(response)
    assert info.kind == "internal_server_error"
    response = requests.Response()
    response.status_code = "garbage"
    assert rbe.classify(response) is None


def test_error_for_refuses_a_success(server):
    server.route("GET", "/ok", Reply(200, "fine"))
    with pytest.raises(ValueError, match="not an error"):
        rbe.error_for(requests.get(server.url("/ok"), timeout=5))
