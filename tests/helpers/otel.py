"""OpenTelemetry's SDK set as the global providers for one test, with in-memory exporters.

The globals are reset before and after with OpenTelemetry's own test helpers
(``opentelemetry-test-utils``), so each test starts from "no SDK configured".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_metrics_globals, reset_trace_globals

__all__ = ["reset", "sdk"]


def reset() -> None:
    """No provider configured, as in a fresh process."""
    reset_trace_globals()
    reset_metrics_globals()


@contextmanager
def sdk(*, tracing: bool = True, metering: bool = True) -> Iterator[SimpleNamespace]:
    """Global providers with an in-memory span exporter and metric reader: ``spans()``
    gives the finished spans, ``metrics()`` our scope's data points by metric name."""
    reset()
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    tracers = meters = None
    if tracing:
        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracers)
    if metering:
        meters = MeterProvider(metric_readers=[reader])
        metrics.set_meter_provider(meters)
    try:
        yield SimpleNamespace(
            spans=exporter.get_finished_spans, metrics=lambda: points(reader) if meters else {}
        )
    finally:
        if tracers is not None:
            tracers.shutdown()
        if meters is not None:
            meters.shutdown()
        reset()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Our scope's metrics: name to ``[(attributes, data point)]``."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != "requests_bloxs_errors":
                continue
            for metric in scope.metrics:
                found[metric.name] = [(dict(p.attributes), p) for p in metric.data.data_points]
    return found
