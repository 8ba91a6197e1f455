"""Scenario 1b in a process of its own: the cost of telemetry with an SDK configured.

``python -m benchmarks.telemetry URL TOTAL``: sets OpenTelemetry's SDK as the
global providers (a batch span processor into an in-memory exporter, and an
in-memory metric reader, so nothing leaves the process), then times paired
blocks of GETs through a ``BloxsAdapter`` (which reports to them) and one with
``telemetry=False``, and prints their per-call wall and CPU µs as JSON. A
process of its own: the global providers can be set once per process, and
scenario 1 measures the adapter without them.
"""

from __future__ import annotations

import json
import sys

import requests
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import requests_bloxs_errors as rbe


def main(argv: list[str]) -> int:
    from .__main__ import _paired_blocks

    url, total = argv[0], int(argv[1])
    exporter = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(tracers)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    sessions = {}
    for name, adapter in (
        ("BloxsAdapter, OpenTelemetry SDK (in-memory export)", rbe.BloxsAdapter()),
        ("BloxsAdapter, telemetry=False", rbe.BloxsAdapter(telemetry=False)),
    ):
        session = requests.Session()
        session.mount("http://", adapter)
        sessions[name] = session
    for session in sessions.values():
        for _ in range(50):
            session.get(url)
    times = _paired_blocks(
        {name: lambda session=session: session.get(url) for name, session in sessions.items()},
        total,
        20,
    )
    tracers.force_flush()
    spans = len(exporter.get_finished_spans())
    print(json.dumps({"times": times, "spans": spans}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
