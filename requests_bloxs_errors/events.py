"""What the adapter tells the world: attempt records, events, hooks and logs.

Logging is one consumer of the events, not code spread through the adapter:
each event is logged on the ``requests_bloxs_errors`` logger (WARNING per
retry, INFO per re-authentication, ERROR when giving up), then passed to the
user's hooks. Events hold redacted URLs only (no query string, no
credentials), never a header value, a token or a body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "AlertEvent",
    "Attempt",
    "GiveUpEvent",
    "Hook",
    "Hooks",
    "ReauthEvent",
    "RetryEvent",
    "logger",
]

#: The library's logger. It has a NullHandler: configure logging to see it.
logger = logging.getLogger("requests_bloxs_errors")
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Attempt:
    """One request sent by the adapter.

    :ivar number: 1 for the first request of a call, then 2, 3, ...
    :ivar status: the HTTP status, or None when no response came.
    :ivar kind: the table's kind (``"rate_limited"``), ``"ok"`` below 400,
        or the transport error's name (``"ReadTimeoutError"``).
    :ivar wait: seconds slept after this attempt before the next one.
    :ivar decision: ``"retry"``, ``"reauth"``, ``"returned"``,
        ``"not retried: ..."`` or ``"gave up: ..."``.
    :ivar paced: seconds this attempt waited for a client-side rate-limit
        permit before it was sent (0 without a ``rate_limit``).
    :ivar wait_reason: what set :attr:`wait`: ``"retry_after"`` (the server's
        ``Retry-After``), ``"backoff"`` (the policy's back-off) or
        ``"rate_limit"`` (the client-side limit held the request); ``""``
        when there was no wait.
    """

    number: int
    status: int | None
    kind: str
    wait: float
    decision: str
    paced: float = 0.0
    wait_reason: str = ""


@dataclass(frozen=True)
class RetryEvent:
    """An attempt failed and the adapter will send again after ``wait`` seconds.

    :ivar attempt: the number of the attempt that failed.
    :ivar max_attempts: how many attempts the policy allows, or None if unbounded.
    :ivar retry_after: the wait the server asked for, or None.
    :ivar trace_id: the trace id of the error (its body's ``traceId`` or a
        header), to quote to support; None when it had none.
    """

    method: str
    url: str
    attempt: int
    max_attempts: int | None
    status: int | None
    kind: str
    wait: float
    retry_after: float | None
    trace_id: str | None = None


@dataclass(frozen=True)
class ReauthEvent:
    """A 401 or 403 made the adapter refresh its credentials and resend once.

    :ivar trace_id: the trace id of the refusal, when it had one.
    """

    method: str
    url: str
    status: int
    kind: str
    trace_id: str | None = None


@dataclass(frozen=True)
class GiveUpEvent:
    """The adapter stopped a call whose failure a later try could cure: it stopped
    retrying, or did not send the call at all.

    :ivar reason: why: retries exhausted, the deadline, a ``Retry-After``
        longer than ``max_retry_after``, a write that may have been processed
        and has no ``Idempotency-Key`` (not resent), or ``"not sent: ..."`` when
        a step refused to send it (no rate-limit permit in time; an open circuit's
        refusals are announced by its alert instead, once per outage).
    :ivar status: the last status (for a call not sent, the status of the local
        reply: 429 or 503), or None when the last attempt got no response.
    :ivar history: every attempt of the call.
    :ivar sent: False when the last try was refused before it was sent.
    """

    method: str
    url: str
    status: int | None
    kind: str
    reason: str
    retry_after: float | None
    trace_id: str | None
    history: tuple[Attempt, ...]
    sent: bool = True

    @property
    def attempts(self) -> int:
        """How many requests were sent."""
        return len(self.history)


@dataclass(frozen=True)
class AlertEvent:
    """Something an operator should hear about, once per change of state.

    :ivar kind: ``"circuit_open"`` (a host keeps failing: calls to it now fail
        fast), ``"circuit_closed"`` (it answers again), or ``"queued"`` (a
        write to the host went to the outbox; once until the host answers a call
        successfully again).
    :ivar host: ``scheme://host:port``.
    :ivar message: one line saying what happened and what it means.
    :ivar failures: consecutive failed calls that led here.
    :ivar rejected: calls refused without sending while the circuit was open.
    :ivar outbox_id: for ``queued``, the outbox entry that started the alert.
    :ivar at: when (Unix time).
    :ivar until: for ``circuit_open``, when the next probe may go (Unix time).
    :ivar trace_id: the trace id of the last error, when it had one.
    """

    kind: str
    host: str
    message: str
    failures: int = 0
    rejected: int = 0
    outbox_id: int | None = None
    at: float = 0.0
    until: float | None = None
    trace_id: str | None = None


Event = RetryEvent | ReauthEvent | GiveUpEvent | AlertEvent
#: A hook: a callable taking one event.
Hook = Callable[[Event], object]


def _as_hooks(name: str, value: object) -> tuple[Hook, ...]:
    if value is None:
        return ()
    if callable(value):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        hooks = tuple(value)
        if all(callable(hook) for hook in hooks):
            return hooks
    raise TypeError(f"{name} must be a callable or a list of callables, not {type(value).__name__}")


def _traced(trace_id: str | None) -> str:
    """The end of a log line about an error that had a trace id."""
    return f"; trace id {trace_id}" if trace_id else ""


def _log_retry(event: RetryEvent) -> None:
    of = f" of {event.max_attempts}" if event.max_attempts else ""
    logger.warning(
        "Retrying %s %s: attempt %d%s got %s (%s); waiting %.2fs%s",
        event.method,
        event.url,
        event.attempt,
        of,
        event.status if event.status is not None else "no response",
        event.kind,
        event.wait,
        _traced(event.trace_id),
    )


def _log_reauth(event: ReauthEvent) -> None:
    logger.info(
        "Re-authenticating after %d (%s) on %s %s%s",
        event.status,
        event.kind,
        event.method,
        event.url,
        _traced(event.trace_id),
    )


def _log_give_up(event: GiveUpEvent) -> None:
    if not event.sent:
        logger.error(
            "Giving up on %s %s%s: local %s (%s); %s%s",
            event.method,
            event.url,
            f" after {event.attempts} attempt{'' if event.attempts == 1 else 's'}"
            if event.attempts
            else "",
            event.status,
            event.kind,
            event.reason,
            _traced(event.trace_id),
        )
        return
    logger.error(
        "Giving up on %s %s after %d attempt%s: %s (%s); %s%s",
        event.method,
        event.url,
        event.attempts,
        "" if event.attempts == 1 else "s",
        event.status if event.status is not None else "no response",
        event.kind,
        event.reason,
        _traced(event.trace_id),
    )


@dataclass(frozen=True)
class Hooks:
    """The callables notified of retries, re-authentications and give-ups.

    A hook that raises is logged and otherwise ignored: observing a request
    must never change its outcome.
    """

    on_retry: tuple[Hook, ...] = ()
    on_reauth: tuple[Hook, ...] = ()
    on_give_up: tuple[Hook, ...] = ()
    on_alert: tuple[Hook, ...] = ()

    @classmethod
    def from_arguments(
        cls, on_retry: object, on_reauth: object, on_give_up: object, on_alert: object = None
    ) -> Hooks:
        """Validate the adapter's hook arguments (a callable, a list of them, or None)."""
        return cls(
            on_retry=_as_hooks("on_retry", on_retry),
            on_reauth=_as_hooks("on_reauth", on_reauth),
            on_give_up=_as_hooks("on_give_up", on_give_up),
            on_alert=_as_hooks("on_alert", on_alert),
        )

    def retry(self, event: RetryEvent) -> None:
        """Log and announce a retry."""
        _log_retry(event)
        self._call(self.on_retry, event)

    def reauth(self, event: ReauthEvent) -> None:
        """Log and announce a re-authentication."""
        _log_reauth(event)
        self._call(self.on_reauth, event)

    def give_up(self, event: GiveUpEvent) -> None:
        """Log and announce giving up."""
        _log_give_up(event)
        self._call(self.on_give_up, event)

    def alert(self, event: AlertEvent) -> None:
        """Log and announce an alert (``circuit_open`` at ERROR, the others at WARNING)."""
        level = logging.ERROR if event.kind == "circuit_open" else logging.WARNING
        logger.log(level, "Alert %s: %s%s", event.kind, event.message, _traced(event.trace_id))
        self._call(self.on_alert, event)

    @staticmethod
    def _call(hooks: tuple[Hook, ...], event: Event) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                logger.exception("A %s hook raised; ignored", type(event).__name__)
