"""decide() as a value: no sockets, no clock, no logging (as urllib3 tests Retry).

Each case builds the read-only Context the adapter would build after an
attempt and checks the Decision: action, reason, wait and the next Retry.
"""

from __future__ import annotations

import ssl

import pytest
import requests
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import HTTPResponse
from urllib3.util.retry import Retry

import requests_bloxs_errors as rbe
from requests_bloxs_errors.errors.table import QUOTA_RULE, rule_for
from requests_bloxs_errors.pipeline.failures import failure_of
from requests_bloxs_errors.pipeline.policy import Action, Context, Decision, decide

POLICY = rbe.BloxsRetry(total=3, backoff_factor=0.5, backoff_jitter=0.0)


def after(
    status: int | None = None,
    *,
    method: str = "GET",
    retry: Retry = POLICY,
    retry_after: float | None = None,
    failure=None,
    **fields,
) -> Decision:
    rule = rule_for(status, retry_after is not None) if status is not None else None
    response = HTTPResponse(body=b"", status=status, preload_content=False) if status else None
    return decide(
        Context(
            method=method,
            url="https://acme.bloxs.io/x",
            retry=retry,
            status=status,
            rule=rule,
            retry_after=retry_after,
            response=response,
            failure=failure,
            **fields,
        )
    )


def connection_refused():
    error = NewConnectionError(None, "Failed to establish a new connection: refused")
    return failure_of(requests.ConnectionError(MaxRetryError(None, "/x", error)))


def read_timeout():
    return failure_of(requests.ReadTimeout(ReadTimeoutError(None, "/x", "read timed out")))


def reset():
    return failure_of(requests.ConnectionError(ProtocolError("aborted", ConnectionResetError())))


def test_a_retryable_status_waits_the_back_off_and_counts_down():
    decision = after(503)
    assert decision.action is Action.RETRY
    assert decision.wait == 0.5  # the first retry waits backoff_factor
    assert decision.retry.total == 2
    assert len(decision.retry.history) == 1
    assert decision.label == "retry"
    second = after(503, retry=decision.retry)
    assert second.wait == 1.0


def test_retry_after_is_the_wait_and_is_reported():
    decision = after(429, retry_after=2.5)
    assert (decision.action, decision.wait, decision.retry_after) == (Action.RETRY, 2.5, 2.5)


def test_retry_after_longer_than_the_cap_gives_up():
    decision = after(429, retry_after=120, max_retry_after=60)
    assert decision.action is Action.GIVE_UP
    assert decision.label.startswith("gave up: the server asked to wait 120s")
    assert decision.gave_up


def test_a_wait_that_crosses_the_deadline_gives_up():
    decision = after(503, retry_after=2, time_left=1.5)
    assert decision.action is Action.GIVE_UP
    assert "deadline" in decision.reason


def test_exhausted_counters_give_up():
    decision = after(503, retry=rbe.BloxsRetry(total=0))
    assert (decision.action, decision.reason) == (Action.GIVE_UP, "retries exhausted")


@pytest.mark.parametrize("status", [400, 404, 405, 415, 422, 409])
def test_statuses_the_table_never_retries_are_returned_as_they_are(status):
    decision = after(status)
    assert (decision.action, decision.label) == (Action.RETURN, "returned")


def test_post_is_not_resent_after_a_500_unless_it_has_an_idempotency_key():
    refused = after(500, method="POST")
    assert refused.action is Action.RETURN
    assert refused.label.startswith("not retried: POST without an Idempotency-Key")
    assert after(500, method="POST", idempotency_key=True).action is Action.RETRY


def test_post_is_resent_after_a_429_and_after_a_503_with_retry_after():
    assert after(429, method="POST").action is Action.RETRY
    assert after(503, method="POST").action is Action.RETURN
    assert after(503, method="POST", retry_after=1).action is Action.RETRY


def test_a_body_that_cannot_be_rewound_is_never_resent():
    decision = after(429, replayable=False)
    assert decision.action is Action.RETURN
    assert "rewound" in decision.reason


def test_status_forcelist_picks_the_candidates():
    policy = rbe.BloxsRetry(total=3, status_forcelist=[409])
    assert after(409, retry=policy).action is Action.RETRY  # listed: idempotent only
    assert after(409, retry=policy, method="POST").action is Action.RETURN
    assert after(503, retry=policy).label == "returned"  # not listed


def test_a_403_quota_is_a_rate_limit_when_429_is_listed():
    decision = after(403, method="POST", retry_after=1.0)
    assert QUOTA_RULE.kind == "quota_exceeded"
    assert decision.action is Action.RETRY


def test_retry_after_is_ignored_when_the_policy_does_not_respect_it():
    policy = rbe.BloxsRetry(total=3, backoff_factor=0.25, respect_retry_after_header=False)
    decision = after(429, retry=policy, retry_after=30)
    assert (decision.action, decision.wait, decision.retry_after) == (Action.RETRY, 0.25, None)


def test_401_on_a_signed_request_re_authenticates_once():
    assert after(401, can_reauth=True).action is Action.REAUTH
    assert after(403, can_reauth=True).action is Action.REAUTH
    assert after(401, can_reauth=False).label == "returned"
    assert after(401, can_reauth=True, time_left=0.0).label == "returned"


def test_a_fresh_credential_refused_moments_ago_is_not_refreshed_again():
    decision = after(403, can_reauth=True, reauth_refused=True)
    assert decision.action is Action.RETURN
    assert "refused for this request" in decision.label


def test_a_403_quota_does_not_re_authenticate():
    assert after(403, can_reauth=True, retry_after=5).action is Action.RETRY


def test_a_request_that_never_reached_the_server_is_always_resent():
    decision = after(method="POST", failure=connection_refused())
    assert decision.action is Action.RETRY
    assert decision.retry.history[-1].error is not None


@pytest.mark.parametrize("failure", [read_timeout, reset])
def test_a_failure_after_sending_is_resent_only_when_idempotent(failure):
    assert after(method="GET", failure=failure()).action is Action.RETRY
    refused = after(method="POST", failure=failure())
    assert refused.action is Action.RETURN
    assert "may have reached the server" in refused.reason
    assert after(method="POST", failure=failure(), idempotency_key=True).action is Action.RETRY


def test_a_read_error_is_not_resent_when_the_policy_disables_read_retries():
    policy = rbe.BloxsRetry(total=3, read=False)
    decision = after(failure=read_timeout(), retry=policy)
    assert decision.action is Action.RETURN
    assert "retry policy does not retry ReadTimeoutError" in decision.reason


def test_decide_does_not_change_the_retry_it_was_given():
    before = (POLICY.total, POLICY.history)
    after(503)
    after(failure=reset())
    assert (POLICY.total, POLICY.history) == before


# -- failure_of: the transport table ----------------------------------------------


def test_failures_are_filed_under_the_transport_rules():
    assert connection_refused().rule.kind == "not_sent"
    assert read_timeout().rule.kind == "no_answer"
    assert reset().rule.kind == "no_answer"
    assert connection_refused().kind == "NewConnectionError"


def test_certificate_verification_is_permanent():
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    failure = failure_of(requests.exceptions.SSLError(MaxRetryError(None, "/", SSLError(verify))))
    assert failure.rule.kind == "permanent"
    handshake = SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert failure_of(requests.exceptions.SSLError(handshake)).rule.kind == "no_answer"


def test_a_proxy_that_refuses_the_tunnel_is_permanent_one_that_cannot_be_reached_is_not():
    refused = ProxyError(
        "Unable to connect to proxy",
        OSError("Tunnel connection failed: 407 Proxy Authentication Required"),
    )
    assert failure_of(requests.exceptions.ProxyError(refused)).rule.kind == "permanent"
    unreachable = ProxyError("Unable to connect to proxy", NewConnectionError(None, "refused"))
    assert failure_of(requests.exceptions.ProxyError(unreachable)).rule.kind == "not_sent"


def test_invalid_urls_and_unknown_errors_are_permanent():
    assert failure_of(requests.exceptions.InvalidURL("bad")).rule.kind == "permanent"
    assert failure_of(requests.exceptions.ConnectionError(ValueError("?"))).rule.kind == "permanent"


def test_the_exception_raised_is_requests_own():
    raised = requests.ReadTimeout(ReadTimeoutError(None, "/x", "read timed out"))
    assert failure_of(raised).exception is raised
