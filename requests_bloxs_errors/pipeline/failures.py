"""Transport failures: what went wrong when no response came, in one place.

requests raises its own exception types (``ConnectionError``,
``ConnectTimeout``, ``ReadTimeout``, ``SSLError``, ``ProxyError``, ...),
wrapping urllib3's, sometimes inside a ``MaxRetryError``. :func:`failure_of`
unwraps them once and files the failure under a row of
:data:`~requests_bloxs_errors.errors.table.TRANSPORT_RULES`; the caller still gets
requests' own exception, type and message unchanged.
"""

from __future__ import annotations

import ssl
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

from requests.exceptions import ConnectionError, InvalidHeader, InvalidURL, RequestException
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)

from ..errors.table import INTERRUPTED_RULE, TRANSPORT_RULES, TransportRule

__all__ = ["Failure", "causes", "failure_of", "interrupted", "release"]


@dataclass(frozen=True)
class Failure:
    """A request that got no response.

    :ivar exception: what to raise to the caller: requests' own exception (or, for
        an :func:`interrupted` call, what interrupted it).
    :ivar error: the underlying urllib3 (or socket) error, for ``Retry.increment``.
    :ivar kind: the error's type name, as the attempt journal shows it.
    :ivar rule: the row of the transport table it falls under.
    """

    exception: BaseException
    error: BaseException
    kind: str
    rule: TransportRule


def failure_of(exc: RequestException | HTTPError) -> Failure:
    """File a transport exception under its rule.

    :param exc: what ``HTTPAdapter.send`` raised: a requests exception, or one
        of the few urllib3 errors it lets through (wrapped here in
        :class:`requests.ConnectionError`).
    """
    raised = exc if isinstance(exc, RequestException) else ConnectionError(exc)
    error: object = raised.args[0] if raised.args else raised
    if isinstance(error, MaxRetryError) and error.reason is not None:
        error = error.reason
    if not isinstance(error, Exception):
        error = raised
    return Failure(raised, error, type(error).__name__, TRANSPORT_RULES[_row(raised, error)])


def interrupted(exc: BaseException) -> Failure:
    """The failure of a call that ``exc`` ended in the middle (see
    :data:`~requests_bloxs_errors.errors.table.INTERRUPTED_RULE`): the steps hear of
    it as the call's final failure, the caller gets ``exc`` itself."""
    return Failure(exc, exc, type(exc).__name__, INTERRUPTED_RULE)


def _row(raised: RequestException, error: Exception) -> str:
    if isinstance(raised, (InvalidURL, InvalidHeader)):
        return "permanent"
    if isinstance(error, ProxyError):
        return _proxy_row(error)
    if isinstance(error, ConnectTimeoutError):  # refused, unresolved, timed out: not sent
        return "not_sent"
    if isinstance(error, SSLError):
        return "permanent" if _verification_failed(error) else "no_answer"
    if isinstance(error, (ReadTimeoutError, ProtocolError, ConnectionResetError)):
        return "no_answer"
    return "permanent"


def _proxy_row(error: ProxyError) -> str:
    """A proxy that refused the tunnel (407 and any other status) is final;
    one that could not be reached, or broke the connection, is not."""
    original = getattr(error, "original_error", None)
    text = str(original if original is not None else error)
    if "Tunnel connection failed" in text:
        return "permanent"
    if isinstance(original, SSLError):
        return "permanent" if _verification_failed(original) else "no_answer"
    return "not_sent"


#: TLS alerts with which a server refuses the client's certificate (mTLS).
_CERTIFICATE_ALERTS = (
    "ALERT_CERTIFICATE_REQUIRED",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_CERTIFICATE_REVOKED",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_ACCESS_DENIED",
)


def _verification_failed(error: BaseException) -> bool:
    """Whether a TLS failure is a certificate or hostname that does not verify,
    on our side or (a refused client certificate) on the server's."""
    for current in causes(error):
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        text = str(current).upper()
        if "CERTIFICATE_VERIFY_FAILED" in text or "DOESN'T MATCH" in text:
            return True
        if any(alert in text for alert in _CERTIFICATE_ALERTS):
            return True
    return False


def release(exc: BaseException) -> None:
    """Let go of the failed connection a transport exception still holds.

    The exception (and the urllib3 errors inside it, which the ``Retry``
    history keeps) carry tracebacks whose frames hold the failed connection
    in a reference cycle: its socket would stay open until the garbage
    collector ran (and then warn that it was never closed). Clearing the
    locals of the frames that have finished (the stdlib's
    :func:`traceback.clear_frames`) closes it now; file and line stay in
    the traceback.
    """
    for current in causes(exc):
        traceback.clear_frames(current.__traceback__)


def causes(exc: BaseException, limit: int = 20) -> Iterator[BaseException]:
    """``exc`` and every exception inside it, nearest first, each once.

    requests wraps urllib3's errors (``args[0]``), urllib3 wraps its own
    (``MaxRetryError.reason``, ``ProxyError.original_error``) and the
    socket's (``__cause__``, ``__context__``); this walks all of them.
    """
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < limit:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [getattr(current, "reason", None), getattr(current, "original_error", None)]
        pending += [*current.args[:1], current.__cause__, current.__context__]
