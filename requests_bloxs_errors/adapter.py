"""The transport adapter: :class:`BloxsAdapter` and :func:`mount`.

``send()`` runs one call in four steps:

1. sign a copy of the request when it lies under the adapter's prefix;
2. hand it to :class:`requests.adapters.HTTPAdapter` with a per-call
   :class:`~requests_bloxs_errors.BloxsRetry`, so urllib3 drives the retries;
3. on a 401 or 403, refresh the credential and resend once;
4. classify a final error response, keep the classification on it, log a
   give-up, and raise when ``raise_errors`` is set.

A 2xx or 3xx response goes back after step 2 untouched: no body read, no copy.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Mapping
from typing import Any, Union

from requests import PreparedRequest, Response, Session
from requests.adapters import HTTPAdapter
from requests.exceptions import ConnectionError, ReadTimeout, RequestException
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .auth import Credential
from .classify import ErrorInfo, classify, error_for
from .events import Attempt, Hooks, ReauthEvent, logger
from .retry import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RETRIES,
    BloxsRetry,
    Call,
    ResignFailed,
    calling,
)
from .urls import Prefix, is_loopback, redact_url

__all__ = ["BloxsAdapter", "BloxsResponse", "attempts", "mount"]

TimeoutArg = Union[None, float, "tuple[float | None, float | None]", "Timeout"]


class BloxsResponse(Response):
    """An error response that went through a :class:`BloxsAdapter`.

    It is a :class:`requests.Response` in every way, except that
    :meth:`raise_for_status` raises the typed
    :class:`~requests_bloxs_errors.BloxsError` (still a
    :class:`requests.HTTPError`). Success responses keep their own class.
    """

    __attrs__ = [*Response.__attrs__, "_bloxs_info", "_bloxs_history"]  # noqa: RUF012

    _bloxs_info: ErrorInfo | None = None
    _bloxs_history: tuple[Attempt, ...] = ()

    @property
    def error_info(self) -> ErrorInfo | None:
        """The classification of this response."""
        return classify(self)

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """Every request sent to get this response; see :func:`attempts`."""
        return attempts(self)

    def raise_for_status(self) -> None:
        """Raise the typed exception for this error response."""
        info = classify(self)
        if info is None:
            super().raise_for_status()
            return
        raise error_for(self, info, self._bloxs_history)


class _SignedHeaders(CaseInsensitiveDict):  # type: ignore[type-arg]
    """The headers of a request the adapter signed.

    urllib3 copies the headers at the start of every attempt, so a header
    re-signed between attempts would never be sent. While its call is in
    flight this dict's :meth:`copy` returns the dict itself, and what the
    credential writes after a wait reaches the next attempt. Afterwards it
    copies like any :class:`~requests.structures.CaseInsensitiveDict`.
    """

    in_flight = False

    def copy(self) -> CaseInsensitiveDict:  # type: ignore[type-arg]
        if self.in_flight:
            return self
        return CaseInsensitiveDict(self)


def _number(
    name: str, value: object, *, allow_none: bool = False, positive: bool = False
) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expected = "a number of seconds or None" if allow_none else "a number of seconds"
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _retry_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"max_retries must be an int or a urllib3 Retry, not {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(f"max_retries must be >= 0, got {value}")
    return value


def _policy(
    max_retries: object, backoff_factor: float, backoff_max: float, max_retry_after: float | None
) -> BloxsRetry:
    if isinstance(max_retries, Retry):
        return BloxsRetry.from_retry(max_retries, max_retry_after=max_retry_after)
    n = _retry_count(max_retries)
    return BloxsRetry(
        total=n,
        connect=n,
        read=n,
        status=n,
        backoff_factor=backoff_factor,
        backoff_jitter=backoff_factor,
        backoff_max=backoff_max,
        max_retry_after=max_retry_after,
    )


class _DeadlineTimeout(Timeout):
    """The caller's timeouts, never longer than the time left before the deadline.

    urllib3 clones the timeout at the start of every attempt; the clone is a
    plain :class:`~urllib3.util.Timeout` capped at what is left then, so a
    retry late in the call gets only the remainder, not the whole deadline.
    """

    def __init__(self, connect: float | None, read: float | None, deadline: float) -> None:
        super().__init__(connect=connect, read=read)
        self.deadline = deadline

    def clone(self) -> Timeout:
        left = max(self.deadline - time.monotonic(), 0.001)
        return Timeout(connect=_capped(self._connect, left), read=_capped(self._read, left))


def _capped(value: object, left: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(float(value), left)
    return left  # None or urllib3's default: no limit of its own


def _deadline_timeout(timeout: Any, deadline: float) -> Any:
    """Wrap the caller's ``timeout`` so each attempt ends by ``deadline``."""
    if isinstance(timeout, Timeout):
        return timeout  # a urllib3 Timeout object: the caller's own choice
    if isinstance(timeout, tuple) and len(timeout) == 2:
        return _DeadlineTimeout(timeout[0], timeout[1], deadline)
    return _DeadlineTimeout(timeout, timeout, deadline)


class BloxsAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` that retries, re-authenticates
    and classifies errors by the Bloxs/DealCloud error table.

    Usage::

        >>> import requests, requests_bloxs_errors as rbe
        >>> session = requests.Session()
        >>> rbe.mount(session, "https://acme.bloxs.io/", auth=rbe.TokenAuth(fetch))
        >>> session.get("https://acme.bloxs.io/api/v1/realestateobjects/complexes")

    :param auth: a :class:`~requests_bloxs_errors.Credential` that signs every
        request under ``prefix`` and is refreshed once on 401/403; None
        leaves authentication to the caller.
    :param max_retries: retries per call (an int), or a urllib3 ``Retry``
        whose counts, back-off and ``status_forcelist`` are then used (method
        safety still comes from the error table). 0 disables retries.
    :param backoff_factor: seconds of the first back-off, doubled per retry;
        used with an int ``max_retries``.
    :param backoff_max: the longest back-off, in seconds.
    :param max_retry_after: the longest ``Retry-After`` slept on, in seconds.
        A longer one is not waited for: the response comes back at once (or
        its error is raised) with ``retry_after`` set. None: no limit.
    :param deadline: seconds for a whole call, attempts and waits included;
        no wait crosses it and each attempt's connect and read timeouts are
        capped at the time left. None: no deadline.
    :param raise_errors: False (the default) returns error responses, whose
        ``raise_for_status()`` raises the typed error; True raises it from
        :meth:`send`.
    :param prefix: the URL prefix this adapter serves; required with ``auth``
        and must then name a host. :func:`mount` passes it for you.
    :param on_retry: a callable (or list) receiving a
        :class:`~requests_bloxs_errors.RetryEvent` before each retry.
    :param on_reauth: likewise, a :class:`~requests_bloxs_errors.ReauthEvent`.
    :param on_give_up: likewise, a :class:`~requests_bloxs_errors.GiveUpEvent`.
    :param kwargs: any :class:`~requests.adapters.HTTPAdapter` argument
        (``pool_connections``, ``pool_maxsize``, ``pool_block``).
    :raises TypeError, ValueError: on bad configuration.
    """

    __attrs__ = [  # noqa: RUF012 - requests' own pickling convention
        *HTTPAdapter.__attrs__,
        "_auth",
        "_prefix",
        "_deadline",
        "_raise_errors",
        "_hooks",
    ]

    def __init__(
        self,
        *,
        auth: Credential | None = None,
        max_retries: int | Retry = DEFAULT_RETRIES,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        max_retry_after: float | None = DEFAULT_MAX_RETRY_AFTER,
        deadline: float | None = None,
        raise_errors: bool = False,
        prefix: str | None = None,
        on_retry: Any = None,
        on_reauth: Any = None,
        on_give_up: Any = None,
        **kwargs: Any,
    ) -> None:
        factor = _number("backoff_factor", backoff_factor)
        cap = _number("backoff_max", backoff_max)
        assert factor is not None
        assert cap is not None
        self._policy = _policy(
            max_retries, factor, cap, _number("max_retry_after", max_retry_after, allow_none=True)
        )
        self._deadline = _number("deadline", deadline, allow_none=True, positive=True)
        if not isinstance(raise_errors, bool):
            raise TypeError(
                f"raise_errors must be True or False, not {type(raise_errors).__name__}"
            )
        self._raise_errors = raise_errors
        if auth is not None and not isinstance(auth, Credential):
            raise TypeError(
                "auth must provide sign(request) and refresh(request, response), "
                f"such as rbe.TokenAuth; got {type(auth).__name__}"
            )
        self._auth = auth
        self._prefix = Prefix.parse(prefix) if prefix is not None else None
        if auth is not None:
            if self._prefix is None or not self._prefix.names_host:
                raise ValueError(
                    "auth needs a prefix that names a host, such as 'https://acme.bloxs.io/', "
                    "so credentials go to that host only; "
                    f"got {prefix!r}. Use rbe.mount(session, 'https://acme.bloxs.io/', auth=...)"
                )
            if self._prefix.scheme == "http" and not is_loopback(self._prefix.host):
                _warn_plain_http(self._prefix)
        self._hooks = Hooks.from_arguments(on_retry, on_reauth, on_give_up)
        super().__init__(max_retries=self._policy, **kwargs)

    # -- max_retries: always a BloxsRetry --------------------------------------

    @property
    def max_retries(self) -> Retry:
        """The retry policy, shared by every call (it is immutable)."""
        return self._policy

    @max_retries.setter
    def max_retries(self, value: int | Retry) -> None:
        # HTTPAdapter.__init__ and __setstate__ assign it; so may user code
        if isinstance(value, BloxsRetry):
            self._policy = value
        elif isinstance(value, Retry):
            self._policy = BloxsRetry.from_retry(
                value, max_retry_after=self._policy.max_retry_after
            )
        else:
            n = _retry_count(value)
            self._policy = self._policy.new(total=n, connect=n, read=n, status=n)

    def __repr__(self) -> str:
        prefix = self._prefix.raw if self._prefix else None
        auth = type(self._auth).__name__ if self._auth is not None else None
        return (
            f"<{type(self).__name__} prefix={prefix!r} retries={self._policy.total} "
            f"auth={auth} raise_errors={self._raise_errors}>"
        )

    # -- sending --------------------------------------------------------------

    def send(  # noqa: PLR0917 - the signature requests' Session.send calls
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: TimeoutArg = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        """Send ``request``, retrying and re-authenticating as the table says.

        Parameters as for :meth:`requests.adapters.HTTPAdapter.send`.

        :raises BloxsError: for an error response, when ``raise_errors`` is set.
        :raises requests.RequestException: for transport failures, as requests does.
        """
        deadline = None
        if self._deadline is not None:
            deadline = time.monotonic() + self._deadline
            timeout = _deadline_timeout(timeout, deadline)
        call = Call(request, deadline, self._hooks)
        options: dict[str, Any] = {
            "stream": stream,
            "timeout": timeout,
            "verify": verify,
            "cert": cert,
            "proxies": proxies,
        }
        signed = (
            self._auth is not None
            and self._prefix is not None
            and self._prefix.matches(request.url)
        )
        body_pos = _body_position(request.body) if signed else None
        outgoing = self._signed(request) if signed else request
        response = self._send_through_urllib3(outgoing, call, options)
        if response.status_code < 400:
            if call.journal:  # only a call that needed retries pays for its story
                _keep_history(response, call)
            return response
        return self._handle_error(
            response,
            call,
            original=request,
            outgoing=outgoing,
            options=options,
            signed=signed,
            body_pos=body_pos,
        )

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        """As requests builds it, but a body shorter than its ``Content-Length``
        raises instead of passing silently (urllib3 1.26's default; 2.x already does)."""
        resp.enforce_content_length = True
        return super().build_response(req, resp)

    def _signed(self, request: PreparedRequest) -> PreparedRequest:
        """Sign a copy: the caller's request (and any redirect built from it) stays unsigned."""
        assert self._auth is not None
        # shallow: only the headers change, so only they are copied (request.copy()
        # would copy them, then the cookie jar, for nothing)
        signed = copy.copy(request)
        signed.headers = _SignedHeaders(request.headers)
        self._auth.sign(signed)
        return signed

    def _send_through_urllib3(
        self, request: PreparedRequest, call: Call, options: dict[str, Any]
    ) -> Response:
        outer = calling(call)  # a hook may send through this adapter from inside a call
        headers = request.headers
        if isinstance(headers, _SignedHeaders):
            auth = self._auth
            assert auth is not None
            call.resign = lambda: auth.sign(request)
            headers.in_flight = True
        try:
            return super().send(request, **options)
        except ResignFailed as exc:
            raise exc.error from None
        except RequestException as exc:
            failure = self._transport_failure(exc, call)
            if failure is exc:
                raise
            raise failure from exc
        except Urllib3Error as exc:  # the few that requests lets through untranslated
            failure = ConnectionError(exc, request=request)
            raise self._transport_failure(failure, call) from exc
        finally:
            calling(outer)
            if isinstance(headers, _SignedHeaders):
                headers.in_flight = False

    def _transport_failure(self, exc: RequestException, call: Call) -> RequestException:
        """Record and announce a failure without a response; return what to raise."""
        inner: object = exc.args[0] if exc.args else exc
        if isinstance(inner, MaxRetryError) and inner.reason is not None:
            inner = inner.reason
        kind = type(inner).__name__
        call.finish(None, kind, "failed")
        if isinstance(inner, ReadTimeoutError) and not isinstance(exc, ReadTimeout):
            # without retries requests raises ReadTimeout; keep that contract
            return ReadTimeout(inner, request=exc.request)
        return exc

    def _handle_error(
        self,
        response: Response,
        call: Call,
        *,
        original: PreparedRequest,
        outgoing: PreparedRequest,
        options: dict[str, Any],
        signed: bool,
        body_pos: int | None,
    ) -> Response:
        info = classify(response)
        if info is None:  # 600 and above
            return response
        if signed and info.reauth and call.replayable and not _past(call.deadline):
            assert self._auth is not None
            call.hooks.reauth(ReauthEvent(call.method, call.url, info.status, info.kind))
            if self._auth.refresh(outgoing, response):
                call.record(info.status, info.kind, 0.0, "reauth")
                response.close()
                _rewind(original.body, body_pos)
                call.outcome = None
                retried = self._send_through_urllib3(self._signed(original), call, options)
                retried.history.insert(0, response)
                response = retried
                info = classify(response)
                if info is None:
                    _keep_history(response, call)
                    return response
        history = call.finish(
            info.status,
            info.kind,
            "returned",
            retry_after=info.retry_after,
            trace_id=info.trace_id,
        )
        response.__class__ = BloxsResponse
        assert isinstance(response, BloxsResponse)
        response._bloxs_info = info
        response._bloxs_history = history
        if self._raise_errors:
            raise error_for(response, info, history)
        return response


def _keep_history(response: Response, call: Call) -> None:
    history = call.finish(response.status_code, "ok", "returned")
    response._bloxs_history = history  # type: ignore[attr-defined]


def attempts(response: Response) -> tuple[Attempt, ...]:
    """Every request the adapter sent to get ``response``, oldest first.

    For a response that came back at the first try this is one synthesized
    entry; for one that was not sent through a :class:`BloxsAdapter`, too.

    Usage::

        >>> for attempt in rbe.attempts(response):
        ...     print(attempt.number, attempt.status, attempt.decision, attempt.wait)
    """
    history: tuple[Attempt, ...] = getattr(response, "_bloxs_history", ())
    if history:
        return history
    info = classify(response)
    kind = info.kind if info is not None else "ok"
    return (Attempt(1, response.status_code, kind, 0.0, "returned"),)


_plain_http_warned: set[str] = set()
_plain_http_lock = threading.Lock()


def _warn_plain_http(prefix: Prefix) -> None:
    """Warn once per prefix and process: install() builds an adapter per Session."""
    where = redact_url(prefix.raw)
    with _plain_http_lock:
        if where in _plain_http_warned:
            return
        _plain_http_warned.add(where)
    logger.warning("Credentials for %s will be sent over plain HTTP; use https://", where)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _body_position(body: object) -> int | None:
    tell = getattr(body, "tell", None)
    if tell is None:
        return None
    try:
        position = tell()
    except (OSError, ValueError):
        return None
    return position if isinstance(position, int) else None


def _rewind(body: object, position: int | None) -> None:
    if position is not None:
        body.seek(position)  # type: ignore[attr-defined]


def mount(session: Session, prefix: str = "https://", **adapter_kwargs: Any) -> BloxsAdapter:
    """Mount a new :class:`BloxsAdapter` on ``session`` for ``prefix``.

    Usage::

        >>> adapter = rbe.mount(session, "https://acme.bloxs.io/", max_retries=5)

    :param session: an existing :class:`requests.Session`; its other adapters,
        headers and cookies are left as they are.
    :param prefix: the URLs to serve, such as ``"https://"`` or
        ``"https://acme.bloxs.io/"`` (required form with ``auth``).
    :param adapter_kwargs: :class:`BloxsAdapter` arguments.
    :return: the mounted adapter.
    """
    if not hasattr(session, "mount"):
        raise TypeError(f"session must be a requests.Session, not {type(session).__name__}")
    adapter = BloxsAdapter(prefix=prefix, **adapter_kwargs)
    session.mount(prefix, adapter)
    return adapter
