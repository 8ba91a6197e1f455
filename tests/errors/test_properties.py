"""Property tests: every parser is total and its results stay within bounds."""

from __future__ import annotations

import io
import json
import math
from email.utils import formatdate

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

import requests_bloxs_errors as rbe
from requests_bloxs_errors.errors.parsing import (
    MAX_FIELDS,
    MAX_MESSAGES,
    MAX_TEXT,
    parse_body,
    parse_iso8601,
    parse_quota,
    parse_retry_after,
    retry_after_from_headers,
    trace_id_from_headers,
)

pytestmark = pytest.mark.slow  # hypothesis-heavy

MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

header_text = st.text(st.characters(codec="latin-1"), max_size=80)
retry_after_values = st.one_of(
    header_text,
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda f: f"{f:.3f}"),
    st.integers(-(2**40), 2**40).map(
        lambda t: formatdate(t, usegmt=True) if abs(t) < 2**35 else str(t)
    ),
)


def within_bounds(wait: float | None) -> bool:
    return wait is None or (math.isfinite(wait) and wait >= 0)


@MANY
@given(retry_after_values, st.one_of(st.none(), header_text), st.floats(0, 4e9))
def test_retry_after_is_none_or_a_finite_wait(value, date, now):
    assert within_bounds(parse_retry_after(value, date=date, now=now))


@MANY
@given(st.integers(0, 10**12))
def test_retry_after_seconds_round_trip(seconds):
    assert parse_retry_after(str(seconds)) == float(seconds)


@MANY
@given(
    st.dictionaries(
        st.sampled_from(["Retry-After", "retry-after-ms", "x-ms-retry-after-ms", "Date", "X"]),
        retry_after_values,
    )
)
def test_retry_after_from_any_headers(headers):
    assert within_bounds(retry_after_from_headers(CaseInsensitiveDict(headers)))


@MANY
@given(
    st.dictionaries(
        st.sampled_from(
            ["traceparent", "X-Request-Id", "X-Correlation-Id", "Request-Context", "Other"]
        ),
        st.text(max_size=3000),
    )
)
def test_trace_id_is_one_bounded_printable_line(headers):
    trace = trace_id_from_headers(CaseInsensitiveDict(headers))
    assert trace is None or (0 < len(trace) <= 200 and trace.isprintable() and "\n" not in trace)


@MANY
@given(st.text(max_size=300))
def test_quota_is_none_or_positive(text):
    quota = parse_quota(text)
    assert quota is None or (quota[0] >= 0 and math.isfinite(quota[1]) and quota[1] > 0)


@MANY
@given(
    st.integers(1, 10**9),
    st.integers(1, 999),
    st.sampled_from(["s", "second", "seconds", "m", "minute", "h", "hour", "d", "day"]),
    st.sampled_from(
        [
            "maximum admitted {limit} per {count} {unit}",
            "limit of {limit} get requests per {count} {unit} is used up",
        ]
    ),
    st.text(" \t\r\n", max_size=3000),
)
def test_quota_message_round_trip(limit, count, unit, form, padding):
    """Both vendors' wording, after any run of whitespace (a long run once made the
    scan quadratic)."""
    seconds = {
        "s": 1,
        "second": 1,
        "seconds": 1,
        "m": 60,
        "minute": 60,
        "h": 3600,
        "hour": 3600,
        "d": 86400,
        "day": 86400,
    }[unit]
    text = padding + form.format(limit=limit, count=count, unit=unit) + "."
    assert len(text) < 4096  # within the part that is searched
    assert parse_quota(text) == (limit, count * seconds)


def test_a_zero_quota_is_no_quota():
    assert parse_quota("maximum admitted 0 per 1 second") is None


@SOME
@given(
    st.text(" \t\r\n\x0b\x0c", min_size=1000, max_size=70000),
    st.sampled_from(
        ["maximum admitted 5 per", "limit of 3 get requests per", "<title>", "<", "maximum"]
    ),
)
def test_long_whitespace_runs_give_a_bounded_result(spaces, keyword):
    for text in (keyword + spaces, spaces + keyword, keyword + spaces + keyword + spaces):
        assert parse_quota(text) is None
        parsed = parse_body(text.encode(), "text/plain")
        assert len(parsed.text) <= MAX_TEXT


@MANY
@given(st.one_of(st.text(max_size=60), st.none(), st.integers()))
def test_iso8601_is_total(value):
    result = parse_iso8601(value)
    assert result is None or math.isfinite(result)


def check_parsed(parsed) -> None:
    assert parsed.message is None or (
        len(parsed.message) <= MAX_TEXT and "\n" not in parsed.message
    )
    assert len(parsed.errors) <= MAX_FIELDS
    for name, messages in parsed.errors.items():
        assert isinstance(name, str)
        assert 0 < len(messages) <= MAX_MESSAGES
        assert all(isinstance(m, str) and len(m) <= MAX_TEXT for m in messages)
    assert parsed.quota is None or parsed.quota[1] > 0


content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/problem+json",
            "text/plain",
            "text/html",
            "text/plain; charset=latin-1",
            "text/plain; charset=bogus",
            "application/json; charset=utf-16",
        ]
    ),
    header_text,
)


@MANY
@given(st.binary(max_size=2000), content_types)
def test_any_bytes_parse(data, content_type):
    check_parsed(parse_body(data, content_type))


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "type": json_values,
        "title": json_values,
        "detail": json_values,
        "status": json_values,
        "traceId": json_values,
        "errors": st.one_of(
            json_values,
            st.dictionaries(st.text(max_size=20), st.lists(json_values, max_size=4), max_size=8),
        ),
        "error": json_values,
        "error_description": json_values,
        "message": json_values,
    },
)


@SOME  # generating nested JSON is slow; the byte-level test above covers volume
@given(shaped, content_types)
def test_problem_validation_and_oauth_shapes_parse(document, content_type):
    check_parsed(parse_body(json.dumps(document).encode(), content_type))


@SOME
@given(
    st.integers(100, 999),
    st.binary(max_size=3000),
    st.dictionaries(
        st.sampled_from(
            [
                "Content-Type",
                "Retry-After",
                "retry-after-ms",
                "X-Request-Id",
                "Date",
                "Content-Encoding",
            ]
        ),
        header_text,
        max_size=5,
    ),
    st.sampled_from(["GET", "POST", "PATCH", "PUT", None]),
)
def test_classify_never_raises(status, body, headers, method):
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers)
    response.raw = io.BytesIO(body)
    response.url = "https://acme.bloxs.io/api/v1/x?token=secret"
    if method:
        response.request = requests.Request(method, response.url).prepare()
    info = rbe.classify(response)
    if status < 400 or status >= 600:
        assert info is None
        return
    assert info.status == status
    assert info.kind
    assert within_bounds(info.retry_after)
    assert len(info.message) <= MAX_TEXT
    error = rbe.error_for(response, info)
    assert isinstance(error, requests.HTTPError)
    assert "token=secret" not in str(error)
