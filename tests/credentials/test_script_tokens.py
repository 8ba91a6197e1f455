"""A script's own token request, answered with the adapter's token, works for the
call that asked (issue 26, point 6): the fetch it causes keeps that call's deadline
and is paced by the adapter's rate limit, in the ``authorization`` category."""

from __future__ import annotations

import json
import time

import pytest
import requests

import requests_bloxs_errors as rbe

from ..helpers.server import Reply, ScriptServer

CREDS = {"apiKey": "key", "apiSecret": "adapter-secret-1"}
TOKEN = Reply(200, json.dumps({"token": "t-1"}), {"Content-Type": "application/json"})


def test_6_the_fetch_a_scripts_token_request_causes_keeps_the_calls_deadline(
    server: ScriptServer, session: requests.Session
) -> None:
    # Real time: the token endpoint's slow answer meets a real read timeout.
    server.route("POST", "/Authorization", Reply(200, json.dumps({"token": "t"}), delay=20.0))
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1", max_retries=0),
        deadline=0.5,
        max_retries=0,
    )
    began = time.monotonic()
    with pytest.raises(requests.exceptions.RequestException):
        session.post(server.url("/Authorization"), json=CREDS, timeout=10)
    # (loose: it only catches the fetch waiting for the 20 s answer, past the deadline)
    assert time.monotonic() - began < 10.0


def test_6_the_fetch_a_scripts_token_request_causes_is_paced(
    server: ScriptServer, session: requests.Session
) -> None:
    server.route("POST", "/Authorization", TOKEN)
    limit = rbe.RateLimit.bloxs()
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(server.url(""), "key", "adapter-secret-1"),
        rate_limit=limit,
    )
    answer = session.post(server.url("/Authorization"), json=CREDS, timeout=5)
    assert answer.local
    assert answer.json()["token"] == "t-1"
    assert len(server.seen("POST", "/Authorization")) == 1  # the adapter's own fetch
    counted = {state.category: state.ended for state in limit.state()}
    assert counted == {"authorization": 1}
