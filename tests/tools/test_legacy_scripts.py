"""Zero surprise for legacy scripts (issue 19): refusals come back as responses, a
fleet of cron jobs fetches one token, both vendors at once, mistakes named before
the script starts, ``run`` speaks, and a Bloxs filter POST is a read.

Each test is named after the behaviour it holds; each section names the point of
the issue it came from. The fleet checks run real ``run`` processes against the
simulator.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.errors.responses import LOCAL_HEADER
from requests_bloxs_errors.simulator import COMPLEXES, Simulator
from requests_bloxs_errors.tools.envconfig import VARIABLES

from ..helpers.cli import CLI, launch, run
from ..helpers.redisserver import free_port
from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ROOT / "tests" / "helpers"
FILTER = COMPLEXES + "/filter"
ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"
#: The variables of the runner's own environment that must not reach a script under test.
CLEAN = {v.name: "" for v in VARIABLES}
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


def bloxs_env(sim: Simulator, **extra: str) -> dict[str, str]:
    key, secret = sim.bloxs_credentials
    return {"BLOXS_BASE_URL": sim.url, "BLOXS_API_KEY": key, "BLOXS_API_SECRET": secret, **extra}


# -- refusals come back as responses (point 1) -------------------------------------------


def _problem(response: requests.Response) -> dict[str, object]:
    assert response.headers["Content-Type"] == "application/problem+json"
    document = response.json()
    assert isinstance(document, dict)
    return document


def test_an_open_circuit_comes_back_as_a_local_503(server, session, outbox_url):
    clock = FakeClock()
    server.route("POST", "/orders", Reply(500, "down"))
    breaker = rbe.CircuitBreaker(failures=1, open_for=12.5, clock=clock)
    rbe.mount(session, "http://", circuit_breaker=breaker, outbox=outbox_url, max_retries=0)
    assert session.post(server.url("/orders"), data=b"first").status_code == 500
    clock.advance(0.3)
    prepared = requests.Request("POST", server.url("/orders?secret=s3"), data=b"second").prepare()
    reply = session.send(prepared)
    assert reply.status_code == 503
    assert not reply.ok
    assert reply.request is prepared  # the caller's own request
    assert reply.headers[LOCAL_HEADER] == "circuit_open"
    assert reply.headers["Retry-After"] == str(math.ceil(12.2))  # whole seconds, rounded up
    problem = _problem(reply)
    assert (problem["title"], problem["status"]) == ("Service Unavailable", 503)
    assert "not sent" in str(problem["detail"])
    assert "s3" not in reply.text
    (_, kept) = rbe.Outbox(outbox_url).entries()
    assert problem["outboxId"] == kept.id
    with pytest.raises(rbe.CircuitOpenError) as caught:
        reply.raise_for_status()
    assert caught.value.outbox_id == kept.id
    assert caught.value.retry_after == pytest.approx(12.2)
    assert rbe.attempts(reply) == ()  # nothing was sent
    assert len(server.seen()) == 1
    # a script that reads the raw stream, as some legacy code does, gets the same body
    assert json.loads(reply.raw.read()) == problem
    assert reply.raw.status == 503
    assert reply.raw.headers[LOCAL_HEADER] == "circuit_open"


def test_no_permit_in_time_comes_back_as_a_local_429(server, session):
    server.route("GET", "/x", Reply(200, "ok"))
    clock = FakeClock()
    limit = rbe.RateLimit({"*": (1, 10.0)}, max_wait=0.5, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    assert session.get(server.url("/x")).ok
    reply = session.get(server.url("/x"))
    assert reply.status_code == 429
    assert reply.headers[LOCAL_HEADER] == "rate_limited"
    assert reply.headers["Retry-After"] == "10"  # a period after the first ended
    assert _problem(reply)["status"] == 429
    assert "outboxId" not in _problem(reply)
    with pytest.raises(rbe.RateLimitError):
        reply.raise_for_status()
    assert len(server.seen()) == 1
    assert clock.sleeps == []  # refused at once


def test_with_raise_errors_the_typed_error_is_raised_at_once(server, session):
    server.route("GET", "/x", Reply(200, "ok"))
    clock = FakeClock()
    limit = rbe.RateLimit({"*": (1, 10.0)}, max_wait=0.5, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, raise_errors=True, clock=clock)
    session.get(server.url("/x"))
    with pytest.raises(rbe.RateLimitError) as caught:
        session.get(server.url("/x"))
    assert caught.value.response is None


# -- a script's own token requests (point 2) --------------------------------------------


def test_a_scripts_own_token_request_is_answered_with_the_adapters_token(sim):
    key, secret = sim.bloxs_credentials
    rbe.install(sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret))
    answers = [
        requests.post(
            sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=5
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [200] * 3
    assert all(a.headers[LOCAL_HEADER] == "token" for a in answers)
    tokens = {a.json()["token"] for a in answers}
    assert len(tokens) == 1
    token = tokens.pop()
    assert answers[0].json()["expiration"].endswith("Z")
    assert len(sim.token_requests()) == 1  # the adapter's own, once
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(sim.url + COMPLEXES, headers=bearer, timeout=5).status_code == 200
    assert sim.seen("GET", COMPLEXES)[0].headers["Authorization"] == f"Bearer {token}"


def test_a_token_request_for_other_credentials_goes_out_unchanged_and_unsigned(sim):
    key, secret = sim.bloxs_credentials
    rbe.install(sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, secret))
    requests.get(sim.url + COMPLEXES, timeout=5)  # the adapter holds a token now
    answer = requests.post(
        sim.url + "/Authorization", json={"apiKey": key, "apiSecret": "not-it"}, timeout=5
    )
    assert answer.status_code == 400  # the server's own answer, unchanged
    assert LOCAL_HEADER not in answer.headers
    script_request = sim.token_requests()[-1]
    assert "Authorization" not in script_request.headers
    assert json.loads(script_request.body)["apiSecret"] == "not-it"


def test_a_dealcloud_token_request_is_answered_in_its_own_format(sim):
    token_url, client_id, client_secret = sim.dealcloud_credentials
    auth = rbe.ClientCredentialsAuth(token_url, client_id, client_secret, scope="data")
    rbe.install(sim.url + "/", auth=auth)
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
        "scope": "data",
    }
    answer = requests.post(token_url, data=form, timeout=5)
    assert answer.status_code == 200
    document = answer.json()
    assert set(document) == {"access_token", "token_type", "expires_in"}
    assert document["token_type"] == "bearer"
    assert 800 < document["expires_in"] <= 900
    other_scope = requests.post(token_url, data={**form, "scope": "publish"}, timeout=5)
    assert LOCAL_HEADER not in other_scope.headers  # another scope: the server's answer
    assert len(sim.token_requests()) == 2


@pytest.mark.slow  # ten processes
def test_ten_cron_jobs_under_run_cause_one_token_request(tmp_path):
    with Simulator(window=60.0) as sim:  # 10 token requests a minute, then 429s without wait
        env = bloxs_env(
            sim,
            RBE_RATE_LIMIT="bloxs",
            RBE_STORAGE=f"sqlite:///{tmp_path}/quota.db",
            RBE_TOKEN_CACHE=f"sqlite:///{tmp_path}/tokens.db",
        )
        command = [*CLI, "run", str(HELPERS / "legacy_fleet.py"), sim.url]
        with ThreadPoolExecutor(10) as pool:
            jobs = list(pool.map(lambda _: launch(command, env, timeout=55), range(10)))
        statuses = [r.status for r in sim.requests]
    assert [job.returncode for job in jobs] == [0] * 10, [job.stdout for job in jobs]
    assert len(sim.token_requests()) == 1
    assert 429 not in statuses
    assert statuses.count(200) == 1 + 50


# -- both vendors (point 3) -------------------------------------------------------------


def test_bloxs_and_dealcloud_together_sign_each_api_with_its_own_credentials(tmp_path):
    with Simulator() as bloxs, Simulator() as dealcloud:
        token_url, client_id, client_secret = dealcloud.dealcloud_credentials
        env = {
            **bloxs_env(bloxs),
            "DEALCLOUD_TOKEN_URL": token_url,
            "DEALCLOUD_CLIENT_ID": client_id,
            "DEALCLOUD_CLIENT_SECRET": client_secret,
        }
        shown = launch([*CLI, "config"], env)
        assert shown.returncode == 0, shown.stderr
        assert f"prefix: {bloxs.url}/" in shown.stdout
        assert f"prefix: {dealcloud.url}/" in shown.stdout
        assert client_secret not in shown.stdout
        script = (
            "import requests, sys\n"
            f"a = requests.get({bloxs.url + COMPLEXES!r}, timeout=10).status_code\n"
            f"b = requests.get({dealcloud.url + ENTRIES!r}, timeout=10).status_code\n"
            "print(a, b)\n"
        )
        path = tmp_path / "both_vendors.py"
        path.write_text(script)
        done = launch([*CLI, "run", str(path)], env)
        assert done.stdout.strip() == "200 200", done.stderr
        assert bloxs.seen("GET", COMPLEXES)[0].headers["Authorization"].startswith("Bearer bl-")
        assert dealcloud.seen("GET", ENTRIES)[0].headers["Authorization"].startswith("Bearer")
        assert dealcloud.token_requests()
        assert bloxs.token_requests()


# -- mistakes are named before the script starts (point 4) ----------------------------------


def _one_line(finished: subprocess.CompletedProcess) -> str:
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr
    (line,) = [line for line in finished.stderr.splitlines() if line.strip()]
    return line


def test_a_prefix_outside_the_credentials_api_is_named(sim, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    line = _one_line(
        launch([*CLI, "run", str(script)], bloxs_env(sim, RBE_PREFIX="http://127.0.0.l:8080/"))
    )
    assert "RBE_PREFIX" in line
    assert "127.0.0.l" in line
    assert sim.url in line


def test_a_base_url_with_a_path_is_named(sim, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    line = _one_line(
        launch([*CLI, "run", str(script)], bloxs_env(sim, BLOXS_BASE_URL=sim.url + "/api/v1"))
    )
    assert "BLOXS_BASE_URL" in line
    assert "/Authorization" in line


def test_a_misspelt_variable_is_named_with_the_closest_one(sim, tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    env = {"RBE_LOGLEVEL": "DEBUG", "RBE_MAX_RETRY": "5"}
    ran = launch([*CLI, "run", str(script)], env)
    assert ran.returncode == 0
    assert ran.stdout == "ran\n"
    assert "RBE_LOGLEVEL" in ran.stderr
    assert "did you mean RBE_LOG_LEVEL?" in ran.stderr
    assert "did you mean RBE_MAX_RETRIES?" in ran.stderr
    shown = launch([*CLI, "config"], env)
    assert "did you mean RBE_LOG_LEVEL?" in shown.stderr


def test_a_script_whose_requests_all_miss_the_prefix_is_told_at_exit(server, tmp_path):
    server.route("GET", "/x", Reply(200, "ok"))
    script = tmp_path / "job.py"
    script.write_text(
        f"import requests, sys\nrequests.get({server.url('/x')!r}, timeout=5)\nsys.exit(7)\n"
    )
    ran = launch([*CLI, "run", str(script)], {"RBE_PREFIX": "https://api.example/"})
    assert ran.returncode == 7  # the script's own
    (line,) = [line for line in ran.stderr.splitlines() if "RBE_PREFIX" in line]
    assert "none was under RBE_PREFIX (https://api.example/)" in line
    served = launch([*CLI, "run", str(script)], {"RBE_PREFIX": "http://"})
    assert "RBE_PREFIX" not in served.stderr


# -- run speaks by default (point 5) ---------------------------------------------------


def test_run_warns_on_stderr_with_a_time_and_off_silences_it(server, tmp_path):
    server.route("GET", "/x", Reply(200, "ok"))
    script = tmp_path / "job.py"
    script.write_text(f"import requests\nrequests.get({server.url('/x')!r}, timeout=5)\n")
    env = {
        "RBE_PREFIX": "http://",
        "RBE_RATE_LIMIT": "5/second",
        "RBE_STORAGE": f"redis://127.0.0.1:{free_port()}/0",  # nobody answers there
    }
    ran = launch([*CLI, "run", str(script)], env)
    assert ran.returncode == 0
    (warning,) = [line for line in ran.stderr.splitlines() if "Rate limit storage" in line]
    assert ISO_TIME.match(warning), warning
    assert " WARNING " in warning
    quiet = launch([*CLI, "run", str(script)], {**env, "RBE_LOG_LEVEL": "OFF"})
    assert quiet.returncode == 0
    assert quiet.stderr == ""


def test_run_help_lists_every_variable_with_its_default():
    shown = run("run", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for variable in VARIABLES:
        assert variable.name in text
        assert " ".join(f"(default: {variable.default})".split()) in text


# -- a Bloxs filter POST is a read (point 6) -----------------------------------------------


def test_a_filter_post_is_retried_like_a_get_and_never_kept(server, session, outbox_url):
    server.route("POST", FILTER, Reply(500, "down"), Reply(200, "[]"))
    rbe.mount(session, "http://", outbox=outbox_url, backoff_factor=0.0, max_retries=2)
    response = session.post(server.url(FILTER), json={"city": "Delft"})
    assert response.status_code == 200  # retried without an Idempotency-Key
    assert [a.decision for a in rbe.attempts(response)] == ["retry", "returned"]
    server.route("POST", FILTER, Reply(500, "still down"))
    assert session.post(server.url(FILTER), json={"city": "Gouda"}).status_code == 500
    assert rbe.Outbox(outbox_url).entries() == []  # a read is never kept
    server.route("POST", COMPLEXES, Reply(500, "down"))
    session.post(server.url(COMPLEXES), json={"name": "x"})  # a create is a write
    assert [e.shown_url for e in rbe.Outbox(outbox_url).entries()] == [server.url(COMPLEXES)]
    assert rbe.RateLimit.bloxs().category(response.request) == "filter"


def test_which_requests_are_reads_is_one_rule_explain_and_the_docs_show():
    from requests_bloxs_errors.errors.table import READS_TEXT, is_read, rules_text

    assert is_read("POST", "https://acme.bloxs.io/api/v1/realestateobjects/complexes/filter")
    assert is_read("GET", "https://acme.bloxs.io/x")
    assert not is_read("POST", "https://acme.bloxs.io/api/v1/realestateobjects/complexes")
    assert not is_read("PUT", "https://acme.bloxs.io/x/filter")
    words = " ".join(READS_TEXT.split())
    assert words in " ".join(run("explain", "500").stdout.split())
    assert READS_TEXT in rules_text()  # which the error page shows (tests/test_docs.py)


# -- the fleet check for a breaker that opens during a run ---------------------------------------


@pytest.mark.slow  # a script in a process of its own
def test_a_breaker_that_opens_during_a_run_gives_the_script_503s_and_keeps_the_writes(
    tmp_path,
):
    outbox = f"sqlite:///{tmp_path}/outbox.db"
    with Simulator() as sim:
        sim.fail(500, path=COMPLEXES, method="POST", times=None)
        env = bloxs_env(sim, RBE_CIRCUIT_BREAKER="2/30", RBE_OUTBOX=outbox, RBE_MAX_RETRIES="1")
        ran = launch([*CLI, "run", str(HELPERS / "legacy_writer.py"), sim.url, "4"], env)
        reached = len(sim.seen("POST", COMPLEXES))
    assert ran.returncode == 5, ran.stderr  # the script's own "the API is down"
    assert "Traceback" not in ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:4] == ["1 500", "2 500", "3 503", "4 503"]
    assert reached == 2  # a create that got a 500 is sent once; then the circuit refuses
    entries = rbe.Outbox(outbox).entries()
    assert len(entries) == 4  # every create is kept: two uncertain, two never sent
    assert [e.uncertain for e in entries] == [True, True, False, False]
