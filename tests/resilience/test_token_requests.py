"""Token requests and replies the adapter makes itself, as the outbox and the breaker
see them (issue 26, points 2 and 5): a request that carries a secret is never kept,
and a local reply never counts as the host's health."""

from __future__ import annotations

import json

import pytest
import requests

import requests_bloxs_errors as rbe

from ..helpers.server import Reply, ScriptServer


def _kept(answer: requests.Response) -> int | None:
    """The outbox entry an error response says keeps its request (its typed error's)."""
    with pytest.raises(rbe.BloxsError) as caught:
        answer.raise_for_status()
    return caught.value.outbox_id


TOKEN = Reply(200, json.dumps({"token": "t-1"}), {"Content-Type": "application/json"})


# -- 2. no request to a token endpoint is ever kept -------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (
            "/Authorization",
            json.dumps({"apiKey": "k", "apiSecret": "script-secret-1"}),
            "application/json",
        ),
        (
            "/api/rest/v1/oauth/token",
            "grant_type=client_credentials&client_id=c&client_secret=script-secret-1",
            "application/x-www-form-urlencoded",
        ),
    ],
    ids=["bloxs", "dealcloud"],
)
def test_2_a_scripts_token_request_that_fails_is_never_kept(
    server: ScriptServer,
    session: requests.Session,
    outbox_url: str,
    rbe_logs: pytest.LogCaptureFixture,
    case: tuple[str, str, str],
) -> None:
    path, body, content_type = case
    server.route("POST", path, Reply(503, "down for a moment"))
    adapter = rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    headers = {"Content-Type": content_type}
    answer = session.post(server.url(path), data=body, headers=headers, timeout=5)
    assert answer.status_code == 503  # the server's answer, to the script
    assert _kept(answer) is None
    assert adapter.outbox is not None
    assert adapter.outbox.entries() == []  # nothing kept: no secret stored, none replayed
    assert len(server.seen("POST", path)) == 1
    (said,) = [r for r in rbe_logs.records if "not kept in the outbox" in r.getMessage()]
    assert "script-secret-1" not in said.getMessage()


def test_2_a_token_request_for_other_credentials_is_never_kept(
    server: ScriptServer, session: requests.Session, outbox_url: str
) -> None:
    server.route("POST", "/Authorization", TOKEN, Reply(503, "down"))
    adapter = rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1", max_retries=0),
        outbox=outbox_url,
        max_retries=0,
    )
    session.get(server.url("/x"), timeout=5)  # the adapter's own token: the first reply
    other = {"apiKey": "someone-else", "apiSecret": "script-secret-2"}
    answer = session.post(server.url("/Authorization"), json=other, timeout=5)
    assert answer.status_code == 503
    assert adapter.outbox is not None
    assert adapter.outbox.entries() == []


def test_2_a_write_without_a_secret_is_still_kept(
    server: ScriptServer, session: requests.Session, outbox_url: str
) -> None:
    # the same outbox keeps an ordinary write: the rule is about secrets, not POSTs
    server.route("POST", "/api/v1/records", Reply(503, "down"))
    adapter = rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    answer = session.post(server.url("/api/v1/records"), json={"name": "x"}, timeout=5)
    entry_id = _kept(answer)
    assert entry_id is not None
    assert adapter.outbox is not None
    assert [e.id for e in adapter.outbox.entries()] == [entry_id]


# -- 5. a reply the adapter makes itself is not the host's health -----------------------


def _script_token(session: requests.Session, server: ScriptServer) -> requests.Response:
    """What a legacy script does before each call: ask for its own token."""
    creds = {"apiKey": "key", "apiSecret": "adapter-secret-1"}
    return session.post(server.url("/Authorization"), json=creds, timeout=5)


def test_5_local_token_answers_do_not_keep_a_failing_hosts_circuit_closed(
    server: ScriptServer, session: requests.Session
) -> None:
    server.route("POST", "/Authorization", TOKEN)
    server.route("GET", "/x", Reply(503, "down"))
    breaker = rbe.CircuitBreaker(failures=3, open_for=60.0)
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1"),
        circuit_breaker=breaker,
        max_retries=0,
    )
    statuses = []
    for _ in range(8):
        assert _script_token(session, server).local  # answered with the adapter's token
        statuses.append(session.get(server.url("/x"), timeout=5).status_code)
    assert statuses == [503] * 8  # 3 from the server, then 5 local refusals
    assert len(server.seen("GET", "/x")) == 3
    assert breaker.state(server.url("")) == "open"


def test_5_local_token_answers_do_not_restart_the_outboxs_alerts(
    server: ScriptServer, session: requests.Session, outbox_url: str
) -> None:
    server.route("POST", "/Authorization", TOKEN)
    server.route("POST", "/api/v1/records", Reply(503, "down"))
    alerts: list[rbe.AlertEvent] = []
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1"),
        outbox=outbox_url,
        on_alert=alerts.append,
        max_retries=0,
    )
    kept = []
    for _ in range(4):
        _script_token(session, server)
        kept.append(_kept(session.post(server.url("/api/v1/records"), json={}, timeout=5)))
    assert None not in kept
    assert [a.kind for a in alerts] == ["queued"]  # one per outage, not one per write
