"""The retry policy: :class:`BloxsRetry`, a :class:`urllib3.util.Retry`.

urllib3 asks the policy two things per failed attempt: :meth:`~BloxsRetry.is_retry`
(is this status a candidate at all?) and :meth:`~BloxsRetry.increment` (given
the response or error, may we go again, and when?). ``increment`` is the one
place that sees every intermediate response, so every decision is made
there, from the error table:

* GET, HEAD, PUT, DELETE, OPTIONS are resent on 429, 500, 502, 503 and 504,
  and after connection and read errors;
* POST and PATCH only when the server refused them unprocessed (429, a 403
  quota, a 503 with a usable ``Retry-After``), unless the request carries an
  ``Idempotency-Key`` header, which makes them as safe as a GET;
* a request that never reached the server (connection refused, connect
  timeout) is always resent;
* a body that cannot be rewound (a generator) is never resent: urllib3 would
  send it empty;
* ``Retry-After`` (seconds, fractions, HTTP-date, ``retry-after-ms``) is the
  wait when given; a wait longer than ``max_retry_after``, or one that would
  cross the call's deadline, ends the retries and the response comes back;
* otherwise the wait is ``backoff_factor * 2 ** (n - 1)`` plus up to
  ``backoff_jitter`` seconds, capped at ``backoff_max``. Unlike urllib3's
  own formula, the first retry waits too.

``raise_on_status`` is always False: when retries end, the last response is
returned with its body, never a :class:`~requests.exceptions.RetryError`
without one. The policy object is immutable and shared. What one call needs
(its request, deadline and journal) is a per-call :class:`Call`: the adapter
makes it current for its thread while it sends (:func:`calling`), the shared
policy picks it up in :meth:`~BloxsRetry.increment`, and from then on the
policy objects of that call carry it. A call that never fails never builds a
policy object of its own.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection
from itertools import takewhile
from typing import TYPE_CHECKING, Any

from requests import PreparedRequest
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

from .classify import BODY_CAP
from .events import Attempt, GiveUpEvent, Hooks, RetryEvent
from .parsing import retry_after_from_headers
from .table import (
    DEFAULT_RETRY_STATUSES,
    IDEMPOTENT_METHODS,
    QUOTA_RULE,
    Retryable,
    Rule,
    retry_allowed,
    rule_for,
)
from .urls import redact_url

if TYPE_CHECKING:
    from types import TracebackType

    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRIES",
    "BloxsRetry",
    "Call",
    "ResignFailed",
    "body_is_replayable",
    "calling",
]

#: Retries per call when ``max_retries`` is not given.
DEFAULT_RETRIES = 3
#: Seconds of the first back-off; each further retry doubles it.
DEFAULT_BACKOFF_FACTOR = 0.5
#: The longest back-off, in seconds.
DEFAULT_BACKOFF_MAX = 30.0
#: The longest ``Retry-After`` the adapter sleeps on, in seconds.
DEFAULT_MAX_RETRY_AFTER = 60.0

_CHUNK = 16 * 1024


def body_is_replayable(body: object) -> bool:
    """Tell whether ``body`` can be sent again: bytes, text, or a seekable file."""
    if body is None or isinstance(body, (bytes, str, bytearray, memoryview)):
        return True
    if not (hasattr(body, "seek") and hasattr(body, "tell")):
        return False  # a generator or iterator: consumed by the first attempt
    try:
        body.tell()
        seekable = getattr(body, "seekable", None)
        return bool(seekable()) if callable(seekable) else True
    except (OSError, ValueError):
        return False


class Call:
    """One adapter call: what the policy needs to know about its request.

    Shared by every :class:`BloxsRetry` of that call (and of its
    re-authenticated resend), it holds the request, the deadline, and the
    journal of attempts.
    """

    __slots__ = ("_url", "deadline", "hooks", "journal", "outcome", "request", "resign")

    def __init__(self, request: PreparedRequest, deadline: float | None, hooks: Hooks) -> None:
        self.request = request
        #: ``time.monotonic()`` value after which nothing new starts, or None.
        self.deadline = deadline
        self.hooks = hooks
        self.journal: list[Attempt] = []
        #: ``(decision, gave_up)`` set when the policy stopped retrying, else None.
        self.outcome: tuple[str, bool] | None = None
        #: Re-signs the request between attempts (a fresh timestamp or token), or None.
        self.resign: Callable[[], None] | None = None
        self._url: str | None = None

    @property
    def method(self) -> str:
        """The request method, upper case."""
        return (self.request.method or "GET").upper()

    @property
    def url(self) -> str:
        """The request URL, redacted (no query string, no credentials)."""
        if self._url is None:
            self._url = redact_url(self.request.url)
        return self._url

    @property
    def has_idempotency_key(self) -> bool:
        """Whether the request carries an ``Idempotency-Key`` header."""
        return "Idempotency-Key" in self.request.headers

    @property
    def replayable(self) -> bool:
        """Whether the request's body can be sent again."""
        return body_is_replayable(self.request.body)

    def record(self, status: int | None, kind: str, wait: float, decision: str) -> Attempt:
        """Add one attempt to the journal and return it."""
        attempt = Attempt(len(self.journal) + 1, status, kind, wait, decision)
        self.journal.append(attempt)
        return attempt

    def stop(self, decision: str, *, gave_up: bool) -> None:
        """Note why the policy did not retry the last attempt."""
        self.outcome = (decision, gave_up)

    def finish(
        self,
        status: int | None,
        kind: str,
        default: str,
        *,
        retry_after: float | None = None,
        trace_id: str | None = None,
    ) -> tuple[Attempt, ...]:
        """Record the call's last attempt and announce a give-up; return the history.

        :param default: the decision when the policy made none (it did not stop).
        """
        decision, gave_up = self.outcome or (default, False)
        self.record(status, kind, 0.0, decision)
        history = tuple(self.journal)
        if gave_up:
            self.hooks.give_up(
                GiveUpEvent(
                    method=self.method,
                    url=self.url,
                    status=status,
                    kind=kind,
                    reason=decision.removeprefix("gave up: "),
                    retry_after=retry_after,
                    trace_id=trace_id,
                    history=history,
                )
            )
        return history


class _Current(threading.local):
    call: Call | None = None


_current = _Current()


def calling(call: Call | None) -> Call | None:
    """Make ``call`` this thread's current call; return the one it replaces.

    The adapter sets its call before handing the request to urllib3 and puts
    the previous one back afterwards (a hook may send from inside a call).
    """
    previous = _current.call
    _current.call = call
    return previous


class ResignFailed(Exception):
    """Carries an exception raised while re-signing between attempts out of urllib3."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class BloxsRetry(Retry):
    """urllib3's :class:`~urllib3.util.Retry` with the error table's rules.

    Counts (``total``, ``connect``, ``read``, ``status``), ``backoff_factor``
    and ``status_forcelist`` mean what they mean in urllib3.
    ``allowed_methods`` is ignored and ``raise_on_status`` is always False:
    method safety comes from the table, and the last response is never lost.

    Usage::

        >>> policy = rbe.BloxsRetry(total=5, backoff_factor=1.0, max_retry_after=120)
        >>> rbe.mount(session, "https://acme.bloxs.io/", max_retries=policy)

    :param total: retries in all, as in urllib3.
    :param max_retry_after: the longest ``Retry-After`` to sleep on, in
        seconds; a longer one ends the retries at once and the response is
        returned. None means no limit.
    :param backoff_max: the longest back-off, in seconds.
    :param backoff_jitter: up to this many random seconds added to each back-off.
    :param call: the per-call context; set by the adapter, None otherwise.
    """

    def __init__(
        self,
        total: bool | int | None = DEFAULT_RETRIES,
        *,
        max_retry_after: float | None = DEFAULT_MAX_RETRY_AFTER,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        backoff_jitter: float = 0.0,
        call: Call | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["raise_on_status"] = False
        kwargs["allowed_methods"] = None
        kwargs.setdefault("status_forcelist", DEFAULT_RETRY_STATUSES)
        super().__init__(total, **kwargs)
        self.backoff_max = backoff_max  # urllib3 1.26 has neither argument
        self.backoff_jitter = backoff_jitter
        self.max_retry_after = max_retry_after
        self.call = call
        #: ``time.monotonic()`` at which the next attempt may start; set by increment().
        self.resume_at: float | None = None

    def new(self, **kw: Any) -> BloxsRetry:
        """Copy this policy with some fields changed; keeps this class's own fields."""
        kw.setdefault("max_retry_after", self.max_retry_after)
        kw.setdefault("backoff_max", self.backoff_max)
        kw.setdefault("backoff_jitter", self.backoff_jitter)
        kw.setdefault("call", self.call)
        return super().new(**kw)

    @classmethod
    def from_retry(cls, retry: Retry, **overrides: Any) -> BloxsRetry:
        """Adopt a plain urllib3 ``Retry``: its counts, back-off and forcelist win.

        A ``status_forcelist`` of None becomes the table's retryable statuses.
        """
        params: dict[str, Any] = {
            name: getattr(retry, name)
            for name in (
                "total",
                "connect",
                "read",
                "redirect",
                "status",
                "other",
                "backoff_factor",
                "raise_on_redirect",
                "respect_retry_after_header",
                "remove_headers_on_redirect",
            )
        }
        params["status_forcelist"] = retry.status_forcelist or DEFAULT_RETRY_STATUSES
        params["backoff_max"] = getattr(retry, "backoff_max", Retry.DEFAULT_BACKOFF_MAX)
        params["backoff_jitter"] = getattr(retry, "backoff_jitter", 0.0)
        if isinstance(retry, BloxsRetry):
            params["max_retry_after"] = retry.max_retry_after
        params.update(overrides)
        return cls(**params)

    # -- what urllib3 asks --------------------------------------------------

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        """Is ``status_code`` a candidate? The final word is :meth:`increment`'s."""
        return self.retry_rule(rule_for(status_code, has_retry_after), status_code) is not None

    def retry_rule(self, rule: Rule | None, status: int) -> Retryable | None:
        """When a response with this ``rule`` may be retried; None if never.

        ``status_forcelist`` picks the candidates. A listed status that the
        table would never retry (say 409) is retried for idempotent requests
        only, since the user asked for it; a 403 quota is retried whenever
        429 is listed.
        """
        forcelist: Collection[int] = self.status_forcelist or ()
        if rule is QUOTA_RULE:
            return rule.retry if 429 in forcelist or 403 in forcelist else None
        if rule is None or status not in forcelist:
            return None
        return Retryable.IDEMPOTENT if rule.retry is Retryable.NEVER else rule.retry

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        """The server's requested wait in seconds; unusable values give None, never an error."""
        return retry_after_from_headers(response.headers)

    def get_backoff_time(self) -> float:
        """``backoff_factor * 2 ** (n - 1)`` plus jitter, capped; n counts consecutive failures."""
        failures = len(
            list(takewhile(lambda h: h.redirect_location is None, reversed(self.history)))
        )
        if failures == 0 or self.backoff_factor <= 0:
            return 0.0
        value = self.backoff_factor * 2.0 ** min(failures - 1, 62)
        if self.backoff_jitter:
            value += random.random() * self.backoff_jitter
        return float(max(0.0, min(self.backoff_max, value)))

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Sleep until the time :meth:`increment` chose, then re-sign the request.

        Re-signing after the wait keeps a timestamped signature (or a token
        that expired during a long ``Retry-After``) fresh for the next attempt.
        """
        if self.resume_at is None:
            super().sleep(response)
        else:
            delay = self.resume_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        call = self.call
        if call is not None and call.resign is not None:
            try:
                call.resign()
            except Exception as exc:
                # requests would wrap an OSError (RequestException is one) into
                # ConnectionError; carry the credential's own error past it
                raise ResignFailed(exc) from exc

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> BloxsRetry:
        """Decide about one failed attempt; return the policy for the next one.

        :raises MaxRetryError: to stop. For a response, urllib3 then returns
            it to the caller (``raise_on_status`` is False).
        :raises Exception: ``error`` itself when resending is unsafe.
        """
        call = self.call if self.call is not None else _current.call
        status: int | None = None
        retry_after: float | None = None
        if error is not None:
            kind = type(error).__name__
            refusal = self._refuse_error(call, method, error)
            if refusal is not None:
                if call is not None:
                    call.stop(f"not retried: {refusal}", gave_up=False)
                raise error.with_traceback(_stacktrace)
        else:
            status = response.status if response is not None else None
            if response is not None:
                retry_after = self.get_retry_after(response)
            rule = rule_for(status or 0, retry_after is not None)
            kind = rule.kind if rule is not None else str(status)
            refusal = self._refuse_response(call, method, rule, status, retry_after)
            if refusal is not None:
                if call is not None:
                    call.stop(f"not retried: {refusal}", gave_up=False)
                raise MaxRetryError(_pool, url or "", ResponseError(refusal))  # type: ignore[arg-type]
            if not self.respect_retry_after_header:
                retry_after = None

        try:
            new = super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError:
            if call is not None:
                call.stop("gave up: retries exhausted", gave_up=True)
            raise
        assert isinstance(new, BloxsRetry)
        new.call = call  # private until returned: the shared policy had none

        wait = retry_after if retry_after is not None else new.get_backoff_time()
        now = time.monotonic()
        stop = None
        if (
            retry_after is not None
            and self.max_retry_after is not None
            and retry_after > self.max_retry_after
        ):
            stop = (
                f"gave up: the server asked to wait {retry_after:g}s, "
                f"longer than max_retry_after ({self.max_retry_after:g}s)"
            )
        elif call is not None and call.deadline is not None and now + wait >= call.deadline:
            stop = f"gave up: waiting {wait:.2f}s would cross the deadline"
        if stop is not None:
            if call is not None:
                call.stop(stop, gave_up=True)
            reason = error or ResponseError(stop)
            raise MaxRetryError(_pool, url or "", reason) from reason  # type: ignore[arg-type]

        new.resume_at = now + wait
        if response is not None:
            _read_bounded(response)
        if call is not None:
            attempt = call.record(status, kind, wait, "retry")
            call.hooks.retry(
                RetryEvent(
                    method=call.method,
                    url=call.url,
                    attempt=attempt.number,
                    max_attempts=_max_attempts(new, attempt.number, error),
                    status=status,
                    kind=kind,
                    wait=wait,
                    retry_after=retry_after,
                )
            )
        return new

    # -- the rules ------------------------------------------------------------

    def _refuse_error(self, call: Call | None, method: str | None, error: Exception) -> str | None:
        """Why a transport error must not be retried, or None if it may."""
        if self._is_connection_error(error):
            return None  # the request never reached the server
        if call is not None and not call.replayable:
            return "the request body cannot be rewound, so it cannot be sent again"
        safe = (method or "").upper() in IDEMPOTENT_METHODS or (
            call is not None and call.has_idempotency_key
        )
        if not safe:
            return f"{method} without an Idempotency-Key may have reached the server"
        return None

    def _refuse_response(
        self,
        call: Call | None,
        method: str | None,
        rule: Rule | None,
        status: int | None,
        retry_after: float | None,
    ) -> str | None:
        """Why an error response must not be retried, or None if it may."""
        retry = self.retry_rule(rule, status or 0)
        if retry is None:
            return f"{status} is not retryable"
        if call is not None and not call.replayable:
            return "the request body cannot be rewound; urllib3 would resend it empty"
        key = call is not None and call.has_idempotency_key
        if not retry_allowed(retry, method, key, retry_after):
            return (
                f"{method} without an Idempotency-Key may have been processed; "
                f"{status} is not retried"
            )
        return None


def _max_attempts(policy: Retry, attempt: int, error: Exception | None) -> int | None:
    """How many attempts the call may make in all, as far as the counters tell."""
    if error is None:
        counters = (policy.total, policy.status)
    elif policy._is_connection_error(error):
        counters = (policy.total, policy.connect)
    else:
        counters = (policy.total, policy.read)
    left = [c for c in counters if isinstance(c, int) and not isinstance(c, bool)]
    return attempt + 1 + min(left) if left else None


def _read_bounded(response: BaseHTTPResponse) -> None:
    """Read an intermediate error body so its connection can be reused.

    urllib3 drains intermediate responses completely; an error body of
    100 MiB would be downloaded only to be thrown away. Past the cap the
    connection is closed instead, and urllib3's drain finds nothing left.
    """
    try:
        seen = 0
        while True:
            chunk = response.read(_CHUNK, decode_content=False)
            if not chunk:
                return
            seen += len(chunk)
            if seen > BODY_CAP:
                break
    except Exception:
        pass
    response.close()
