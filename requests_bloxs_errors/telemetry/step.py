"""The telemetry step: what a call does, as spans and measurements.

:class:`Telemetry` joins an adapter's pipeline only while the application has
configured an OpenTelemetry SDK (:meth:`Telemetry.active`, checked at most
once a second): until then no OpenTelemetry module is imported on its behalf
and a call pays for one clock reading. See the package docstring for what is
emitted.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ..events import logger
from ..pipeline.steps import Step
from .semconv import full_url, request_attributes

if TYPE_CHECKING:
    from requests import Response

    from ..clock import Clock
    from ..errors.table import Rule
    from ..pipeline.call import Call
    from ..pipeline.failures import Failure
    from .otel import Instruments

__all__ = ["RECHECK", "Telemetry"]

#: Seconds between looks at whether an SDK has been configured (or replaced).
RECHECK = 1.0
_OTEL = ("opentelemetry.trace", "opentelemetry.metrics")
#: :mod:`.otel`, once a step found an SDK (it imports OpenTelemetry).
_api: Any = None


class _Traced:
    """One call's telemetry: its attributes, and the attempt in flight."""

    __slots__ = (
        "attempts",
        "attributes",
        "current",
        "ended",
        "error",
        "span",
        "started",
        "status",
        "url",
    )

    def __init__(self, call: Call) -> None:
        url = call.request.url or ""
        self.attributes = request_attributes(call.method, url)
        self.url = full_url(url)
        self.attempts = 0
        self.span: Any = None  # the attempt's span, until it is closed
        self.started = 0.0  # perf_counter() when the attempt began
        self.ended: int | None = None  # time_ns() when it ended; None while in flight
        self.status: int | None = None
        self.error: str | None = None
        self.current: object = None  # the context token while the span is the current one


class Telemetry(Step):
    """The step that reports calls to OpenTelemetry's global providers.

    It only observes (``observes``): a span processor, exporter or meter that
    raises is logged and ignored at every place, and never changes a call.

    :param clock: where the checks for a configured SDK take their time from.
    :param breaker: a circuit breaker to report in ``rbe.client.circuit.open``.
    :param outbox: an outbox to report in ``rbe.client.outbox.entries``.
    """

    observes = True

    def __init__(self, clock: Clock, breaker: object = None, outbox: object = None) -> None:
        self._clock = clock
        self._watched = (breaker, outbox)
        self._next_check = float("-inf")
        self._found: Instruments | None = None

    def active(self) -> bool:
        """Whether an SDK is configured to receive what this step records."""
        now = self._clock.monotonic()
        if now < self._next_check:
            return self._found is not None
        self._next_check = now + RECHECK
        modules = sys.modules
        if _OTEL[0] not in modules and _OTEL[1] not in modules:
            self._found = None  # nothing has configured OpenTelemetry in this process
            return False
        global _api  # noqa: PLW0603 - one module, loaded once
        try:
            from . import otel  # noqa: PLC0415 - the application has loaded OpenTelemetry

            _api = otel
            found = otel.instruments()
            if found is not None and self._found is None:
                otel.watch(*self._watched)
        except Exception:  # a provider that fails to make instruments: report nothing
            logger.exception("OpenTelemetry's providers raised; telemetry is off for %gs", RECHECK)
            found = None
        self._found = found
        return found is not None

    # -- the places --------------------------------------------------------------

    def before_call(self, call: Call) -> None:
        """Start the call's record (nothing is emitted yet)."""
        if self._found is not None:
            call.state[self] = (self._found, _Traced(call))

    def before_attempt(self, call: Call) -> None:
        """Close the previous attempt's span; open this attempt's."""
        held = call.state.get(self)
        if held is None:
            return
        found, traced = held
        self._close(found, traced, call)
        traced.attempts += 1
        traced.ended = traced.status = traced.error = None
        paced = call.paced
        if call.for_credential and found.tokens is not None:
            found.tokens.add(1, _server(traced.attributes))
        if paced > 0 and found.waits is not None:
            found.waits.record(paced, {"rbe.wait.reason": "rate_limit"})
        if found.tracer is not None:
            attributes: dict[str, Any] = {**traced.attributes, "url.full": traced.url}
            if traced.attempts > 1:
                attributes["http.request.resend_count"] = traced.attempts - 1
            method = traced.attributes["http.request.method"]
            span = found.tracer.start_span(
                "HTTP" if method == "_OTHER" else str(method),
                kind=_api.CLIENT,
                attributes=attributes,
            )
            if paced > 0:
                span.add_event(
                    "rbe.wait", {"rbe.wait.reason": "rate_limit", "rbe.wait.duration": paced}
                )
            traced.span = span
            # while the attempt is in flight its span is the current one: a token request
            # made to sign it, or urllib3's own instrumentation, nests under it
            traced.current = _api.enter(span)
        traced.started = time.perf_counter()

    def after_response(
        self, call: Call, response: Response, rule: Rule, retry_after: float | None
    ) -> None:
        """The attempt got an error response: it ended now."""
        held = call.state.get(self)
        if held is not None:
            status = response.status_code
            self._ended(held[0], held[1], status, str(status))

    def after_failure(self, call: Call, failure: Failure) -> None:
        """The attempt got no response: it ended now."""
        held = call.state.get(self)
        if held is not None:
            self._ended(held[0], held[1], None, failure.kind)

    def on_outcome(self, call: Call, response: Response | None, failure: Failure | None) -> None:
        """The call is over: end the last attempt's span."""
        held = call.take(self)
        if held is None:
            return
        found, traced = held
        if traced.attempts and traced.ended is None:  # the last attempt ends with the call
            if response is not None:  # (a success, or an error response not retried)
                status = response.status_code
                self._ended(found, traced, status, str(status) if status >= 400 else None)
            elif failure is not None:  # an exception in the middle (kind "interrupted")
                self._ended(found, traced, None, failure.kind)
        info = getattr(response, "_bloxs_info", None)
        if info is not None and traced.span is not None:
            traced.span.set_attribute("rbe.error.kind", info.kind)
            if info.trace_id:
                traced.span.set_attribute("rbe.error.trace_id", info.trace_id)
        self._close(found, traced, call)

    def on_refused(self, call: Call, error: BaseException) -> None:
        """The call ended unsent: an ``rbe.refused`` span says why."""
        held = call.take(self)
        if held is None:  # refused before this step's before_call (an open circuit)
            if self._found is None:
                return
            held = (self._found, _Traced(call))
        found, traced = held
        kind = getattr(error, "kind", None) or type(error).__name__
        if traced.span is not None and traced.ended is None:  # refused after it began
            self._ended(found, traced, None, kind, measure=False)
        self._close(found, traced, call)
        wait = getattr(error, "retry_after", None)
        if kind == "circuit_open" and wait is not None and found.waits is not None:
            found.waits.record(wait, {"rbe.wait.reason": "circuit"})
        if found.tracer is not None:
            attributes: dict[str, Any] = {
                **traced.attributes,
                "url.full": traced.url,
                "error.type": kind,
            }
            if wait is not None:
                attributes["rbe.wait.duration"] = wait
            span = found.tracer.start_span("rbe.refused", kind=_api.INTERNAL, attributes=attributes)
            span.set_status(_api.error(str(error)[:200]))
            span.end()

    # -- the attempt's span ------------------------------------------------------------

    @staticmethod
    def _ended(
        found: Instruments,
        traced: _Traced,
        status: int | None,
        error: str | None,
        *,
        measure: bool = True,
    ) -> None:
        """The attempt in flight ended (a response, or a failure): measure it."""
        _leave(traced)
        traced.ended = time.time_ns()
        traced.status, traced.error = status, error
        if measure and found.duration is not None:
            attributes: dict[str, Any] = dict(traced.attributes)
            if status is not None:
                attributes["http.response.status_code"] = status
            if error is not None:
                attributes["error.type"] = error
            found.duration.record(time.perf_counter() - traced.started, attributes)
        span = traced.span
        if span is not None:
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None:
                span.set_attribute("error.type", error)

    @staticmethod
    def _close(found: Instruments, traced: _Traced, call: Call) -> None:
        """End the attempt's span, with what followed it (its journal entry: a retry
        and its wait, or a re-authentication), and count the resend."""
        span = traced.span
        journal = call.journal
        record = journal[traced.attempts - 1] if 0 < traced.attempts <= len(journal) else None
        if record is not None and record.decision in ("retry", "reauth"):
            kind = {"rbe.error.kind": record.kind}
            if found.retries is not None:
                found.retries.add(1, kind)
            if record.decision == "retry" and record.wait > 0 and found.waits is not None:
                found.waits.record(record.wait, {"rbe.wait.reason": record.wait_reason})
            if span is not None:
                details: dict[str, Any] = dict(kind)
                if record.decision == "retry":
                    details["rbe.wait.reason"] = record.wait_reason
                    details["rbe.wait.duration"] = record.wait
                span.add_event(f"rbe.{record.decision}", details, timestamp=traced.ended)
        _leave(traced)
        if span is None:
            return
        traced.span = None
        if traced.error is not None:
            span.set_status(_api.ERROR)
        span.end(end_time=traced.ended)


def _leave(traced: _Traced) -> None:
    """The attempt's span is no longer the current one."""
    token, traced.current = traced.current, None
    if token is not None:
        _api.leave(token)


def _server(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k in ("server.address", "server.port")}
