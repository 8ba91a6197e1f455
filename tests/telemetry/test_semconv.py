"""``url.full`` (issue 26): every part of a query is redacted, a part without ``=`` too."""

from __future__ import annotations

import logging

import requests_bloxs_errors as rbe

from ..helpers.otel import sdk
from ..helpers.server import Reply

TOKEN = "eyJhbGciOiJIUzI1NiJ9-s3cret"


def test_15_a_query_part_without_equals_is_redacted_in_spans_and_logs(server, session, caplog):
    server.route("GET", "/items", Reply(200, "ok"))
    rbe.mount(session, "http://")
    with sdk() as otel, caplog.at_level(logging.DEBUG, logger="requests_bloxs_errors"):
        assert session.get(server.url(f"/items?{TOKEN}&page=2&flag")).ok
        (span,) = [
            s for s in otel.spans() if s.instrumentation_scope.name == "requests_bloxs_errors"
        ]
    assert span.attributes["url.full"] == server.url("/items?REDACTED&page=REDACTED&REDACTED")
    logged = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("requests_bloxs_errors")
    )
    assert server.url("/items") in logged  # the call's DEBUG line names the URL...
    assert TOKEN not in logged  # ...never its query
    assert TOKEN not in str(span.to_json())
