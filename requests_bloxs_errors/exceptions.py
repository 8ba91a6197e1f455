"""The exceptions this library raises.

Every error response becomes one of these. All of them are
:class:`requests.exceptions.HTTPError` subclasses, so code written against
plain requests (``except requests.HTTPError``, ``except
requests.RequestException``) keeps working unchanged::

    requests.exceptions.HTTPError
    └── BloxsError
        ├── ClientError                      other 4xx
        │   ├── BadRequestError              400  (see ``errors``)
        │   ├── AuthenticationError          401
        │   ├── PermissionDeniedError        403
        │   ├── NotFoundError                404
        │   ├── MethodNotAllowedError        405
        │   ├── UnsupportedMediaTypeError    415
        │   └── RateLimitError               429, and 403 with Retry-After
        └── ServerError                      500 and other 5xx
            └── ServiceUnavailableError      503

Misuse of the library (bad configuration) raises :class:`TypeError` or
:class:`ValueError` instead, at construction time; transport failures
(refused connections, timeouts) stay the usual :mod:`requests` exceptions.
A token endpoint that answers 2xx without a usable token (or redirects)
raises :class:`TokenResponseError`, a :class:`requests.RequestException`. A
call whose ``deadline`` passes while it waits for a token, or for a
response's status line and headers, raises :class:`DeadlineExceeded`, a
:class:`requests.Timeout` (for the head, also a :class:`requests.ReadTimeout`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from requests.exceptions import HTTPError, RequestException, Timeout

if TYPE_CHECKING:
    from requests import Response

    from .errors.classify import ErrorInfo
    from .events import Attempt

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BloxsError",
    "CircuitOpenError",
    "ClientError",
    "DeadlineExceeded",
    "MethodNotAllowedError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "TokenResponseError",
    "UnsupportedMediaTypeError",
]


class BloxsError(HTTPError):
    """An HTTP error response, classified.

    :param message: the exception text (one line, no secrets, no query string).
    :param response: the last response; its body (up to 64 KiB) is readable.
        None when nothing was sent (the client-side rate limit refused a permit).
    :param info: the classification of ``response``.
    :param history: one :class:`~requests_bloxs_errors.Attempt` per request sent.
    """

    response: Response | None
    #: The id of the outbox entry that keeps this call's request for a later
    #: replay, or None when nothing was queued (see ``rbe.Outbox``).
    outbox_id: int | None = None

    def __init__(
        self,
        message: str,
        *,
        response: Response | None,
        info: ErrorInfo,
        history: tuple[Attempt, ...] = (),
    ) -> None:
        super().__init__(message, response=response)
        self.info = info
        self.history = tuple(history)

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only arguments defeat BaseException's default pickling
        return (_rebuild, (type(self), self.args, self.__dict__))

    @property
    def status_code(self) -> int:
        """The HTTP status of the last response."""
        return self.info.status

    @property
    def kind(self) -> str:
        """The table's name for this error, such as ``"rate_limited"``."""
        return self.info.kind

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked us to wait, or None when it did not say."""
        return self.info.retry_after

    @property
    def trace_id(self) -> str | None:
        """The id to quote to the API's support (body ``traceId`` or a tracing header)."""
        return self.info.trace_id

    @property
    def errors(self) -> dict[str, list[str]]:
        """Validation errors of a 400, field name to messages (a fresh copy)."""
        return {name: list(messages) for name, messages in self.info.errors.items()}

    @property
    def action(self) -> str:
        """What to do about this error."""
        return self.info.action

    @property
    def attempts(self) -> int:
        """How many requests were sent, retries and re-authentication included
        (0 for an error raised before sending, such as an open circuit)."""
        if self.response is None or getattr(self.response, "local", False):
            return len(self.history)  # (a local reply: the adapter's own, nothing sent)
        return len(self.history) or 1


def _rebuild(cls: type[BloxsError], args: tuple[Any, ...], state: dict[str, Any]) -> BloxsError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ClientError(BloxsError):
    """A 4xx response: the request needs to change before it can succeed."""


class ServerError(BloxsError):
    """A 5xx response: the server failed; the request may succeed later."""


class BadRequestError(ClientError):
    """400: the content of the request is wrong; ``errors`` says where."""


class AuthenticationError(ClientError):
    """401: missing, expired or refused credentials."""


class PermissionDeniedError(ClientError):
    """403: authenticated, but not allowed to do this."""


class NotFoundError(ClientError):
    """404: no such resource at this URL."""


class MethodNotAllowedError(ClientError):
    """405: the resource exists but does not accept this HTTP method."""


class UnsupportedMediaTypeError(ClientError):
    """415: missing or wrong ``Content-Type``."""


class RateLimitError(ClientError):
    """429, or a 403 carrying ``Retry-After``: a rate limit or quota is used up."""

    @property
    def quota(self) -> tuple[int, float] | None:
        """``(limit, period_seconds)`` when the server stated its quota, else None."""
        return self.info.quota


class ServiceUnavailableError(ServerError):
    """503: the service is down for now, for example for maintenance."""


class CircuitOpenError(ServiceUnavailableError):
    """The host's circuit is open: it kept failing, so the call was not sent.

    ``response`` is None; ``retry_after`` is the number of seconds until a probe
    may test the host again. Raised at once, without touching the network.
    """


class TokenResponseError(RequestException):
    """A token endpoint (or ``fetch_token``) gave no usable token.

    The answer was a success without a token, a token that cannot be sent in
    a header (blank, a line break, a control or non-Latin-1 character), or a
    redirect, which token requests never follow.
    """


class DeadlineExceeded(Timeout):
    """The call's ``deadline`` passed before a request could be sent, or before
    its response's status line and headers arrived.

    Raised while waiting for another thread's token fetch; a
    :class:`requests.Timeout`, so code that handles timeouts handles it. A
    response head cut off at the deadline raises
    :class:`~requests_bloxs_errors.pipeline.headwait.HeadTimeout`, which is
    also a :class:`requests.ReadTimeout`.
    """
