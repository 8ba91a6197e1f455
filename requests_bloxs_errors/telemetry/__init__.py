"""What the adapter tells OpenTelemetry: a span per attempt and a few metrics.

With the ``otel`` extra (``opentelemetry-api``) installed, every adapter
emits through the GLOBAL tracer and meter providers, under the
instrumentation scope ``requests_bloxs_errors``: whatever the application
(or ``opentelemetry-instrument``) configures receives it, and nothing is
recorded, at a cost of well under a microsecond a call, while no SDK is set
up. ``telemetry=False`` (on the adapter, :func:`~requests_bloxs_errors.mount`
and ``install()``) or ``RBE_TELEMETRY=off`` switch it off.

Traces follow the HTTP client semantic conventions: one span per attempt,
kind CLIENT, named by the method, with ``http.request.method``, ``url.full``
(credentials removed, query values ``REDACTED``), ``server.address``,
``server.port``, ``http.response.status_code``, ``error.type`` on a failed
attempt, and ``http.request.resend_count`` (1, 2, ...) on every attempt after
the first, re-authenticated resends included. Spans are children of the
caller's current span (such as the one ``opentelemetry-instrumentation-requests``
opens per call). What happens between attempts is told by events on the span
of the attempt that caused it: ``rbe.retry`` (``rbe.wait.reason``,
``rbe.wait.duration``, ``rbe.error.kind``) and ``rbe.reauth``; a wait for a
rate-limit permit is an ``rbe.wait`` event on the attempt that waited. The
error body's trace id is ``rbe.error.trace_id``. A call refused before
sending (an open circuit, no permit in time) is an INTERNAL span
``rbe.refused`` with ``error.type`` set to its kind.

Metrics (names fixed):

``http.client.request.duration``
    histogram, seconds, one measurement per attempt, with the semantic
    conventions' attributes (method, server, scheme, status, ``error.type``);
``rbe.client.retries``
    counter of resends (retries and re-authenticated resends), by
    ``rbe.error.kind``;
``rbe.client.wait.duration``
    histogram, seconds, by ``rbe.wait.reason``: ``retry_after``, ``backoff``,
    ``rate_limit`` (a wait for a permit, or a hold), or ``circuit`` (a call the
    breaker refused: how long until it lets one through);
``rbe.client.token.requests``
    counter of requests sent to a token endpoint;
``rbe.client.circuit.open``
    observable gauge: 1 while the circuit of ``rbe.circuit.host`` is open, else 0;
``rbe.client.outbox.entries``
    observable gauge: the entries of each configured outbox, by ``rbe.outbox.state``.

:mod:`.step` is the pipeline step (it imports nothing of OpenTelemetry until
the application has); :mod:`.otel` holds the instruments; :mod:`.semconv`
the attributes.
"""

from __future__ import annotations

import importlib.util

__all__ = ["otel_installed"]


def otel_installed() -> bool:
    """Whether the ``otel`` extra (``opentelemetry-api``) is installed; nothing of it
    is imported."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False
