"""The transport adapter: :class:`BloxsAdapter` and :func:`mount`.

:meth:`BloxsAdapter.send` owns the attempt loop. Per attempt it:

1. runs the steps' ``before_attempt`` (pacing; before the first attempt,
   ``before_call``: the circuit breaker), in the order
   :func:`~requests_bloxs_errors.pipeline.steps.steps_in_order` sets;
2. signs a fresh copy of the request when it lies under the prefix (a new
   token or timestamp every time; nothing the pool or a proxy adds reaches
   the caller's objects);
3. sends it through :class:`requests.adapters.HTTPAdapter` with urllib3's
   own retries switched off for that attempt;
4. asks :func:`~requests_bloxs_errors.pipeline.policy.decide` what to do, and does
   it: wait and retry, refresh the credentials and resend, or stop.

A final error response is classified, keeps its classification, and is
raised when ``raise_errors`` is set. A 2xx or 3xx response goes back
untouched: no body read, no copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, TypeGuard, Union

import urllib3
from requests import PreparedRequest, Response, Session
from requests.adapters import DEFAULT_POOLBLOCK, DEFAULT_POOLSIZE, HTTPAdapter
from requests.exceptions import ConnectionError, RequestException
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from .clock import SYSTEM, Clock
from .credentials import signing
from .credentials.auth import Credential
from .credentials.refusals import FreshRefusals
from .errors.bodies import drain_error_body, read_error_body
from .errors.classify import classify, error_for, trace_id_of
from .errors.parsing import retry_after_from_headers
from .errors.responses import BloxsResponse, attempts, is_local, local_reply
from .errors.table import Rule, advice, rule_for
from .events import Hooks, ReauthEvent, logger
from .exceptions import BloxsError, CircuitOpenError, RateLimitError
from .pipeline.call import Call
from .pipeline.failures import Failure, failure_of, interrupted, release
from .pipeline.headwait import head_deadline, watch_heads
from .pipeline.policy import Action, Decision, decide
from .pipeline.retry import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RETRIES,
    BloxsRetry,
)
from .pipeline.steps import Pipeline, check_steps, steps_in_order
from .switches import switch
from .telemetry import otel_installed
from .urls import Prefix, is_loopback, redact_url, safe_for_message

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .resilience.breaker import CircuitBreaker
    from .resilience.outbox import Outbox
    from .resilience.ratelimit import RateLimit
    from .telemetry.step import Telemetry

__all__ = ["AdapterOptions", "BloxsAdapter", "BloxsResponse", "attempts", "mount"]

TimeoutArg = Union[None, float, "tuple[float | None, float | None]", "Timeout"]

#: What urllib3 gets for each attempt: no retries of its own, and read errors
#: raised as themselves, exactly as a plain ``HTTPAdapter`` sends.
_ONE_ATTEMPT = Retry(0, read=False)


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


def _attempt_timeout(timeout: Any, left: float) -> Any:
    """The caller's ``timeout`` for one attempt, no part of it longer than ``left`` seconds.

    Accepts what requests accepts: None, a number, a ``(connect, read)``
    tuple, or a urllib3 :class:`~urllib3.util.Timeout` (whose ``total`` is
    capped too).
    """
    left = max(left, 0.001)
    if isinstance(timeout, Timeout):
        return Timeout(
            total=_capped(timeout.total, left),
            connect=_capped(timeout._connect, left),
            read=_capped(timeout._read, left),
        )
    if isinstance(timeout, tuple) and len(timeout) == 2:
        return (_capped(timeout[0], left), _capped(timeout[1], left))
    capped = _capped(timeout, left)
    return (capped, capped)


def _capped(value: object, left: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return min(float(value), left)
    return left  # None or urllib3's default: no limit of its own


_ONE_ATTEMPT_CLASSES: dict[type, type] = {}


def _one_attempt(adapter: BloxsAdapter) -> HTTPAdapter:
    """The adapter as ``HTTPAdapter.send`` sees it for one attempt (made once per adapter).

    ``HTTPAdapter.send`` hands ``self.max_retries`` to urllib3. This view is
    an instance of a subclass of the adapter's own class whose
    ``max_retries`` is :data:`_ONE_ATTEMPT`, and it shares the adapter's
    ``__dict__``: pools, proxies, TLS settings and a subclass's overrides are
    the adapter's own, and what ``send`` stores (a new proxy manager) lands
    on the adapter.
    """
    cls = type(adapter)
    view_cls = _ONE_ATTEMPT_CLASSES.get(cls)
    if view_cls is None:
        view_cls = type(cls.__name__, (cls,), {"max_retries": _ONE_ATTEMPT, "__slots__": ()})
        _ONE_ATTEMPT_CLASSES[cls] = view_cls
    view: HTTPAdapter = object.__new__(view_cls)
    view.__dict__ = adapter.__dict__
    return view


class AdapterOptions(TypedDict, total=False):
    """The keyword arguments of :class:`BloxsAdapter`, for :func:`mount` and ``install()``."""

    auth: Credential | None
    max_retries: int | Retry
    backoff_factor: float
    backoff_max: float
    max_retry_after: float | None
    deadline: float | None
    raise_errors: bool
    on_retry: Any
    on_reauth: Any
    on_give_up: Any
    rate_limit: RateLimit | str | None
    circuit_breaker: CircuitBreaker | None
    outbox: Outbox | str | None
    on_alert: Any
    steps: Sequence[object] | None
    telemetry: bool | None
    clock: Clock
    pool_connections: int
    pool_maxsize: int
    pool_block: bool


def _traced(response: Response) -> str:
    """The end of the DEBUG line of a call whose error had a trace id."""
    info = getattr(response, "_bloxs_info", None)
    trace = getattr(info, "trace_id", None)
    return f"; trace id {trace}" if trace else ""


class BloxsAdapter(HTTPAdapter):
    """An :class:`~requests.adapters.HTTPAdapter` that retries, re-authenticates
    and classifies errors by the Bloxs/DealCloud error table.

    Usage::

        >>> import requests, requests_bloxs_errors as rbe
        >>> session = requests.Session()
        >>> rbe.mount(session, "https://acme.bloxs.io/", auth=rbe.TokenAuth(fetch))
        >>> session.get("https://acme.bloxs.io/api/v1/realestateobjects/complexes")

    Every argument is keyword-only and described on :meth:`__init__`; the
    README's "Configuration" section lists them with their defaults.
    """

    __attrs__ = [  # noqa: RUF012 - requests' own pickling convention
        *HTTPAdapter.__attrs__,
        "_auth",
        "_prefix",
        "_deadline",
        "_raise_errors",
        "_hooks",
        "_rate_limit",
        "_breaker",
        "_outbox",
        "_user_steps",
        "_clock",
        "_telemetry_wanted",
    ]

    # (for an adapter pickled before they existed)
    _rate_limit: RateLimit | None = None
    _breaker: CircuitBreaker | None = None
    _outbox: Outbox | None = None
    _user_steps: tuple[object, ...] = ()
    _clock: Clock = SYSTEM

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
        rate_limit: RateLimit | str | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        outbox: Outbox | str | None = None,
        on_alert: Any = None,
        steps: Sequence[object] | None = None,
        telemetry: bool | None = None,
        clock: Clock = SYSTEM,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int = DEFAULT_POOLSIZE,
        pool_block: bool = DEFAULT_POOLBLOCK,
    ) -> None:
        """Configure the adapter; bad configuration raises here, not at the first request.

        :param auth: a :class:`~requests_bloxs_errors.Credential` that signs every
            request under ``prefix`` and is refreshed once on 401/403; None
            leaves authentication to the caller.
        :param max_retries: retries per call (an int), or a urllib3 ``Retry``
            whose counts, back-off and ``status_forcelist`` are then used (method
            safety still comes from the error table). 0 disables retries.
        :param backoff_factor: seconds of the first back-off, doubled per retry,
            plus up to as much again of jitter; used with an int ``max_retries``.
        :param backoff_max: the longest back-off, in seconds.
        :param max_retry_after: the longest ``Retry-After`` slept on, in seconds.
            A longer one is not waited for: the response comes back at once (or
            its error is raised) with ``retry_after`` set. None: no limit.
        :param deadline: seconds for a whole call, attempts, waits and token
            fetches included; no wait crosses it and each attempt's timeouts
            are capped at the time left. None: no deadline.
        :param raise_errors: False returns error responses, whose
            ``raise_for_status()`` raises the typed error; True raises it from
            :meth:`send`.
        :param prefix: the URL prefix this adapter serves; required with ``auth``
            and must then name a host. :func:`mount` passes it for you.
        :param on_retry: a callable (or list) receiving a
            :class:`~requests_bloxs_errors.RetryEvent` before each retry.
        :param on_reauth: likewise, a :class:`~requests_bloxs_errors.ReauthEvent`.
        :param on_give_up: likewise, a :class:`~requests_bloxs_errors.GiveUpEvent`.
        :param rate_limit: a :class:`~requests_bloxs_errors.RateLimit` that paces
            every attempt, or ``"bloxs"`` / ``"dealcloud"`` for the vendor's
            (:meth:`RateLimit.bloxs`, :meth:`RateLimit.dealcloud`); None: no pacing.
        :param circuit_breaker: a :class:`~requests_bloxs_errors.CircuitBreaker`:
            calls to a host that keeps failing fail fast; None: no breaker. A
            breaker without a ``storage`` of its own publishes its circuits for
            ``status`` to the rate limit's store when that one is shared.
        :param outbox: an :class:`~requests_bloxs_errors.Outbox` or its
            ``"sqlite:///path"``: writes that failed curably are kept there for
            a later replay (one object per path and process, whichever adapters name
            it); None: nothing is kept.
        :param on_alert: a callable (or list) receiving an
            :class:`~requests_bloxs_errors.AlertEvent` when a circuit opens or
            closes, or writes to a host start going to the outbox.
        :param steps: your own :class:`~requests_bloxs_errors.Step` objects; they
            run after the built-in ones (see
            :func:`~requests_bloxs_errors.pipeline.steps.steps_in_order`). None: none.
        :param telemetry: report spans and metrics to OpenTelemetry's global
            providers (see :mod:`~requests_bloxs_errors.telemetry`): None (on when
            the ``otel`` extra is installed, unless ``RBE_TELEMETRY=off``), True
            (needs the extra) or False.
        :param clock: where the adapter's time comes from: deadlines, and the
            waits between attempts (:data:`~requests_bloxs_errors.clock.SYSTEM`;
            a :class:`~requests_bloxs_errors.clock.FakeClock` in tests).
        :param pool_connections: connection pools to cache, as for
            :class:`~requests.adapters.HTTPAdapter`.
        :param pool_maxsize: connections kept per pool, likewise.
        :param pool_block: wait for a free connection instead of opening more.
        :raises TypeError, ValueError: on bad configuration.
        """
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
                    f"got {safe_for_message(prefix)}. "
                    "Use rbe.mount(session, 'https://acme.bloxs.io/', auth=...)"
                )
            if self._prefix.scheme == "http" and not is_loopback(self._prefix.host):
                _warn_plain_http(self._prefix)
        self._hooks = Hooks.from_arguments(on_retry, on_reauth, on_give_up, on_alert)
        self._rate_limit = _rate_limit(rate_limit)
        self._breaker = _circuit_breaker(circuit_breaker)
        if self._breaker is not None and self._rate_limit is not None:
            # (its circuits are published where the rate limit shares its permits)
            self._breaker.publish_to(self._rate_limit.storage)
        self._outbox = _outbox(outbox)
        self._user_steps = check_steps(steps)
        self._telemetry_wanted = _telemetry(telemetry)
        if not isinstance(clock, Clock):
            raise TypeError(
                f"clock must have monotonic(), time() and sleep(), not {type(clock).__name__}"
            )
        self._clock = clock
        self._init_runtime()
        super().__init__(
            max_retries=self._policy,
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
        )

    def _init_runtime(self) -> None:
        """State that is rebuilt, never pickled."""
        self._fresh_refusals = FreshRefusals(self._clock)
        #: The adapter as ``HTTPAdapter.send`` sees it for one attempt (see _one_attempt).
        self._view = _one_attempt(self)
        #: What a credential signing for a call without a deadline sees (made once).
        self._scope = signing.Scope(
            frozenset({id(self._auth)}), None, self._rate_limit, self._clock
        )
        features: dict[str, Any] = {
            "credential": self._auth,
            "circuit_breaker": self._breaker,
            "rate_limit": self._rate_limit,
            "outbox": self._outbox,
            "extra": self._user_steps,
        }
        self._pipeline = Pipeline(steps_in_order(**features))
        #: The telemetry step, and the pipeline with it (used while an SDK is configured).
        self._telemetry: Telemetry | None = None
        self._traced = self._pipeline
        if self._telemetry_wanted:
            from .telemetry.step import Telemetry  # noqa: PLC0415 - loaded when wanted

            self._telemetry = Telemetry(self._clock, self._breaker, self._outbox)
            self._traced = Pipeline(steps_in_order(**features, telemetry=self._telemetry))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]  # requests has it; its stubs do not
        self._init_runtime()

    @property
    def rate_limit(self) -> RateLimit | None:
        """The :class:`~requests_bloxs_errors.RateLimit` pacing this adapter, or None."""
        return self._rate_limit

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        """The :class:`~requests_bloxs_errors.CircuitBreaker` of this adapter, or None."""
        return self._breaker

    @property
    def outbox(self) -> Outbox | None:
        """The :class:`~requests_bloxs_errors.Outbox` failed writes go to, or None."""
        return self._outbox

    @property
    def steps(self) -> tuple[object, ...]:
        """Every step of this adapter, in the order they run: the built-in features'
        (see :func:`~requests_bloxs_errors.pipeline.steps.steps_in_order`), then yours."""
        return self._pipeline.steps

    @property
    def clock(self) -> Clock:
        """Where this adapter's time comes from."""
        return self._clock

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

    # -- pools: the deadline covers the wait for a response head ---------------

    def init_poolmanager(
        self,
        connections: int,
        maxsize: int,
        block: bool = DEFAULT_POOLBLOCK,
        **pool_kwargs: Any,
    ) -> None:
        """As :class:`~requests.adapters.HTTPAdapter` makes it, with pools whose
        wait for a response head ends by the call's deadline (see
        :mod:`~requests_bloxs_errors.pipeline.headwait`)."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        watch_heads(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """As :class:`~requests.adapters.HTTPAdapter` makes it, with pools whose
        wait for a response head ends by the call's deadline."""
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        watch_heads(manager)
        return manager

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
        :raises requests.RequestException: for transport failures, as requests
            raises them.
        """
        if not logger.isEnabledFor(logging.DEBUG):  # the usual case
            return self._send(request, stream, timeout, verify, cert, proxies)
        began = self._clock.monotonic()
        response = self._send(request, stream, timeout, verify, cert, proxies)
        tried = len(getattr(response, "_bloxs_history", ())) or (0 if is_local(response) else 1)
        logger.debug(
            "%s %s -> %d in %.3fs (%d attempt%s)%s",
            request.method,
            redact_url(request.url),
            response.status_code,
            self._clock.monotonic() - began,
            tried,
            "" if tried == 1 else "s",
            _traced(response),
        )
        return response

    def _send(  # noqa: PLR0917 - send()'s own arguments
        self,
        request: PreparedRequest,
        stream: bool,
        timeout: TimeoutArg,
        verify: bool | str,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None,
        proxies: Mapping[str, str] | None,
    ) -> Response:
        """:meth:`send`, without its DEBUG line: the call, and the one way it ends.

        However the attempts end (a response, a refusal, a transport failure,
        or an exception in the middle: a header that cannot be encoded, a body
        generator that raised, a signal handler's timeout), every step hears of
        it once and gives back what it took; the exception then reaches the
        caller unchanged.
        """
        call = self._start(request, timeout)
        # (a plain adapter has no step: the places are skipped, not called empty)
        steps = call.pipeline if call.pipeline is not None and call.pipeline.steps else None
        if steps is None:  # nothing was taken, so nothing to give back
            return self._attempts(call, None, stream, timeout, verify, cert, proxies)
        try:
            return self._attempts(call, steps, stream, timeout, verify, cert, proxies)
        except BaseException as exc:
            if not call.ended:  # it left the loop in the middle
                self._interrupted(call, steps, exc)
            raise

    def _attempts(  # noqa: PLR0917 - send()'s own arguments
        self,
        call: Call,
        steps: Pipeline | None,
        stream: bool,
        timeout: TimeoutArg,
        verify: bool | str,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None,
        proxies: Mapping[str, str] | None,
    ) -> Response:
        """The attempt loop; every exit that is not an exception in the middle ends
        the call through the steps (``on_outcome`` or ``on_refused``)."""
        request = call.request
        if steps is not None:
            answer = self._admit(call, steps)
            if answer is not None:
                return answer
        view = self._view
        while True:
            if steps is not None:
                try:
                    steps.before_attempt(call)
                except BloxsError as refusal:  # not sent: no permit in time
                    return self._refused(call, refusal)
            outgoing = request
            if call.signed:
                try:
                    outgoing = self._sign(call)
                except Exception as unsigned:  # no credentials to be had: the token
                    if not self._raise_errors and _refused_here(unsigned):
                        return self._refused(call, unsigned)  # (a local reply, as any refusal)
                    self._not_signed(call, unsigned)  # endpoint failed or refused, a deadline
                    raise
            attempt_timeout: Any = timeout
            if call.deadline is not None:
                attempt_timeout = _attempt_timeout(timeout, call.time_left() or 0.0)
            call.in_flight = True
            try:
                with head_deadline(call.deadline, call.clock):  # (no-op without a deadline)
                    response = HTTPAdapter.send(
                        view,
                        outgoing,
                        stream=stream,
                        timeout=attempt_timeout,
                        verify=verify,
                        cert=cert,
                        proxies=proxies,
                    )
            except RequestException as exc:
                call.in_flight = False
                if self._after_failure(call, exc):
                    continue
                raise  # requests' own exception, as a plain HTTPAdapter raises it
            except Urllib3Error as exc:  # the few that requests lets through untranslated
                call.in_flight = False
                if self._after_failure(call, exc):
                    continue
                raise ConnectionError(exc, request=outgoing) from exc
            call.in_flight = False
            status = response.status_code
            if status < 400 or status >= 600:  # 600 on: no HTTP error to requests
                if steps is None and not (call.journal or call.paced or call.superseded):
                    return response  # the usual case: at once, untouched
                return self._success(call, response)
            decision, rule = self._decide(call, response)
            if decision.action is Action.RETRY:
                body = drain_error_body(response, call.deadline, call.clock)
                self._wait(
                    call, decision, status, rule.kind, None, trace_id=trace_id_of(response, body)
                )
                continue
            if decision.action is Action.REAUTH and self._reauth(call, outgoing, response, rule):
                continue
            return self._final(call, response, decision)

    def _admit(self, call: Call, steps: Pipeline) -> Response | None:
        """Once per call, before its first attempt: None to send it, else the call's
        answer (a local reply for a refusal, or a script's token request answered)."""
        try:
            answer = steps.before_call(call)
        except BloxsError as refusal:  # not sent: an open circuit
            return self._refused(call, refusal)
        if answer is not None:  # answered without sending: a script's token request
            steps.on_outcome(call, answer, None)
        return answer

    def _interrupted(self, call: Call, steps: Pipeline, exc: BaseException) -> None:
        """An exception left the loop in the middle: the steps hear of it as the call's
        final failure (kind ``"interrupted"``), so that each gives back what it took."""
        failure = interrupted(exc)
        steps.on_outcome(call, None, failure)
        logger.debug(
            "%s %s was interrupted by %s%s",
            call.method,
            call.url,
            failure.kind,
            " while an attempt was in flight" if call.in_flight else "",
        )

    def _start(self, request: PreparedRequest, timeout: Any = None) -> Call:
        clock = self._clock
        auth = self._auth
        scope = signing.current()
        telemetry = self._telemetry
        pipeline = self._traced if telemetry is not None and telemetry.active() else self._pipeline
        if scope is None and self._deadline is None:  # the usual case, kept short
            return Call(
                request,
                retry=self._policy,
                deadline=None,
                hooks=self._hooks,
                signed=auth is not None
                and self._prefix is not None
                and self._prefix.matches(request.url),
                max_retry_after=self._policy.max_retry_after,
                pipeline=pipeline,
                timeout=timeout,
                clock=clock,
            )
        deadline = None if self._deadline is None else clock.monotonic() + self._deadline
        if scope is not None:  # a token request, sent from inside a credential
            # it inherits the deadline of the call that needs the token (read on
            # that call's clock: carried over to this adapter's, the credential's)
            deadline = signing.earliest(
                deadline, signing.on_clock(scope.deadline, scope.clock, clock)
            )
            if scope.rate_limit is not None and self._rate_limit is None:
                # a token request counts against the limit of the call it serves
                pipeline = Pipeline(steps_in_order(rate_limit=scope.rate_limit)).with_steps(
                    pipeline.steps
                )
        signed = (
            auth is not None
            and self._prefix is not None
            and self._prefix.matches(request.url)
            # a token request made from inside this credential's own fetch goes
            # out unsigned: signing it would wait for the fetch it is part of
            and (scope is None or id(auth) not in scope.credentials)
        )
        return Call(
            request,
            retry=self._policy,
            deadline=deadline,
            hooks=self._hooks,
            signed=signed,
            max_retry_after=self._policy.max_retry_after,
            pipeline=pipeline,
            timeout=timeout,
            for_credential=scope is not None,
            clock=clock,
        )

    def _sign(self, call: Call) -> PreparedRequest:
        """A signed copy of the caller's request, or the request itself when unsigned.

        Shallow: only the headers change, so only they are copied (the caller's
        request, and any redirect requests builds from it, stay unsigned).
        """
        if not call.signed:
            return call.request
        auth = self._auth
        assert auth is not None
        request = call.request
        signed = object.__new__(type(request))  # copy.copy, without its generic machinery
        signed.__dict__.update(request.__dict__)
        headers = request.headers
        if type(headers) is CaseInsensitiveDict:  # its own store of the same pairs: what
            copy = object.__new__(CaseInsensitiveDict)  # copy() makes, without lower-casing
            copy._store = headers._store.copy()  # type: ignore[attr-defined]  # every name again
            signed.headers = copy
        else:
            signed.headers = headers.copy()
        if call.deadline is None and signing.current() is None:  # the usual case
            token = signing.enter(self._scope)
            try:
                auth.sign(signed)
            finally:
                signing.leave(token)
        else:
            with signing.signing(auth, call.deadline, self._rate_limit, self._clock):
                auth.sign(signed)
        return signed

    def _decide(self, call: Call, response: Response) -> tuple[Decision, Rule]:
        """What follows an error response (status 400 to 599)."""
        status = response.status_code
        retry_after = retry_after_from_headers(response.headers, now=call.clock.time())
        rule = rule_for(status, retry_after is not None)
        assert rule is not None  # send() only asks about 400 to 599
        assert call.pipeline is not None
        hold = call.pipeline.after_response(call, response, rule, retry_after)
        call.fresh_refused = (
            call.signed and rule.reauth and (call.method, call.url) in self._fresh_refusals
        )
        context = call.context(
            status=status,
            rule=rule,
            retry_after=retry_after,
            response=response.raw,
            hold=hold,
            max_hold=self._rate_limit.max_wait if self._rate_limit is not None else None,
        )
        return decide(context), rule

    def _wait(
        self,
        call: Call,
        decision: Decision,
        status: int | None,
        kind: str,
        failure: Failure | None,
        *,
        trace_id: str | None = None,
    ) -> None:
        """Record and announce a retry, wait for it, and rewind the body."""
        call.retrying(decision, status, kind, failure, trace_id)
        self._clock.sleep(decision.wait)
        call.rewind()

    def _after_failure(self, call: Call, exc: RequestException | Urllib3Error) -> bool:
        """Decide about an attempt that got no response; True to send again.

        (A method of its own, so that no frame of :meth:`send` holds the
        exception: a reference there would keep it, its traceback and the
        failed connection's socket alive in a cycle until the garbage
        collector ran.)
        """
        failure = failure_of(exc)
        assert call.pipeline is not None
        call.pipeline.after_failure(call, failure)
        decision = decide(call.context(failure=failure))
        release(exc)
        if decision.action is Action.RETRY:
            self._wait(call, decision, None, failure.kind, failure)
            return True
        history = call.finish(decision, None, failure.kind)
        call.pipeline.on_outcome(call, None, failure)
        with contextlib.suppress(AttributeError):  # rbe.attempts(exc) reads them
            exc._bloxs_history = history  # type: ignore[union-attr]
            exc.outbox_id = call.outbox_id  # type: ignore[union-attr]
        return False

    def _refused(self, call: Call, refusal: BloxsError) -> Response:
        """A step refused to send the call (an open circuit, no permit in time): the
        steps see it, then the caller gets the typed error when errors are raised,
        else a local reply that says the same (see
        :func:`~requests_bloxs_errors.errors.responses.local_reply`)."""
        self._not_signed(call, refusal)  # (on_refused: the steps' one word on this call)
        call.refused(refusal)  # (ERROR, and the give-up hooks)
        if self._raise_errors:
            raise refusal
        return local_reply(call.request, refusal, call.outbox_id)

    def _not_signed(self, call: Call, refusal: BaseException) -> None:
        """The call ends unsent (a step refused it, or it could not be signed): let the
        steps see it (an outbox keeps the write, a breaker counts a host that is down)."""
        assert call.pipeline is not None
        call.pipeline.on_refused(call, refusal)
        with contextlib.suppress(AttributeError):
            refusal.outbox_id = call.outbox_id  # type: ignore[attr-defined]

    def _success(self, call: Call, response: Response) -> Response:
        if call.journal or call.paced:  # only a call that waited pays for its story
            history = call.finish(Decision(Action.RETURN), response.status_code, "ok")
            response._bloxs_history = history  # type: ignore[attr-defined]
            self._keep_retries(call, response)
        if call.superseded:
            response.history[:0] = call.superseded
        assert call.pipeline is not None
        call.pipeline.on_outcome(call, response, None)
        return response

    def _reauth(
        self, call: Call, outgoing: PreparedRequest, response: Response, rule: Rule
    ) -> bool:
        """Refresh the credentials after a 401/403; True to resend at once."""
        auth = self._auth
        assert auth is not None
        # its first 64 KiB stay readable in response.history; the connection is freed
        body, _ = read_error_body(
            response, deadline=call.deadline, keep_rest=False, clock=call.clock
        )
        response.close()
        call.reauthed = True
        call.hooks.reauth(
            ReauthEvent(
                call.method, call.url, response.status_code, rule.kind, trace_id_of(response, body)
            )
        )
        try:
            with signing.signing(auth, call.deadline, self._rate_limit, self._clock):
                resend = auth.refresh(outgoing, response)
        except Exception as unsigned:  # no fresh credentials: the token endpoint is down,
            self._not_signed(call, unsigned)  # or refused them; the call ends unsent
            raise
        if not resend:
            return False
        call.record(response.status_code, rule.kind, 0.0, "reauth")
        call.supersede(response)
        call.rewind()
        return True

    def _final(self, call: Call, response: Response, decision: Decision) -> Response:
        """Classify the last response, record the call, raise or return it."""
        info = classify(response, deadline=call.deadline, clock=call.clock)
        if info is None:  # pragma: no cover - rule_for already vouched for the status
            return response
        if info.reauth:
            if call.reauthed:
                self._fresh_refusals.add(call.method, call.url)
            refused = call.reauthed or call.fresh_refused
            situation = "refused_fresh" if refused else None if call.signed else "unsigned"
            info = dataclasses.replace(info, action=advice(info.rule, situation))
        history = call.finish(
            decision,
            info.status,
            info.kind,
            retry_after=info.retry_after,
            trace_id=info.trace_id,
        )
        if call.superseded:
            response.history[:0] = call.superseded
        self._keep_retries(call, response)
        response.__class__ = BloxsResponse
        assert isinstance(response, BloxsResponse)
        response._bloxs_info = info
        response._bloxs_history = history
        assert call.pipeline is not None
        call.pipeline.on_outcome(call, response, None)
        response._bloxs_outbox_id = call.outbox_id
        if self._raise_errors:
            raise error_for(response, info, history)
        return response

    def _keep_retries(self, call: Call, response: Response) -> None:
        """Leave the call's ``Retry`` on ``response.raw.retries``, as urllib3 does."""
        raw = response.raw
        if call.retry is not self._policy and raw is not None and hasattr(raw, "retries"):
            raw.retries = call.retry

    if urllib3.__version__.startswith("1."):  # type: ignore[attr-defined]  # (2.x enforces it)

        def build_response(self, req: PreparedRequest, resp: Any) -> Response:
            """As requests builds it, but a body shorter than its ``Content-Length``
            raises instead of passing silently (urllib3 1.26's default is to let it)."""
            resp.enforce_content_length = True
            return super().build_response(req, resp)


#: What a string argument stands for, made once per process: every adapter
#: given ``rate_limit="bloxs"``, or one outbox URL, shares one object (its
#: permits; its file, connection and alerts), however many sessions
#: ``install()`` or the caller builds. (Rate-limit keys carry each API's
#: origin, so two environments never share a quota.)
_SHARED: dict[tuple[str, str], Any] = {}
_SHARED_LOCK = threading.Lock()


def _shared(kind: str, name: str, make: Any) -> Any:
    with _SHARED_LOCK:
        found = _SHARED.get((kind, name))
        if found is None:
            found = _SHARED[(kind, name)] = make()
        return found


def _refused_here(error: BaseException) -> TypeGuard[BloxsError]:
    """Whether ``error`` is a refusal this client made without sending (no permit in
    time for the token request, its circuit open), not an answer of the token
    endpoint: a call that errors are not raised for then gets the local reply."""
    return isinstance(error, (RateLimitError, CircuitOpenError)) and (
        error.response is None or is_local(error.response)
    )


def _telemetry(telemetry: object) -> bool:
    """Whether an adapter reports to OpenTelemetry (see its ``telemetry`` argument).

    With ``telemetry=None``, ``RBE_TELEMETRY`` decides, read as every on/off
    variable is (:func:`~.switches.switch`): unset or empty, on when the ``otel``
    extra is installed; on without the extra, one WARNING a process says so.

    :raises ValueError: ``RBE_TELEMETRY`` is not an on/off word.
    """
    if telemetry is not None and not isinstance(telemetry, bool):
        raise TypeError(f"telemetry must be True, False or None, not {type(telemetry).__name__}")
    if telemetry is False:
        return False
    installed = otel_installed()
    if telemetry is True:
        if not installed:
            from .storage.base import missing_extra  # noqa: PLC0415 - only to say what is missing

            raise missing_extra("otel", "opentelemetry-api", "telemetry=True")
        return True
    value = os.environ.get("RBE_TELEMETRY", "").strip()
    if not value:
        return installed
    if not switch("RBE_TELEMETRY", value):
        return False
    if not installed and not _SAID_NO_OTEL:
        from .storage.base import missing_extra  # noqa: PLC0415 - only to say what is missing

        _SAID_NO_OTEL.append(True)
        logger.warning(
            "%s; telemetry stays off",
            missing_extra("otel", "opentelemetry-api", f"RBE_TELEMETRY={value}"),
        )
    return installed


#: Whether this process said that RBE_TELEMETRY asks for an extra that is missing.
_SAID_NO_OTEL: list[bool] = []


def _rate_limit(value: object) -> RateLimit | None:
    if value is None:
        return None
    from .resilience.ratelimit import RateLimit  # noqa: PLC0415 - loaded when used

    if isinstance(value, RateLimit):
        return value
    if value in ("bloxs", "dealcloud"):
        limit: RateLimit = _shared("rate_limit", str(value), getattr(RateLimit, str(value)))
        return limit
    raise ValueError(
        f"rate_limit must be an rbe.RateLimit, 'bloxs', 'dealcloud' or None; got {value!r}"
    )


def _circuit_breaker(value: object) -> CircuitBreaker | None:
    if value is None:
        return None
    from .resilience.breaker import CircuitBreaker  # noqa: PLC0415 - loaded when used

    if not isinstance(value, CircuitBreaker):
        raise TypeError(
            f"circuit_breaker must be an rbe.CircuitBreaker or None, not {type(value).__name__}"
        )
    return value


def _outbox(value: object) -> Outbox | None:
    if value is None:
        return None
    from .resilience.outbox import Outbox  # noqa: PLC0415 - loaded when used

    if isinstance(value, str):
        url = value
        value = _shared("outbox", url, lambda: Outbox(url))
    if not isinstance(value, Outbox):
        from .storage import OutboxStore, accepted  # noqa: PLC0415 - loaded when used

        raise TypeError(
            f"outbox must be an rbe.Outbox, a storage URL ({accepted(OutboxStore)}) or None, "
            f"not {type(value).__name__}"
        )
    return value


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


def mount(
    session: Session, prefix: str = "https://", **adapter_kwargs: Unpack[AdapterOptions]
) -> BloxsAdapter:
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
