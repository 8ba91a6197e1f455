"""The parsers: Retry-After in every form, trace ids, error bodies. No sockets."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest
from requests.structures import CaseInsensitiveDict

from requests_bloxs_errors.errors import parsing
from requests_bloxs_errors.errors.parsing import (
    MAX_TEXT,
    parse_body,
    parse_quota,
    parse_retry_after,
    retry_after_from_headers,
    trace_id_from_headers,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("", None),
        ("   ", None),
        (None, None),
        ("-1", None),
        ("-0.5", None),
        ("1e3", None),
        ("soon", None),
        ("1,5", None),
        ("NaN", None),
        ("inf", None),
        ("Infinity", None),
        ("9" * 400, None),  # overflows to inf: rejected, not a crash
        ("\x00\x01", None),
    ],
)
def test_retry_after_seconds_and_garbage(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_http_date_against_local_clock():
    value = formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(value, now=NOW) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero():
    assert parse_retry_after(formatdate(NOW - 300, usegmt=True), now=NOW) == 0.0


def test_retry_after_http_date_is_measured_against_the_date_header():
    # the local clock is 10 minutes off; the server's own Date makes the wait right
    value = formatdate(NOW + 5, usegmt=True)
    date = formatdate(NOW, usegmt=True)
    assert parse_retry_after(value, date=date, now=NOW + 600) == pytest.approx(5.0)


def test_retry_after_bad_date_header_falls_back_to_now():
    value = formatdate(NOW + 5, usegmt=True)
    assert parse_retry_after(value, date="yesterday", now=NOW) == pytest.approx(5.0)


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 32 Foo 2026 99:99:99 GMT",
        "Wed, 21 Oct 2015 07:28:00",
        "Fri, 31 Dec 99999 23:59:59 GMT",
    ],
)
def test_retry_after_broken_dates_never_raise(value):
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0


def test_retry_after_ms_headers_win():
    headers = CaseInsensitiveDict({"Retry-After": "10", "retry-after-ms": "1500"})
    assert retry_after_from_headers(headers) == 1.5
    headers = CaseInsensitiveDict({"x-ms-retry-after-ms": "250"})
    assert retry_after_from_headers(headers) == 0.25


def test_retry_after_unusable_ms_header_falls_through():
    headers = CaseInsensitiveDict({"retry-after-ms": "-5", "Retry-After": "2"})
    assert retry_after_from_headers(headers) == 2.0


def test_retry_after_from_headers_without_any():
    assert retry_after_from_headers(CaseInsensitiveDict()) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ({"X-Request-Id": "req-1"}, "req-1"),
        ({"X-Correlation-Id": "corr-9"}, "corr-9"),
        ({"Request-Context": "appId=cid-v1:4d41"}, "appId=cid-v1:4d41"),
        ({"X-Request-Id": "a", "Request-Context": "b"}, "a"),
        ({"X-Request-Id": "bad\r\nInjected: yes"}, "bad Injected: yes"),
        ({}, None),
        ({"X-Request-Id": "   "}, None),
    ],
)
def test_trace_id_from_headers(headers, expected):
    assert trace_id_from_headers(CaseInsensitiveDict(headers)) == expected


def test_trace_id_from_headers_is_bounded():
    assert len(trace_id_from_headers(CaseInsensitiveDict({"X-Request-Id": "x" * 10_000}))) <= 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("API calls quota exceeded! maximum admitted 5 per 1 second.", (5, 1.0)),
        ("API calls quota exceeded! maximum admitted 100 per 1m.", (100, 60.0)),
        ("maximum admitted 10 per 15 minutes", (10, 900.0)),
        ("maximum admitted 1000 per 1h", (1000, 3600.0)),
        ("maximum admitted 3 per 1d", (3, 86400.0)),
        ("maximum admitted 7 per 500ms", (7, 0.5)),
        ("maximum admitted 5 per second", (5, 1.0)),
        ("quota exceeded", None),
        ("maximum admitted 5 per 0 seconds", None),
        ("maximum admitted five per 1 second", None),
    ],
)
def test_parse_quota(text, expected):
    assert parse_quota(text) == expected


BLOXS_400 = {
    "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
    "title": "One or more validation errors occurred.",
    "traceId": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
    "status": 400,
    "errors": {
        "Name": ["The Name field is required."],
        "Paging.PageSize": ["The field PageSize must be between 1 and 1000.", "Too big."],
    },
}


def test_bloxs_validation_body():
    parsed = parse_body(json.dumps(BLOXS_400).encode(), "application/problem+json; charset=utf-8")
    assert parsed.errors == {
        "Name": ("The Name field is required.",),
        "Paging.PageSize": ("The field PageSize must be between 1 and 1000.", "Too big."),
    }
    assert parsed.trace_id == BLOXS_400["traceId"]
    assert parsed.title == "One or more validation errors occurred."
    assert parsed.message == "One or more validation errors occurred."


def test_problem_details_415():
    body = {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.16",
        "title": "Unsupported Media Type",
        "status": 415,
        "traceId": "00-e5301e2925cf99bed73710e4ec4a7b21-8d92b268f9e04d2a-00",
    }
    parsed = parse_body(json.dumps(body).encode(), "application/problem+json")
    assert parsed.title == "Unsupported Media Type"
    assert parsed.message == "Unsupported Media Type"
    assert parsed.trace_id == body["traceId"]
    assert parsed.errors == {}


def test_problem_details_detail_wins_over_title():
    parsed = parse_body(
        b'{"title": "Conflict", "detail": "Version 3 is stale"}', "application/json"
    )
    assert parsed.message == "Version 3 is stale"
    assert parsed.detail == "Version 3 is stale"


def test_oauth_error_bodies():
    parsed = parse_body(b'{"error": "invalid_client"}', "application/json")
    assert parsed.error_code == "invalid_client"
    assert parsed.message == "invalid_client"
    parsed = parse_body(
        b'{"error": "invalid_scope", "error_description": "scope data is not granted"}', None
    )
    assert parsed.message == "invalid_scope: scope data is not granted"


def test_internal_server_error_body():
    parsed = parse_body(b'{"error": "internal_server_error"}', "application/json")
    assert parsed.error_code == "internal_server_error"


def test_gateway_json_message():
    body = b'{"statusCode": 429, "message": "Rate limit is exceeded. Try again in 12 seconds."}'
    assert parse_body(body, "application/json").message.startswith("Rate limit is exceeded")


def test_text_plain_quota_message():
    text = b"API calls quota exceeded! maximum admitted 5 per 1 second."
    parsed = parse_body(text, "text/plain")
    assert parsed.quota == (5, 1.0)
    assert parsed.message == text.decode()


def test_html_error_page_keeps_its_title():
    html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    parsed = parse_body(html, "text/html")
    assert parsed.message == "502 Bad Gateway"


def test_html_without_title_is_stripped_of_tags():
    parsed = parse_body(b"<html><body><p>Service\n  down</p></body></html>", "text/html")
    assert parsed.message == "Service down"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\xfa not utf-8 \xc3",
        b'{"errors": ',  # truncated JSON
        b'{"errors": {"a": [1, null, {"x": 1}, "ok"]}, "title": ["not", "a", "string"]}',
        b"[1, 2, 3]",
        b'"just a string"',
        b"null",
        b"[" * 100_000,  # deep nesting: RecursionError inside json must not escape
        b'{"errors": "not a mapping"}',
        b"\x00" * 1000,
    ],
)
def test_garbage_bodies_never_raise(data):
    parsed = parse_body(data, "application/json")
    assert parsed.message is None or len(parsed.message) <= MAX_TEXT


def test_invalid_utf8_is_kept_as_text():
    parsed = parse_body(b"caf\xe9 down", "text/plain")
    assert parsed.message == "caf\ufffd down"


def test_latin1_charset_is_honoured():
    parsed = parse_body("café fermé".encode("latin-1"), "text/plain; charset=latin-1")
    assert parsed.message == "café fermé"


def test_unknown_charset_falls_back_to_utf8():
    parsed = parse_body(b"ok", "text/plain; charset=no-such-codec")
    assert parsed.message == "ok"


def test_validation_errors_are_bounded():
    body = {"errors": {f"f{i}": ["m" * 5000] * 50 for i in range(500)}}
    parsed = parse_body(json.dumps(body).encode(), "application/json")
    assert len(parsed.errors) == 100
    assert all(len(messages) == 20 for messages in parsed.errors.values())
    assert all(len(m) <= MAX_TEXT for ms in parsed.errors.values() for m in ms)


def test_list_shaped_validation_errors():
    body = b'{"errors": [{"field": "Name", "message": "required"}, "loose message"]}'
    parsed = parse_body(body, "application/json")
    assert parsed.errors == {"Name": ("required",), "": ("loose message",)}


class _Recording:
    """Stands in for a compiled pattern and records the span of every match."""

    def __init__(self, pattern):
        self.pattern = pattern
        self.spans: list[int] = []

    def match(self, text, pos, endpos):
        self.spans.append(min(endpos, len(text)) - pos)
        return self.pattern.match(text, pos, endpos)


@pytest.mark.parametrize(
    "hostile",
    [
        "maximum admitted 5 per" + " " * 4096,
        "maximum " * 600,
        "limit of 3 " + "get " * 1000,
        "maximum admitted 5 per 1 " * 200,
        " " * 4096,
    ],
)
def test_quota_scan_is_linear_in_the_text(monkeypatch, hostile):
    """Counted, not timed: each keyword gets one match over a bounded window, and
    only a bounded number of keywords are tried, so the work is O(len(text))
    whatever the text (a quadratic pattern once spent 0.8 s of CPU on 4 KiB)."""
    recorders = [(keyword, _Recording(pattern)) for keyword, pattern in parsing._QUOTA_PATTERNS]
    monkeypatch.setattr(parsing, "_QUOTA_PATTERNS", tuple(recorders))
    parsing.parse_quota(hostile)
    for keyword, recorder in recorders:
        assert len(recorder.spans) <= min(hostile.count(keyword), parsing.QUOTA_KEYWORDS)
        assert all(span <= parsing.QUOTA_WINDOW for span in recorder.spans)


@pytest.mark.parametrize(
    ("text", "quota"),
    [
        ("API calls quota exceeded! maximum admitted 5 per 1 second.", (5, 1.0)),
        ("The limit of 3 get requests per 60 seconds is used up", (3, 60.0)),
        ("The limit of 100 filter requests per 1 minute is used up", (100, 60.0)),
        ("limit of 10 requests per minute", (10, 60.0)),
        ("maximum admitted 5 per .5 s", (5, 0.5)),
    ],
)
def test_both_vendors_quota_texts_are_parsed(text, quota):
    assert parsing.parse_quota(text) == quota


def test_hostile_html_gives_one_bounded_line():
    """Unclosed and repeated brackets (each tag and title scan stops at the next '<')."""
    for hostile in ("<" * 65536, "<title>" * 9000, "<a" * 30000 + ">"):
        parsed = parsing.parse_body(hostile.encode(), "text/html")
        assert len(parsed.text) <= parsing.MAX_TEXT
