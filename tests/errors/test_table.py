"""The error table as data: every row, the fallbacks, the method-safety rules."""

from __future__ import annotations

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.errors.table import (
    DEFAULT_RETRY_STATUSES,
    QUOTA_RULE,
    Retryable,
    rule_by_kind,
    rule_for,
)

ROWS = [
    # status, kind, exception, retry, reauth
    (400, "bad_request", rbe.BadRequestError, Retryable.NEVER, False),
    (401, "unauthorized", rbe.AuthenticationError, Retryable.NEVER, True),
    (403, "forbidden", rbe.PermissionDeniedError, Retryable.NEVER, True),
    (404, "not_found", rbe.NotFoundError, Retryable.NEVER, False),
    (405, "method_not_allowed", rbe.MethodNotAllowedError, Retryable.NEVER, False),
    (415, "unsupported_media_type", rbe.UnsupportedMediaTypeError, Retryable.NEVER, False),
    (429, "rate_limited", rbe.RateLimitError, Retryable.ALWAYS, False),
    (500, "internal_server_error", rbe.ServerError, Retryable.IDEMPOTENT, False),
    (502, "bad_gateway", rbe.ServerError, Retryable.IDEMPOTENT, False),
    (
        503,
        "service_unavailable",
        rbe.ServiceUnavailableError,
        Retryable.IDEMPOTENT_OR_RETRY_AFTER,
        False,
    ),
    (504, "gateway_timeout", rbe.ServerError, Retryable.IDEMPOTENT, False),
]


@pytest.mark.parametrize(("status", "kind", "exception", "retry", "reauth"), ROWS)
def test_every_row_of_the_table(status, kind, exception, retry, reauth):
    rule = rbe.RULES[status]
    row = (rule.status, rule.kind, rule.exception, rule.retry, rule.reauth)
    assert row == (
        status,
        kind,
        exception,
        retry,
        reauth,
    )
    assert rule_for(status) is rule
    assert rule_by_kind(kind) is rule
    assert rule.action[:1].isupper()


def test_table_covers_exactly_the_documented_statuses():
    assert set(rbe.RULES) == {400, 401, 403, 404, 405, 415, 429, 500, 502, 503, 504}


@pytest.mark.parametrize("status", [402, 409, 410, 418, 422, 451, 499])
def test_other_4xx_fall_back_to_client_error(status):
    rule = rule_for(status)
    assert rule.kind == "client_error"
    assert rule.exception is rbe.ClientError
    assert rule.retry is Retryable.NEVER


@pytest.mark.parametrize("status", [501, 505, 507, 520, 599])
def test_other_5xx_fall_back_to_server_error(status):
    rule = rule_for(status)
    assert rule.kind == "server_error"
    assert rule.exception is rbe.ServerError
    assert rule.retry is Retryable.IDEMPOTENT


@pytest.mark.parametrize("status", [100, 200, 204, 301, 304, 399, 600, 999])
def test_non_errors_have_no_rule(status):
    assert rule_for(status) is None


def test_403_with_retry_after_is_a_quota_not_a_permission_problem():
    assert rule_for(403, has_retry_after=True) is QUOTA_RULE
    assert QUOTA_RULE.exception is rbe.RateLimitError
    assert QUOTA_RULE.reauth is False
    assert QUOTA_RULE.retry is Retryable.ALWAYS
    assert rule_for(403, has_retry_after=False).kind == "forbidden"
    # other statuses are not changed by Retry-After
    assert rule_for(401, has_retry_after=True).kind == "unauthorized"


def test_default_retry_statuses_are_derived_from_the_table():
    assert {429, 500, 502, 503, 504} == DEFAULT_RETRY_STATUSES


@pytest.mark.parametrize(
    ("status", "method", "key", "retry_after", "allowed"),
    [
        (429, "POST", False, None, True),
        (429, "PATCH", False, None, True),
        (503, "POST", False, 2.0, True),
        (503, "POST", False, None, False),
        (500, "POST", False, None, False),
        (502, "PATCH", False, None, False),
        (504, "POST", False, None, False),
        (500, "POST", True, None, True),
        (504, "PATCH", True, None, True),
        (500, "GET", False, None, True),
        (503, "DELETE", False, None, True),
        (502, "PUT", False, None, True),
        (504, "HEAD", False, None, True),
        (500, "OPTIONS", False, None, True),
        (500, "MKCOL", False, None, False),  # unknown methods count as unsafe
        (500, None, False, None, False),
        (400, "GET", True, 1.0, False),
        (404, "GET", False, None, False),
    ],
)
def test_method_safety(status, method, key, retry_after, allowed):
    assert rule_for(status).allows_retry(method, key, retry_after) is allowed


def test_exceptions_are_requests_http_errors():
    for row in (*rbe.RULES.values(), QUOTA_RULE):
        assert issubclass(row.exception, rbe.BloxsError)
        assert issubclass(row.exception, requests.exceptions.HTTPError)
    assert issubclass(rbe.ServiceUnavailableError, rbe.ServerError)
    assert issubclass(rbe.RateLimitError, rbe.ClientError)


def _words(text: str) -> str:
    return " ".join(text.replace("*", " ").split())


def test_the_idempotent_methods_are_stated_as_the_code_knows_them():
    """``rules_text()`` writes the rules that ``table`` prints and the error page shows
    (tests/test_docs.py); its list of methods is the set the code applies."""
    from requests_bloxs_errors.errors.table import IDEMPOTENT_METHODS, IDEMPOTENT_ORDER, rules_text

    assert frozenset(IDEMPOTENT_ORDER) == IDEMPOTENT_METHODS
    assert ", ".join(IDEMPOTENT_ORDER) in rules_text()[0]


def test_explain_uses_the_tables_words_for_every_retry_rule():
    import io

    from requests_bloxs_errors.errors.table import RETRY_WORDS, Retryable
    from requests_bloxs_errors.tools._term import Terminal
    from requests_bloxs_errors.tools.cli import _explain

    statuses = {Retryable.NEVER: "404", Retryable.ALWAYS: "429", Retryable.IDEMPOTENT: "500"}
    statuses[Retryable.IDEMPOTENT_OR_RETRY_AFTER] = "503"
    for retryable, status in statuses.items():
        out = io.StringIO()
        _explain(Terminal(out), status)
        assert _words(RETRY_WORDS[retryable][1]) in _words(out.getvalue())
