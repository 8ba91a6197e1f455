"""The retry decision, as a value: :func:`decide` and :class:`Decision`.

After every attempt the adapter builds a read-only :class:`Context` (what
came back, what the request is, what the call has left) and asks
:func:`decide` what to do. The answer is one of four actions, with a reason
and a wait. Nothing here sends, sleeps, logs or reads a clock: the adapter
performs what was decided, and the function is tested as a value.

The rules, all from the error table:

* 401/403 on a signed request that may be resent: re-authenticate once;
* a status the policy's ``status_forcelist`` lists is a candidate; the
  table's row says for which requests (:class:`~requests_bloxs_errors.Retryable`);
* a transport failure is a candidate by its row of
  :data:`~requests_bloxs_errors.errors.table.TRANSPORT_RULES`;
* a body that cannot be rewound is never sent again;
* the urllib3 ``Retry`` value counts the attempts (its ``increment()``);
* the wait is the server's ``Retry-After`` when it gave one, else the
  policy's back-off; a wait over ``max_retry_after``, or one that would
  cross the deadline, ends the call.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from ..errors.table import QUOTA_RULE, Retryable, Rule, retry_allowed

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

    from .failures import Failure

__all__ = ["Action", "Context", "Decision", "candidate", "decide"]


class Action(enum.Enum):
    """What the adapter does after an attempt."""

    #: Wait :attr:`Decision.wait` seconds and send again.
    RETRY = "retry"
    #: Refresh the credentials and send again at once (once per call).
    REAUTH = "reauth"
    #: The outcome is final: return the response, or raise the failure.
    RETURN = "return"
    #: A retryable outcome the call cannot wait for: return or raise it, and say so.
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Decision:
    """What to do after one attempt.

    :ivar action: the :class:`Action`.
    :ivar reason: why, in words (empty for a plain retry, re-auth or return).
    :ivar wait: seconds to wait before the next attempt (RETRY only).
    :ivar retry: the ``Retry`` value for the next attempt (RETRY only).
    :ivar retry_after: the server's ``Retry-After`` that set :attr:`wait`, or None
        when the wait is the policy's back-off.
    :ivar wait_reason: what set :attr:`wait` (RETRY only): ``"retry_after"``,
        ``"backoff"`` or ``"rate_limit"`` (the client-side limit held the request longer).
    """

    action: Action
    reason: str = ""
    wait: float = 0.0
    retry: Retry | None = None
    retry_after: float | None = None
    wait_reason: str = ""

    @property
    def label(self) -> str:
        """The decision as the attempt journal writes it (``Attempt.decision``)."""
        if self.action is Action.RETRY:
            return "retry"
        if self.action is Action.REAUTH:
            return "reauth"
        if self.action is Action.GIVE_UP:
            return f"gave up: {self.reason}"
        return f"not retried: {self.reason}" if self.reason else "returned"

    @property
    def gave_up(self) -> bool:
        """True when a retryable outcome was not retried (the give-up hooks fire): the
        call could not wait for it, or a reason forbade it (a POST without an
        ``Idempotency-Key`` that may have been processed, a body that cannot be
        rewound, a fresh credential refused moments ago)."""
        return self.action is Action.GIVE_UP or (self.action is Action.RETURN and bool(self.reason))


@dataclass(frozen=True)
class Context:
    """What :func:`decide` knows about an attempt; built by the adapter.

    :ivar method: the request method, upper case.
    :ivar url: the request URL, redacted (for the ``Retry`` history).
    :ivar retry: the call's ``Retry`` value before this attempt is counted.
    :ivar idempotency_key: the request carries ``Idempotency-Key``.
    :ivar read: the request only reads, whatever its method (a Bloxs filter POST).
    :ivar replayable: its body can be sent again.
    :ivar status: the response status, or None when no response came.
    :ivar rule: the table row of ``status``.
    :ivar retry_after: the server's usable wait, in seconds, or None.
    :ivar response: the urllib3 response, for ``Retry.increment()``.
    :ivar failure: the transport failure, when no response came.
    :ivar can_reauth: the request was signed and not yet re-authenticated.
    :ivar reauth_refused: a fresh credential was already refused for this
        request moments ago, so refreshing again would not help.
    :ivar max_retry_after: the longest ``Retry-After`` to wait for, or None.
    :ivar time_left: seconds until the call's deadline, or None.
    :ivar hold: seconds the client-side rate limit now holds the request's
        category (a pause learned from this response), or None.
    :ivar max_hold: the longest hold to wait for (the limit's ``max_wait``).
    :ivar backoff: the back-off to wait, given the next ``Retry`` value; the
        adapter passes the policy's own (``Retry.get_backoff_time``).
    """

    method: str
    url: str
    retry: Retry
    idempotency_key: bool = False
    read: bool = False
    replayable: bool = True
    status: int | None = None
    rule: Rule | None = None
    retry_after: float | None = None
    response: BaseHTTPResponse | None = None
    failure: Failure | None = None
    can_reauth: bool = False
    reauth_refused: bool = False
    max_retry_after: float | None = None
    time_left: float | None = None
    hold: float | None = None
    max_hold: float | None = None

    @property
    def safe(self) -> bool:
        """Resending cannot do harm beyond the method's own: an ``Idempotency-Key``,
        or a read."""
        return self.idempotency_key or self.read


def candidate(retry: Retry, rule: Rule | None, status: int) -> Retryable | None:
    """When a response with this table ``rule`` may be retried under ``retry``; None if never.

    ``status_forcelist`` picks the candidates. A listed status that the table
    would never retry (say 409) is retried for idempotent requests only,
    since the user asked for it; a 403 quota is retried whenever 429 or 403
    is listed.
    """
    forcelist: Collection[int] = retry.status_forcelist or ()
    if rule is QUOTA_RULE:
        return rule.retry if 429 in forcelist or 403 in forcelist else None
    if rule is None or status not in forcelist:
        return None
    return Retryable.IDEMPOTENT if rule.retry is Retryable.NEVER else rule.retry


def decide(context: Context) -> Decision:
    """Decide what follows an attempt; see the module's rules."""
    if context.failure is not None:
        refusal = _refuse_failure(context, context.failure)
    else:
        rule = context.rule
        if rule is not None and rule.reauth and context.can_reauth:
            if context.reauth_refused:
                return Decision(
                    Action.RETURN,
                    "a fresh credential was refused for this request moments ago, "
                    "so it was not refreshed again",
                )
            if context.time_left is None or context.time_left > 0:
                return Decision(Action.REAUTH)
        refusal = _refuse_response(context)
    if refusal is not None:
        return Decision(Action.RETURN, refusal)
    error = context.failure.error if context.failure is not None else None
    if not isinstance(error, Exception):  # (an interrupted call is never decided)
        error = None
    retry = context.retry
    if (context.idempotency_key or context.read) and retry.allowed_methods is not None:
        # the table said yes: an Idempotency-Key (or a read, such as a Bloxs filter
        # POST) makes the method safe to resend, and urllib3 must count the read
        # error rather than refuse the method
        retry = retry.new(allowed_methods=None)
    try:
        new = retry.increment(context.method, context.url, response=context.response, error=error)
    except MaxRetryError:
        return Decision(Action.GIVE_UP, "retries exhausted")
    except Exception:  # the policy re-raises an error it is told never to retry
        kind = context.failure.kind if context.failure is not None else str(context.status)
        return Decision(Action.RETURN, f"the retry policy does not retry {kind}")
    retry_after = context.retry_after if context.retry.respect_retry_after_header else None
    max_wait = context.max_retry_after
    if retry_after is not None and max_wait is not None and retry_after > max_wait:
        return Decision(
            Action.GIVE_UP,
            f"the server asked to wait {retry_after:g}s, longer than max_retry_after "
            f"({max_wait:g}s)",
        )
    wait = retry_after if retry_after is not None else new.get_backoff_time()
    why = "retry_after" if retry_after is not None else "backoff"
    if context.hold is not None and context.hold > wait:
        if context.max_hold is not None and context.hold > context.max_hold:
            return Decision(
                Action.GIVE_UP,
                f"the rate limit holds this request for {context.hold:.2f}s, longer than "
                f"max_wait ({context.max_hold:g}s)",
            )
        wait, why = context.hold, "rate_limit"
    if context.time_left is not None and wait >= context.time_left:
        return Decision(Action.GIVE_UP, f"waiting {wait:.2f}s would cross the deadline")
    return Decision(Action.RETRY, wait=wait, retry=new, retry_after=retry_after, wait_reason=why)


def _refuse_failure(context: Context, failure: Failure) -> str | None:
    """Why a request that got no response must not be sent again, or None."""
    retry = failure.rule.retry
    if retry is Retryable.NEVER:
        return ""  # deterministic: not a candidate at all
    if retry is Retryable.ALWAYS:
        return None  # the request never reached the server
    if not context.replayable:
        return "the request body cannot be rewound, so it cannot be sent again"
    if not retry_allowed(retry, context.method, context.safe, None):
        return f"{context.method} without an Idempotency-Key may have reached the server"
    return None


def _refuse_response(context: Context) -> str | None:
    """Why an error response must not be retried, or None if it may."""
    status = context.status or 0
    retry = candidate(context.retry, context.rule, status)
    if retry is None or retry is Retryable.NEVER:
        return ""  # not a candidate: returned as it is
    if not context.replayable:
        return "the request body cannot be rewound; it cannot be sent again"
    if not retry_allowed(retry, context.method, context.safe, context.retry_after):
        return (
            f"{context.method} without an Idempotency-Key may have been processed; "
            f"{status} is not retried"
        )
    return None
