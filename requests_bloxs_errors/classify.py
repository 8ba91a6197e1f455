"""Classify an error response: :func:`classify` and :class:`ErrorInfo`.

:func:`classify` reads at most :data:`BODY_CAP` bytes of an error body and
never touches the body of a 1xx-3xx response, so ``stream=True`` downloads
reach the caller untouched. What it reads stays readable: the bytes are kept
on the response, so ``response.content``, ``.text`` and ``.json()`` work
afterwards (an error body longer than the cap is cut at the cap and the
connection is closed rather than drained).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from requests import Response

from .parsing import (
    ParsedBody,
    clean_line,
    parse_body,
    retry_after_from_headers,
    trace_id_from_headers,
)
from .table import Rule, rule_by_kind, rule_for
from .urls import redact_url

if TYPE_CHECKING:
    from .events import Attempt
    from .exceptions import BloxsError

__all__ = ["BODY_CAP", "ErrorInfo", "classify", "drain_error_body", "error_for", "read_error_body"]

#: The most bytes of an error body read into memory.
BODY_CAP = 64 * 1024

_CHUNK = 16 * 1024


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
    :ivar body_truncated: True when the body was longer than :data:`BODY_CAP`.
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
        """The table row this error was classified by."""
        return rule_by_kind(self.kind)


def read_error_body(
    response: Response, cap: int = BODY_CAP, *, deadline: float | None = None
) -> tuple[bytes, bool]:
    """Read up to ``cap`` bytes of ``response``'s body and keep them on it.

    :param deadline: a ``time.monotonic()`` value: reading stops there, what
        arrived is kept, and the connection is closed (a server that trickles
        a byte at a time cannot hold the call past it).
    :return: ``(body, truncated)``. Never raises: a body that breaks off
        midway gives what arrived; one already streamed away gives ``b""``.
    """
    content = getattr(response, "_content", False)
    if isinstance(content, bytes):
        return content[:cap], len(content) > cap
    raw = response.raw
    if getattr(response, "_content_consumed", False) or raw is None:
        return b"", False
    # a body that breaks off keeps the bytes that came before the error, where
    # iter_content would lose the last chunk with it
    read, options = _reader(raw)
    urllib3_raw = hasattr(raw, "stream")
    buffer = bytearray()
    truncated = False
    empty_reads = 0
    try:
        while len(buffer) <= cap:
            if deadline is not None and time.monotonic() >= deadline:
                truncated = True
                break
            chunk = read(_CHUNK, **options)
            if chunk:
                buffer += chunk
                continue
            # the end; but urllib3's decoder may yield nothing for a chunk before it
            empty_reads += 1
            if not urllib3_raw or getattr(raw, "closed", True) or empty_reads > 64:
                break
        truncated = truncated or len(buffer) > cap
        if not truncated and urllib3_raw and getattr(read, "__self__", raw) is not raw:
            raw.read()  # read past http.client's back: let urllib3 see the end and release
    except Exception:  # reset mid-body, bad gzip, ...: keep what arrived
        truncated = True
    body = bytes(buffer[:cap])
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]
    if truncated:
        # do not drain an unbounded body to reuse one connection: close it. (Not
        # response.close() alone: with the content consumed, it would hand the
        # connection back to the pool with the rest of the body still unread.)
        with contextlib.suppress(Exception):
            raw.close()
        response.close()
    return body, truncated


def _reader(raw: Any) -> tuple[Callable[..., bytes], dict[str, bool]]:
    """A read that returns what has arrived, never waiting for a whole chunk:
    a body trickled a byte at a time must not hold a read past the deadline."""
    if not hasattr(raw, "stream"):  # not urllib3's: a file, say
        return raw.read, {}
    read1 = getattr(raw, "read1", None)
    if read1 is not None:  # urllib3 2
        return read1, {"decode_content": True}
    # urllib3 1.26: its read(n) waits for n bytes; http.client's read1 does not,
    # and for a body without Content-Encoding it gives the same bytes
    inner = getattr(raw, "_fp", None)
    encoding = str(raw.headers.get("Content-Encoding", "")).strip().lower()
    if inner is not None and hasattr(inner, "read1") and encoding in ("", "identity"):
        return inner.read1, {}
    return raw.read, {"decode_content": True}


def drain_error_body(response: Response, deadline: float | None = None) -> None:
    """Finish with an intermediate error response before the next attempt.

    A body of at most :data:`BODY_CAP` bytes is read, so its connection goes
    back to the pool; a longer one (or one still arriving at ``deadline``)
    is not downloaded only to be thrown away: its connection is closed.
    """
    _, truncated = read_error_body(response, deadline=deadline)
    raw = response.raw
    if not truncated and raw is not None and hasattr(raw, "release_conn"):
        raw.release_conn()  # read to the end: the connection serves the next attempt


def _retry_allowed(response: Response, rule: Rule, retry_after: float | None) -> bool:
    request = response.request
    if request is None:
        return rule.allows_retry("GET", False, retry_after)
    has_key = "Idempotency-Key" in request.headers
    return rule.allows_retry(request.method, has_key, retry_after)


def classify(response: Response, *, deadline: float | None = None) -> ErrorInfo | None:
    """Classify ``response`` by the error table.

    Usage::

        >>> info = rbe.classify(response)
        >>> if info and info.kind == "bad_request":
        ...     for field, messages in info.errors.items(): ...

    :param response: any :class:`requests.Response`.
    :param deadline: a ``time.monotonic()`` value by which reading the body stops.
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
    retry_after = retry_after_from_headers(headers)
    rule = rule_for(status, retry_after is not None)
    if rule is None:  # 600 and above: not HTTP errors to requests either
        return None
    body, truncated = read_error_body(response, deadline=deadline)
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
    response: Response, info: ErrorInfo | None = None, history: tuple[Attempt, ...] = ()
) -> BloxsError:
    """Build the typed exception for an error ``response``.

    :param info: its classification, or None to classify it now.
    :param history: the attempts that led to it.
    :raises ValueError: if ``response`` is not an error (status < 400).
    """
    if info is None:
        info = classify(response)
        if info is None:
            raise ValueError(f"status {response.status_code} is not an error")
    return info.rule.exception(
        describe(response, info), response=response, info=info, history=history
    )
