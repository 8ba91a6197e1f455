"""The OpenTelemetry side: a tracer and the instruments, from the global providers.

:func:`instruments` answers, for the providers configured now, the tracer and
the metric instruments to use (None while neither provider is configured:
then nothing is recorded at all). They are made once per pair of providers.
The observable gauges read the breakers and outboxes that adapters with
telemetry register (:func:`watch`), through weak references.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from .semconv import DURATION_BUCKETS

try:  # the provider the API answers while the application has configured none
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _UnsetMeters
except ImportError:  # pragma: no cover - an API without it: treat every provider as set
    _UnsetMeters = ()  # type: ignore[assignment,misc]

__all__ = [
    "CLIENT",
    "ERROR",
    "INTERNAL",
    "SCOPE",
    "Instruments",
    "enter",
    "error",
    "instruments",
    "leave",
    "watch",
]

CLIENT = SpanKind.CLIENT
INTERNAL = SpanKind.INTERNAL
#: The status of a span whose attempt failed (an error status code, or no response).
ERROR = Status(StatusCode.ERROR)


def error(description: str) -> Status:
    """An error status that says why."""
    return Status(StatusCode.ERROR, description)


def enter(span: trace.Span) -> object:
    """Make ``span`` the current one; the token for :func:`leave`."""
    return context.attach(trace.set_span_in_context(span))


def leave(token: object) -> None:
    """Undo :func:`enter`."""
    context.detach(token)  # type: ignore[arg-type]


#: The instrumentation scope.
SCOPE = "requests_bloxs_errors"


@dataclass(frozen=True)
class Instruments:
    """What to record with; a part is None when its provider is not configured."""

    tracer: trace.Tracer | None
    duration: metrics.Histogram | None
    retries: metrics.Counter | None
    waits: metrics.Histogram | None
    tokens: metrics.Counter | None


_lock = threading.Lock()
_made: tuple[object, object, Instruments | None] | None = None
_breakers: weakref.WeakSet[Any] = weakref.WeakSet()
_outboxes: weakref.WeakSet[Any] = weakref.WeakSet()


def instruments() -> Instruments | None:
    """The tracer and instruments for the global providers now; None while no SDK
    is configured for either."""
    global _made  # noqa: PLW0603 - one set per pair of providers
    tracers = trace.get_tracer_provider()
    meters = metrics.get_meter_provider()
    made = _made
    if made is not None and made[0] is tracers and made[1] is meters:
        return made[2]
    with _lock:
        found = _make(tracers, meters)
        _made = (tracers, meters, found)
    return found


def _make(tracers: trace.TracerProvider, meters: metrics.MeterProvider) -> Instruments | None:
    tracer = (
        None
        if isinstance(tracers, trace.ProxyTracerProvider)
        else tracers.get_tracer(SCOPE, __version__)
    )
    if isinstance(meters, _UnsetMeters):
        return None if tracer is None else Instruments(tracer, None, None, None, None)
    meter = meters.get_meter(SCOPE, __version__)
    duration = _histogram(
        meter,
        "http.client.request.duration",
        "Duration of HTTP client requests: one measurement per attempt.",
        DURATION_BUCKETS,
    )
    waits = _histogram(
        meter,
        "rbe.client.wait.duration",
        "Seconds a call waited before an attempt, or was told to wait, by rbe.wait.reason.",
        (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    )
    retries = meter.create_counter(
        "rbe.client.retries", unit="{retry}", description="Resends of a call, by rbe.error.kind."
    )
    tokens = meter.create_counter(
        "rbe.client.token.requests",
        unit="{request}",
        description="Requests sent to a token endpoint.",
    )
    meter.create_observable_gauge(
        "rbe.client.circuit.open",
        callbacks=[_circuits],
        unit="{circuit}",
        description="1 while the circuit of rbe.circuit.host is open (or probing), else 0.",
    )
    meter.create_observable_gauge(
        "rbe.client.outbox.entries",
        callbacks=[_entries],
        unit="{entry}",
        description="Entries kept in each configured outbox, by rbe.outbox.state.",
    )
    return Instruments(tracer, duration, retries, waits, tokens)


def _histogram(
    meter: metrics.Meter, name: str, description: str, buckets: tuple[float, ...]
) -> metrics.Histogram:
    try:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # an API before 1.23: no advice
        return meter.create_histogram(name, unit="s", description=description)


def watch(breaker: object | None, outbox: object | None) -> None:
    """Report ``breaker``'s circuits and ``outbox``'s entries in the gauges, while they live."""
    if breaker is not None:
        _breakers.add(breaker)
    if outbox is not None:
        _outboxes.add(outbox)


def _circuits(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for breaker in list(_breakers):
        for host, state in breaker.states().items():
            yield metrics.Observation(int(state != "closed"), {"rbe.circuit.host": host})


def _entries(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for outbox in list(_outboxes):
        try:
            counts = outbox.counts()
        except Exception:
            continue
        for state in ("queued", "dead"):
            yield metrics.Observation(
                counts.get(state, 0),
                {"rbe.outbox.state": state, "rbe.outbox": outbox.storage.shown},
            )
