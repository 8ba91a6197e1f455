"""Telemetry observes and never decides (issue 26, points 7 and 9): a span processor
that raises changes no call, and the metrics are complete without tracing (the
docs' Prometheus set-up: a meter provider only)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

import requests_bloxs_errors as rbe

from ..helpers import otel
from ..helpers.server import Reply, ScriptServer

TOKEN = Reply(200, json.dumps({"token": "t-1"}), {"Content-Type": "application/json"})


class Raising(SpanProcessor):
    """A span processor that fails at every turn (a broken exporter, a bug)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("span processor broke")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("span processor broke")


@pytest.fixture
def broken_tracing() -> Iterator[None]:
    otel.reset()
    provider = TracerProvider()
    provider.add_span_processor(Raising())
    trace.set_tracer_provider(provider)
    try:
        yield
    finally:
        provider.shutdown()
        otel.reset()


@pytest.fixture
def metrics_only() -> Iterator[SimpleNamespace]:
    with otel.sdk(tracing=False) as recorded:
        yield recorded


def test_7_a_span_processor_that_raises_changes_no_call(
    broken_tracing: None, server: ScriptServer, session: requests.Session
) -> None:
    server.route("GET", "/x", Reply(503, "busy"), Reply(200, "ok"))
    rbe.mount(session, "http://", backoff_factor=0.01, telemetry=True)
    response = session.get(server.url("/x"), timeout=5)
    assert response.status_code == 200
    assert len(rbe.attempts(response)) == 2  # the retry happened as without telemetry
    assert len(server.seen("GET", "/x")) == 2


def _durations(recorded: SimpleNamespace) -> list[dict[str, Any]]:
    return [attributes for attributes, _ in recorded.metrics()["http.client.request.duration"]]


def test_9_durations_are_recorded_for_every_attempt_without_tracing(
    metrics_only: SimpleNamespace, server: ScriptServer, session: requests.Session
) -> None:
    server.route("GET", "/x", Reply(503, "busy"), Reply(200, "ok"))
    server.route("POST", "/Authorization", TOKEN)
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1"),
        backoff_factor=0.01,
    )
    assert session.get(server.url("/x"), timeout=5).status_code == 200
    seen = {
        (a["http.request.method"], a.get("http.response.status_code"))
        for a in _durations(metrics_only)
    }
    assert seen == {("GET", 503), ("GET", 200), ("POST", 200)}  # the token POST too


def test_9_a_fetch_caused_by_a_scripts_token_request_is_counted(
    metrics_only: SimpleNamespace, server: ScriptServer, session: requests.Session
) -> None:
    server.route("POST", "/Authorization", TOKEN)
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1"),
    )
    creds = {"apiKey": "key", "apiSecret": "adapter-secret-1"}
    assert session.post(server.url("/Authorization"), json=creds, timeout=5).local
    (counted,) = metrics_only.metrics()["rbe.client.token.requests"]
    assert counted[1].value == 1
