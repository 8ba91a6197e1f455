"""Classify an error response: :func:`classify` and :class:`ErrorInfo`.

:func:`classify` reads at most :data:`BODY_CAP` bytes of an error body
(see :mod:`~requests_bloxs_errors.errors.bodies`) and never touches the body of a
1xx-3xx response, so ``stream=True`` downloads reach the caller untouched.
What it reads stays readable: ``response.content``, ``.text``, ``.json()``,
``iter_content()`` and ``raw`` give the whole body afterwards, as without
the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from requests import Response

from ..clock import SYSTEM, Clock
from ..urls import redact_url
from .bodies import BODY_CAP, read_error_body
from .parsing import (
    ParsedBody,
    clean_line,
    parse_body,
    retry_after_from_headers,
    trace_id_from_headers,
)
from .table import Rule, is_read, rule_by_kind, rule_for

if TYPE_CHECKING:
    from ..events import Attempt
    from ..exceptions import BloxsError

__all__ = ["BODY_CAP", "ErrorInfo", "classify", "error_for", "trace_id_of"]


def trace_id_of(response: Response, body: bytes) -> str | None:
    """The trace id of an error response whose body starts with ``body``: the body's
    ``traceId``, or a correlation header; None without one."""
    headers = response.headers
    parsed = parse_body(body, headers.get("Content-Type")) if body else None
    return (parsed.trace_id if parsed else None) or trace_id_from_headers(headers)


@dataclass(frozen=True)
class ErrorInfo:
    """What an error response means and what to do about it.

    :ivar status: the HTTP status.
    :ivar kind: the table's name for it (``"bad_request"``, ``"rate_limited"``,
        ``"quota_exceeded"``, ``"client_error"``, ...).
    :ivar retryable: whether the error table allows resending this request,
        given its method, its ``Idempotency-Key`` and the server's
        ``Retry-After``. It is the table's answer, whatever
        ``status_forcelist`` a policy ran with; what the adapter did is in
        :func:`~requests_bloxs_errors.attempts`.
    :ivar reauth: whether fresh credentials may help.
    :ivar action: what to do, in this project's words.
    :ivar message: the server's most specific message, as one line.
    :ivar retry_after: seconds the server asked to wait, or None.
    :ivar trace_id: the id to quote to support (body ``traceId`` or a header).
    :ivar errors: validation errors, field to messages (400).
    :ivar quota: ``(limit, period_seconds)`` from a quota message, or None.
    :ivar title: problem-details ``title``, if any.
    :ivar detail: problem-details ``detail``, if any.
    :ivar error_code: OAuth-style ``error`` code, if any.
    :ivar body_truncated: True when the body is longer than the :data:`BODY_CAP`
        bytes this was read from (the rest stays readable on the response),
        or was cut short by the deadline or a broken connection.
    """

    status: int
    kind: str
    retryable: bool
    reauth: bool
    action: str
    message: str
    retry_after: float | None = None
    trace_id: str | None = None
    errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    quota: tuple[int, float] | None = None
    title: str | None = None
    detail: str | None = None
    error_code: str | None = None
    body_truncated: bool = False

    @property
    def error_lines(self) -> tuple[str, ...]:
        """The validation errors as ``"field: messages"`` lines (``(body)`` for no field)."""
        return tuple(f"{name or '(body)'}: {' '.join(m)}" for name, m in self.errors.items())

    @property
    def rule(self) -> Rule:
        """The table row this error was classified by (for a refusal the adapter made,
        such as ``circuit_open``, the row of its status)."""
        try:
            return rule_by_kind(self.kind)
        except KeyError:
            found = rule_for(self.status)
            assert found is not None  # an ErrorInfo is only made for 400 to 599
            return found


def _retry_allowed(response: Response, rule: Rule, retry_after: float | None) -> bool:
    request = response.request
    if request is None:
        return rule.allows_retry("GET", False, retry_after)
    safe = "Idempotency-Key" in request.headers or is_read(request.method, request.url)
    return rule.allows_retry(request.method, safe, retry_after)


def classify(
    response: Response, *, deadline: float | None = None, clock: Clock = SYSTEM
) -> ErrorInfo | None:
    """Classify ``response`` by the error table.

    Usage::

        >>> info = rbe.classify(response)
        >>> if info and info.kind == "bad_request":
        ...     for field, messages in info.errors.items(): ...

    :param response: any :class:`requests.Response`.
    :param deadline: a ``clock.monotonic()`` value by which reading the body stops.
    :param clock: the clock ``deadline`` is read on.
    :return: None for a status below 400 (the body is not touched), else a
        frozen :class:`ErrorInfo`. Never raises.
    """
    try:
        status = int(response.status_code)
    except (TypeError, ValueError):
        return None
    if status < 400:
        return None
    cached = getattr(response, "_bloxs_info", None)
    if isinstance(cached, ErrorInfo):
        return cached
    headers = response.headers
    retry_after = retry_after_from_headers(headers, now=clock.time())
    rule = rule_for(status, retry_after is not None)
    if rule is None:  # 600 and above: not HTTP errors to requests either
        return None
    body, truncated = read_error_body(response, deadline=deadline, clock=clock)
    parsed = parse_body(body, headers.get("Content-Type")) if body else ParsedBody()
    # the reason phrase is the server's text too: one clean, capped line
    reason = clean_line(response.reason) if isinstance(response.reason, str) else ""
    message = parsed.message or reason or rule.title
    return ErrorInfo(
        status=status,
        kind=rule.kind,
        retryable=_retry_allowed(response, rule, retry_after),
        reauth=rule.reauth,
        action=rule.action,
        message=message,
        retry_after=retry_after,
        trace_id=parsed.trace_id or trace_id_from_headers(headers),
        errors=parsed.errors,
        quota=parsed.quota,
        title=parsed.title,
        detail=parsed.detail,
        error_code=parsed.error_code,
        body_truncated=truncated,
    )


def describe(response: Response, info: ErrorInfo) -> str:
    """The one-line exception text: status, kind, request, message, hints, action."""
    request = response.request
    method = request.method if request is not None else "?"
    url = redact_url(request.url if request is not None else response.url)
    hints = []
    if info.errors:
        hints.append(clean_line("; ".join(info.error_lines), 600))
    if info.retry_after is not None:
        hints.append(f"retry after {info.retry_after:g}s")
    if info.quota is not None:
        hints.append(f"quota {info.quota[0]} per {info.quota[1]:g}s")
    if info.trace_id:
        hints.append(f"trace id {info.trace_id}")
    hint = f" [{'; '.join(hints)}]" if hints else ""
    return f"{info.status} {info.kind} for {method} {url}: {info.message}{hint}. {info.action}"


def error_for(
    response: Response,
    info: ErrorInfo | None = None,
    history: tuple[Attempt, ...] = (),
    *,
    error_class: type[BloxsError] | None = None,
) -> BloxsError:
    """Build the typed exception for an error ``response``.

    :param info: its classification, or None to classify it now.
    :param history: the attempts that led to it.
    :param error_class: the class to raise instead of the table row's (a local
        reply raises the error the refused call would have raised).
    :raises ValueError: if ``response`` is not an error (status < 400).
    """
    if info is None:
        info = classify(response)
        if info is None:
            raise ValueError(f"status {response.status_code} is not an error")
    cls = error_class or info.rule.exception
    message = describe(response, info) if error_class is None else info.message
    error = cls(message, response=response, info=info, history=history)
    error.outbox_id = getattr(response, "_bloxs_outbox_id", None)
    return error
