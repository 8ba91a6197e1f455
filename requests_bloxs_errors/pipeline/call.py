"""One call through the adapter: :class:`Call`, passed explicitly through the loop.

A call is everything the adapter's attempt loop knows about one
``send()``: the caller's request, the deadline, the ``Retry`` value so far,
whether the request is signed and was re-authenticated, the responses a
re-authentication superseded, and the journal of attempts. It belongs to
that ``send()`` alone: nothing about it is shared with other calls or
threads, and hooks that send requests of their own start calls of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..clock import SYSTEM, Clock
from ..errors.classify import ErrorInfo
from ..errors.table import is_read
from ..events import Attempt, GiveUpEvent, Hooks, RetryEvent
from ..urls import host_of, redact_url
from .failures import Failure
from .policy import Context, Decision
from .retry import body_is_replayable

if TYPE_CHECKING:
    from requests import PreparedRequest, Response
    from urllib3.util.retry import Retry

    from ..errors.table import Rule
    from ..exceptions import BloxsError
    from .steps import Pipeline

__all__ = ["Call"]

_Error = TypeVar("_Error", bound="BloxsError")


class Call:
    """The state of one ``send()``; see the module docstring.

    :param request: the caller's request (never modified).
    :param retry: the adapter's policy; replaced by ``increment()`` results.
    :param deadline: ``clock.monotonic()`` value by which the call ends, or None.
    :param hooks: the adapter's hooks.
    :param signed: whether the request lies under the prefix and gets credentials.
    :param max_retry_after: the longest ``Retry-After`` to wait for, or None.
    :param pipeline: the steps this call runs (a
        :class:`~requests_bloxs_errors.pipeline.steps.Pipeline`).
    :param timeout: the caller's ``timeout`` (None, seconds, a pair, a urllib3 ``Timeout``).
    :param for_credential: the request is sent from inside a credential's fetch.
    :param clock: where time comes from; ``deadline`` is a ``clock.monotonic()`` value.
    """

    # Defaults live on the class: a call that goes through at once sets only what
    # its constructor is given (a call is made for every request sent).
    #: The caller's ``timeout`` for each attempt, as requests takes it.
    timeout: Any = None
    #: Sent from inside a credential's own fetch (a token request): it carries a
    #: secret, so nothing keeps it for later.
    for_credential = False
    #: Seconds the next attempt waited for rate-limit permits (reset per attempt).
    paced = 0.0
    #: The outbox entry that keeps this call's request, once one was queued.
    outbox_id: int | None = None
    #: The attempts made so far (:class:`~requests_bloxs_errors.Attempt`).
    journal: Sequence[Attempt] = ()
    #: The request was re-authenticated and resent.
    reauthed = False
    #: A fresh credential was refused for this request moments ago (no refresh).
    fresh_refused = False
    #: Responses a re-authentication replaced; they go into ``response.history``.
    superseded: Sequence[Response] = ()
    #: The body's position before the first attempt (files are rewound to it).
    body_position: int | None = None
    #: An attempt is being sent: set just before the transport is asked, cleared when
    #: it answered or failed. An exception that leaves the loop while it is set may
    #: have reached the server; one that leaves it otherwise was never sent.
    in_flight = False
    #: The steps have heard how the call ends (``on_outcome`` or ``on_refused`` ran).
    ended = False
    #: Why a step refused to send the call, in words (see :meth:`not_sent`).
    refusal_reason: str | None = None
    _state: dict[Any, Any] | None = None
    _url: str | None = None
    _host: str | None = None

    def __init__(
        self,
        request: PreparedRequest,
        *,
        retry: Retry,
        deadline: float | None,
        hooks: Hooks,
        signed: bool,
        max_retry_after: float | None,
        pipeline: Pipeline | None = None,
        timeout: Any = None,
        for_credential: bool = False,
        clock: Clock = SYSTEM,
    ) -> None:
        self.request = request
        self.retry = retry
        self.deadline = deadline
        self.hooks = hooks
        self.signed = signed
        self.max_retry_after = max_retry_after
        self.pipeline = pipeline
        self.clock = clock
        if timeout is not None:
            self.timeout = timeout
        if for_credential:
            self.for_credential = True
        body = request.body
        if body is not None and not isinstance(body, (bytes, str)):
            self.body_position = _body_position(body)

    @property
    def state(self) -> dict[Any, Any]:
        """Per-call data of any step, keyed by the step (or a name of its own)."""
        if self._state is None:
            self._state = {}
        return self._state

    def take(self, key: Any) -> Any:
        """Remove ``key``'s per-call data and return it (None when there is none)."""
        return None if self._state is None else self._state.pop(key, None)

    # what only a failed attempt needs to know is worked out when one fails

    @property
    def method(self) -> str:
        """The request method, upper case."""
        return (self.request.method or "GET").upper()

    @property
    def replayable(self) -> bool:
        """Whether the request's body can be sent again."""
        return body_is_replayable(self.request.body)

    @property
    def key(self) -> bool:
        """Whether the request carries an ``Idempotency-Key`` header."""
        return "Idempotency-Key" in self.request.headers

    @property
    def read(self) -> bool:
        """Whether the request only reads (a safe method, or a Bloxs filter POST)."""
        return is_read(self.method, self.request.url)

    @property
    def host(self) -> str:
        """``scheme://host:port`` of the request (a circuit's name)."""
        if self._host is None:
            self._host = host_of(self.request.url or "")
        return self._host

    @property
    def url(self) -> str:
        """The request URL, redacted (no query string, no credentials)."""
        if self._url is None:
            self._url = redact_url(self.request.url)
        return self._url

    def longest(self) -> float | None:
        """The longest this call can take from now, as far as its deadline, or else its
        timeout, retries and waits tell; None when nothing bounds it."""
        left = self.time_left()
        if left is not None:
            return left
        per_attempt = self.attempt_seconds()
        if per_attempt is None:
            return None
        total = self.retry.total
        retries = total if isinstance(total, int) and not isinstance(total, bool) else 0
        waits = max(getattr(self.retry, "backoff_max", 0.0), self.max_retry_after or 0.0)
        return per_attempt * (retries + 1) + waits * retries

    def attempt_seconds(self) -> float | None:
        """The longest one attempt's timeout allows (connect plus read), or None."""
        return _attempt_seconds(self.timeout)

    def time_left(self) -> float | None:
        """Seconds until the deadline (0 once passed), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock.monotonic())

    def context(
        self,
        *,
        status: int | None = None,
        rule: Rule | None = None,
        retry_after: float | None = None,
        response: Any = None,
        failure: Failure | None = None,
        hold: float | None = None,
        max_hold: float | None = None,
    ) -> Context:
        """The read-only view :func:`~requests_bloxs_errors.pipeline.policy.decide` gets."""
        return Context(
            method=self.method,
            url=self.url,
            retry=self.retry,
            idempotency_key=self.key,
            read=self.read,
            replayable=self.replayable,
            status=status,
            rule=rule,
            retry_after=retry_after,
            response=response,
            failure=failure,
            can_reauth=self.signed and not self.reauthed and self.replayable,
            reauth_refused=self.fresh_refused,
            max_retry_after=self.max_retry_after,
            time_left=self.time_left(),
            hold=hold,
            max_hold=max_hold,
        )

    def not_sent(
        self,
        error: type[_Error],
        *,
        status: int,
        kind: str,
        reason: str,
        action: str,
        wait: float,
    ) -> _Error:
        """The typed error for this call when a step refuses to send it.

        :param error: the exception class, such as ``CircuitOpenError``.
        :param status: the status the refusal stands for (429, 503).
        :param reason: why, after "METHOD URL was not sent: ".
        :param wait: seconds until sending may succeed (``retry_after``).
        :return: the error, ``response`` None, with the attempts made so far.
        """
        message = f"{self.method} {self.url} was not sent: {reason}"
        self.refusal_reason = reason
        info = ErrorInfo(
            status=status,
            kind=kind,
            retryable=True,
            reauth=False,
            action=action,
            message=message,
            retry_after=wait,
        )
        return error(message, response=None, info=info, history=tuple(self.journal))

    def refused(self, refusal: BaseException) -> None:
        """Announce that a step refused to send the call (no permit in time): a give-up,
        logged at ERROR and passed to the ``on_give_up`` hooks. An open circuit's
        refusals are not: its alert announces the outage once, not once per call."""
        if getattr(refusal, "kind", None) == "circuit_open":
            return
        reason = self.refusal_reason or str(refusal)
        self.hooks.give_up(
            GiveUpEvent(
                method=self.method,
                url=self.url,
                status=getattr(refusal, "status_code", None),
                kind=getattr(refusal, "kind", None) or type(refusal).__name__,
                reason=f"not sent: {reason}",
                retry_after=getattr(refusal, "retry_after", None),
                trace_id=getattr(refusal, "trace_id", None),
                history=tuple(self.journal),
                sent=False,
            )
        )

    def rewind(self) -> None:
        """Put a file body back where it started, before a resend."""
        if self.body_position is not None:
            self.request.body.seek(self.body_position)  # type: ignore[union-attr]

    def record(
        self, status: int | None, kind: str, wait: float, decision: str, wait_reason: str = ""
    ) -> Attempt:
        """Add one attempt to the journal and return it."""
        journal = self.journal
        attempt = Attempt(len(journal) + 1, status, kind, wait, decision, self.paced, wait_reason)
        if isinstance(journal, list):
            journal.append(attempt)
        else:  # the first: the class's empty default gives way to a list of its own
            self.journal = [attempt]
        self.paced = 0.0
        return attempt

    def supersede(self, response: Response) -> None:
        """Keep ``response``, which a re-authentication replaced, for ``response.history``."""
        self.superseded = [*self.superseded, response]

    def retrying(
        self,
        decision: Decision,
        status: int | None,
        kind: str,
        failure: Failure | None,
        trace_id: str | None = None,
    ) -> None:
        """Record a retry and announce it; the caller then waits ``decision.wait``."""
        assert decision.retry is not None
        self.retry = decision.retry
        attempt = self.record(status, kind, decision.wait, decision.label, decision.wait_reason)
        self.hooks.retry(
            RetryEvent(
                method=self.method,
                url=self.url,
                attempt=attempt.number,
                max_attempts=_max_attempts(decision.retry, attempt.number, failure),
                status=status,
                kind=kind,
                wait=decision.wait,
                retry_after=decision.retry_after,
                trace_id=trace_id,
            )
        )

    def finish(
        self,
        decision: Decision,
        status: int | None,
        kind: str,
        *,
        retry_after: float | None = None,
        trace_id: str | None = None,
    ) -> tuple[Attempt, ...]:
        """Record the call's last attempt and announce a give-up; return the history."""
        self.record(status, kind, 0.0, decision.label)
        history = tuple(self.journal)
        if decision.gave_up:
            self.hooks.give_up(
                GiveUpEvent(
                    method=self.method,
                    url=self.url,
                    status=status,
                    kind=kind,
                    reason=decision.reason,
                    retry_after=retry_after,
                    trace_id=trace_id,
                    history=history,
                )
            )
        return history


def _max_attempts(policy: Retry, attempt: int, failure: Failure | None) -> int | None:
    """How many attempts the call may make in all, as far as the counters tell."""
    if failure is None:
        counters = (policy.total, policy.status)
    elif failure.rule.kind == "not_sent":
        counters = (policy.total, policy.connect)
    else:
        counters = (policy.total, policy.read)
    left = [c for c in counters if isinstance(c, int) and not isinstance(c, bool)]
    return attempt + 1 + min(left) if left else None


def _attempt_seconds(timeout: Any) -> float | None:
    """The longest one attempt takes under ``timeout`` (connect plus read), or None."""
    if timeout is None:
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return 2.0 * timeout
    if isinstance(timeout, tuple) and len(timeout) == 2:
        parts: list[Any] = list(timeout)
    elif hasattr(timeout, "connect_timeout") and hasattr(timeout, "total"):  # urllib3 Timeout
        if isinstance(timeout.total, (int, float)):
            return float(timeout.total)
        parts = [getattr(timeout, "_connect", None), getattr(timeout, "_read", None)]
    else:
        parts = [timeout, timeout]
    if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
        return float(sum(parts))
    return None


def _body_position(body: object) -> int | None:
    tell = getattr(body, "tell", None)
    if tell is None:
        return None
    try:
        position = tell()
    except (OSError, ValueError):
        return None
    return position if isinstance(position, int) else None
