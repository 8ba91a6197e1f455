"""Parsers for what an API says about an error: headers and bodies.

Every function here is pure and total: any input, however malformed, gives a
result (often None), never an exception. Results are bounded: waits are
finite and non-negative, strings are single lines of limited length, and an
error body contributes at most :data:`MAX_FIELDS` fields of at most
:data:`MAX_MESSAGES` messages each.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "MAX_FIELDS",
    "MAX_MESSAGES",
    "MAX_TEXT",
    "ParsedBody",
    "clean_line",
    "parse_body",
    "parse_http_date",
    "parse_iso8601",
    "parse_quota",
    "parse_retry_after",
    "retry_after_from_headers",
    "trace_id_from_headers",
]

#: Longest single-line string kept from a body or header.
MAX_TEXT = 500
#: Most fields kept from a validation ``errors`` object.
MAX_FIELDS = 100
#: Most messages kept per field.
MAX_MESSAGES = 20

#: Headers that carry a wait in milliseconds (Microsoft services), tried first.
RETRY_AFTER_MS_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")
#: Headers that may identify the failed request to the API's support, in order.
TRACE_HEADERS = (
    "traceparent",
    "x-request-id",
    "x-correlation-id",
    "request-id",
    "x-ms-request-id",
    "request-context",
)

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_SPACES = re.compile(r"\s+")
# a tag cannot contain "<", and a title no tag: each scan stops at the next "<",
# so every character is looked at a bounded number of times
_TAGS = re.compile(r"<[^<>]{0,2000}>")
_HTML_TITLE = re.compile(r"<title[^<>]{0,200}>([^<]{0,2000})</title>", re.IGNORECASE)
_UNITS = r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?)\b"
_PERIOD = r"(?:([0-9]{1,9}(?:\.[0-9]{1,6})?|\.[0-9]{1,6})\s{0,8})?" + _UNITS
#: Quota messages, each found by a keyword and matched from it within
#: :data:`QUOTA_WINDOW` characters. Every quantifier is bounded and no two
#: adjacent ones can match the same characters, so the work per keyword is
#: bounded and the scan is linear in the text (a 4 KiB run of spaces after
#: "per" once cost a second of CPU).
_QUOTA_PATTERNS = (
    # AspNetCoreRateLimit, as DealCloud sends it: "maximum admitted 5 per 1 second"
    (
        "maximum",
        re.compile(
            r"maximum\s{1,8}admitted\s{1,8}([0-9]{1,12})\s{1,8}per\s{1,8}" + _PERIOD,
            re.IGNORECASE,
        ),
    ),
    # Bloxs: "The limit of 3 get requests per 60 seconds is used up"
    (
        "limit",
        re.compile(
            r"limit\s{1,8}of\s{1,8}([0-9]{1,12})\s{1,8}(?:[a-z]{1,20}\s{1,8}){0,3}?"
            r"requests?\s{1,8}per\s{1,8}" + _PERIOD,
            re.IGNORECASE,
        ),
    ),
)
#: The most characters a quota pattern looks at from its keyword.
QUOTA_WINDOW = 160
#: The most keyword occurrences examined per text.
QUOTA_KEYWORDS = 64
_UNIT_SECONDS = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}


def clean_line(value: object, limit: int = MAX_TEXT) -> str:
    """Fold ``value`` into one printable line of at most ``limit`` characters.

    Every non-printable character (controls, C1 controls, line and paragraph
    separators, bidi overrides) becomes a space, so text from a server cannot
    break or disguise a log line.
    """
    text = value if isinstance(value, str) else str(value)
    text = text[: limit * 4]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _finite_wait(seconds: float) -> float | None:
    if math.isfinite(seconds) and seconds >= 0:
        return seconds
    return None


def parse_retry_after(
    value: str | None, *, date: str | None = None, now: float | None = None
) -> float | None:
    """Turn a ``Retry-After`` value into seconds to wait.

    Accepts delta-seconds (``"120"``), fractional seconds (``"1.5"``, which
    some servers send although RFC 9110 does not) and an HTTP-date. A date is
    measured against the response's ``Date`` header when given, so a skewed
    local clock does not stretch or shrink the wait; a date in the past
    means 0.

    :param value: the header value, or None.
    :param date: the response's ``Date`` header, or None to use ``now``.
    :param now: the current Unix time, or None for :func:`time.time`.
    :return: seconds (finite, >= 0), or None when the value is missing,
        empty, negative or not understood.
    """
    if not value or not isinstance(value, str):
        return None
    value = value.strip()
    if _NUMBER.fullmatch(value):
        return _finite_wait(float(value))
    if len(value) > 64 or not value[:1].isalpha():
        return None  # "-1", "1e3", "soon": not a form RFC 9110 or any server we know uses
    when = parse_http_date(value)
    if when is None:
        return None
    reference = parse_http_date(date) if date else None
    if reference is None:
        reference = time.time() if now is None else now
    return _finite_wait(max(0.0, when - reference))


def parse_http_date(value: str) -> float | None:
    """Parse an HTTP-date (RFC 9110) into Unix time; None when it is not one."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:  # Python < 3.10 returns None instead of raising
        return None  # pragma: no cover
    try:
        if parsed.tzinfo is None:  # "-0000" or no zone: RFC 9110 dates are GMT
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


_ISO8601 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"\s*(Z|z|[+-]\d{2}:?\d{2})?"
)


def parse_iso8601(value: object) -> float | None:
    """Parse an ISO 8601 date-time (as .NET writes it: 7 fraction digits, ``Z``).

    A value without an offset is taken as UTC.

    :return: Unix time, or None when ``value`` is not such a date-time.
    """
    if not isinstance(value, str):
        return None
    match = _ISO8601.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = float(f"0.{match.group(7)}") if match.group(7) else 0.0
    offset = match.group(8)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        return None
    if offset and offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment.timestamp() + fraction


def retry_after_from_headers(
    headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """Read the server's requested wait from response headers.

    ``retry-after-ms`` and ``x-ms-retry-after-ms`` (milliseconds) win over
    ``Retry-After`` because they are more precise; an unusable value in one
    header falls through to the next.

    :param headers: a case-insensitive mapping (requests' or urllib3's).
    :return: seconds (finite, >= 0), or None.
    """
    try:
        for name in RETRY_AFTER_MS_HEADERS:
            raw = headers.get(name)
            if raw and _NUMBER.fullmatch(raw.strip()):
                wait = _finite_wait(float(raw.strip()) / 1000.0)
                if wait is not None:
                    return wait
        return parse_retry_after(headers.get("Retry-After"), date=headers.get("Date"), now=now)
    except Exception:  # a hostile mapping must not break error handling
        return None


def trace_id_from_headers(headers: Mapping[str, str]) -> str | None:
    """Return the first correlation id found in :data:`TRACE_HEADERS`, cleaned, or None."""
    try:
        for name in TRACE_HEADERS:
            raw = headers.get(name)
            if raw:
                cleaned = clean_line(raw, 200)
                if cleaned:
                    return cleaned
    except Exception:
        return None
    return None


def parse_quota(text: str) -> tuple[int, float] | None:
    """Find a stated quota: ``maximum admitted N per P unit`` (DealCloud's
    AspNetCoreRateLimit message) or ``limit of N ... requests per P unit`` (Bloxs).

    ``"... maximum admitted 5 per 1 second."`` gives ``(5, 1.0)``, ``"The
    limit of 3 get requests per 60 seconds is used up"`` gives ``(3, 60.0)``;
    the short period forms (``per 1s``, ``per 15m``, ``per 1h``, ``per 1d``)
    work too. Only the first 4 KiB are searched, in time linear in their size.

    :return: ``(limit, period_seconds)``, or None when the text has no quota.
    """
    text = text[:4096]
    lowered = text.lower()
    for keyword, pattern in _QUOTA_PATTERNS:
        start = lowered.find(keyword)
        tries = 0
        while start >= 0 and tries < QUOTA_KEYWORDS:
            match = pattern.match(text, start, start + QUOTA_WINDOW)
            if match is not None:
                quota = _quota(match)
                if quota is not None:
                    return quota
            tries += 1
            start = lowered.find(keyword, start + len(keyword))
    return None


def _quota(match: re.Match[str]) -> tuple[int, float] | None:
    limit = int(match.group(1))
    count = float(match.group(2)) if match.group(2) else 1.0
    period = count * _UNIT_SECONDS[match.group(3).lower()]
    if limit <= 0 or not math.isfinite(period) or period <= 0:
        return None
    return limit, period


@dataclass(frozen=True)
class ParsedBody:
    """What an error body said, in the shapes Bloxs and DealCloud use.

    :ivar message: the most specific one-line message found, or None.
    :ivar title: problem-details ``title``.
    :ivar detail: problem-details ``detail``.
    :ivar error_code: an OAuth ``error`` code such as ``invalid_client``.
    :ivar trace_id: the body's ``traceId``.
    :ivar errors: validation errors, field name to messages.
    :ivar quota: ``(limit, period_seconds)`` from a quota message.
    :ivar text: the body as one cleaned line (for HTML: its visible text).
    """

    message: str | None = None
    title: str | None = None
    detail: str | None = None
    error_code: str | None = None
    trace_id: str | None = None
    errors: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    quota: tuple[int, float] | None = None
    text: str = ""


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        cleaned = clean_line(value)
        return cleaned or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return clean_line(value)
    return None


def _validation_errors(value: Any) -> dict[str, tuple[str, ...]]:
    """Normalise the ``errors`` member: ``{field: [messages]}``, or a list of them."""
    found: dict[str, tuple[str, ...]] = {}
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_FIELDS]
    elif isinstance(value, list):  # [{"field": ..., "message": ...}] as some APIs send
        items = []
        for entry in value[:MAX_FIELDS]:
            if isinstance(entry, Mapping):
                name = entry.get("field") or entry.get("name") or entry.get("propertyName") or ""
                items.append((name, entry.get("message") or entry.get("errorMessage")))
            else:
                items.append(("", entry))
    else:
        return found
    for name, raw in items:
        key = clean_line(name, 200) if isinstance(name, (str, int)) else ""
        messages = raw if isinstance(raw, list) else [raw]
        texts = tuple(t for t in (_as_text(m) for m in messages[:MAX_MESSAGES]) if t)
        if texts:
            found[key] = found.get(key, ()) + texts
    return found


def _visible_text(text: str) -> str:
    if "<" in text and ">" in text:
        title = _HTML_TITLE.search(text)
        if title:
            return clean_line(_TAGS.sub(" ", title.group(1)))
        return clean_line(_TAGS.sub(" ", text))
    return clean_line(text)


def parse_body(data: bytes, content_type: str | None = None) -> ParsedBody:
    """Understand an error body.

    Recognised shapes: the Bloxs 400 validation problem (``errors`` per
    field, ``traceId``), RFC 9457/9110 problem details (``type``, ``title``,
    ``detail``), OAuth errors (``error``, ``error_description``),
    ``{"error": "internal_server_error"}``, gateway JSON with ``message``,
    the text/plain quota message, and anything else (HTML, garbage, invalid
    UTF-8) kept as cleaned text.

    :param data: the body bytes (already capped by the caller).
    :param content_type: the ``Content-Type`` header, for its charset.
    """
    try:
        return _parse_body(data, content_type or "")
    except Exception:  # pragma: no cover - a last guard; the parser is meant to be total
        return ParsedBody(text=clean_line(data[:MAX_TEXT].decode("utf-8", "replace")))


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            name = value.strip().strip("\"'")
            try:
                "".encode(name)
            except LookupError:
                break
            return name
    return "utf-8"


def _parse_body(data: bytes, content_type: str) -> ParsedBody:
    text = data.decode(_charset(content_type), "replace")
    stripped = text.lstrip("\ufeff \t\r\n")
    document: Any = None
    if stripped[:1] in ("{", "["):
        try:
            document = json.loads(stripped)
        except (ValueError, RecursionError):
            document = None
    if isinstance(document, Mapping):
        return _parse_json(document, stripped)
    visible = _visible_text(text)
    return ParsedBody(message=visible or None, quota=parse_quota(text), text=visible)


def _parse_json(doc: Mapping[str, Any], raw: str) -> ParsedBody:
    errors = _validation_errors(doc.get("errors"))
    title = _as_text(doc.get("title"))
    detail = _as_text(doc.get("detail"))
    error_code = _as_text(doc.get("error")) if isinstance(doc.get("error"), str) else None
    description = _as_text(doc.get("error_description"))
    plain = _as_text(doc.get("message")) or _as_text(doc.get("Message"))
    if isinstance(doc.get("error"), Mapping):  # {"error": {"code": ..., "message": ...}}
        inner = doc["error"]
        error_code = _as_text(inner.get("code"))
        plain = plain or _as_text(inner.get("message"))
    trace = None
    for key in (
        "traceId",
        "traceid",
        "TraceId",
        "trace_id",
        "requestId",
        "correlationId",
    ):
        trace = _as_text(doc.get(key))
        if trace:
            break
    if error_code and description:
        message: str | None = f"{error_code}: {description}"
    else:
        message = detail or title or description or plain or error_code
    if message is None and errors:
        message = "validation failed"
    text = clean_line(raw)
    quota = parse_quota(message) if message else None
    return ParsedBody(
        message=message,
        title=title,
        detail=detail,
        error_code=error_code,
        trace_id=trace,
        errors=errors,
        quota=quota,
        text=text,
    )
