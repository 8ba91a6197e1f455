"""What a new user meets first: the README's examples run, the CLI answers every
input in one line, and the advice fits the case."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import COMPLEXES, ENDPOINTS, Simulator

from .helpers import docs
from .helpers.cli import CLI, assert_one_line_error, assert_users_suite_passes, run
from .helpers.redisserver import free_port
from .helpers.server import Reply, json_reply

README = docs.TEXT  # the README and every page of docs/


def _on(sim: Simulator, code: str) -> str:
    """The example pointed at the simulator instead of the real hosts."""
    return code.replace("https://acme.bloxs.io", sim.url).replace(
        "https://acme.dealcloud.com", sim.url
    )


def _credentials_in_env(monkeypatch, bloxs: Simulator, dealcloud: Simulator) -> None:
    """The variables the README's examples read their credentials from."""
    key, secret = bloxs.bloxs_credentials
    _, client_id, client_secret = dealcloud.dealcloud_credentials
    monkeypatch.setenv("BLOXS_API_KEY", key)
    monkeypatch.setenv("BLOXS_API_SECRET", secret)
    monkeypatch.setenv("DEALCLOUD_CLIENT_ID", client_id)
    monkeypatch.setenv("DEALCLOUD_CLIENT_SECRET", client_secret)


def test_every_readme_code_block_runs(sim, tmp_path, monkeypatch):
    """The README's examples and the credentials page's, against the simulator; every
    other example of the README and the pages has a test of its own below."""
    assert len(docs.code_blocks()) == 14, "a new example in the README or docs/ needs a case here"
    quick_start = docs.block_with("def fetch_token")
    legacy = docs.block_with("rbe.installed(")
    bloxs = docs.block_with('auth = rbe.BloxsTokenAuth("https://acme.bloxs.io"')
    dealcloud = docs.block_with("auth = rbe.ClientCredentialsAuth(")
    simulator_test = docs.block_with("def test_sync_survives_maintenance")
    key, secret = sim.bloxs_credentials
    token_url = sim.dealcloud_credentials[0]
    _credentials_in_env(monkeypatch, sim, sim)

    names: dict[str, object] = {"API_KEY": key, "API_SECRET": secret}
    exec(_on(sim, quick_start), names)  # raise_for_status() must not raise
    assert len(sim.token_requests()) == 1

    used = []

    def legacy_main() -> None:  # what legacy_job.main() would reach: the installed adapter
        used.append(type(requests.Session().get_adapter("https://acme.bloxs.io/x")).__name__)

    names["legacy_job"] = SimpleNamespace(main=legacy_main)
    exec(_on(sim, legacy), names)
    assert used == ["BloxsAdapter"]
    assert requests.Session is rbe.patch.ORIGINAL_SESSION  # uninstalled again

    bloxs_scope = {"os": os, "rbe": rbe, "session": requests.Session()}
    exec(_on(sim, bloxs), bloxs_scope)
    assert bloxs_scope["session"].get(sim.url + COMPLEXES).status_code == 200
    dealcloud_scope = {"os": os, "rbe": rbe, "session": requests.Session()}
    exec(_on(sim, dealcloud), dealcloud_scope)
    entries = dealcloud_scope["session"].get(sim.url + "/api/rest/v4/data/entrydata/deal/entries")
    assert entries.status_code == 200
    assert token_url.startswith(sim.url)

    (tmp_path / "test_readme_example.py").write_text(simulator_test)
    assert_users_suite_passes(tmp_path)


def test_the_readme_step_example_logs_a_slow_call(sim, caplog):
    """ "Your own steps": the example's step sees a call that waited and says so."""
    block = docs.block_with("class SlowCalls")
    scope: dict[str, object] = {}
    exec(_on(sim, block), scope)
    session = scope["session"]
    assert isinstance(session, requests.Session)
    key, secret = sim.bloxs_credentials
    token = requests.post(
        sim.url + "/Authorization", json={"apiKey": key, "apiSecret": secret}, timeout=5
    ).json()["token"]
    session.headers["Authorization"] = f"Bearer {token}"  # (the example's own concern)
    sim.fail(503, path=COMPLEXES, times=1, retry_after=1.2)
    quick = session.get(sim.url + "/Test")
    slow = session.get(sim.url + COMPLEXES)
    assert (quick.status_code, slow.status_code) == (200, 200)
    (record,) = [r for r in caplog.records if r.name == "sync_job"]
    assert f"GET {sim.url}{COMPLEXES} took" in record.getMessage()
    assert "(2 attempts)" in record.getMessage()
    assert [type(step).__name__ for step in scope["adapter"].steps] == ["SlowCalls"]


def test_the_readme_pacing_examples_run_without_a_429(tmp_path, monkeypatch, redis_url):
    """The two examples of "Pacing to the quota", against the simulator: the Bloxs
    one on SQLite, the DealCloud one on a real Redis, over a quota they must learn."""
    paced_bloxs = docs.block_with("RateLimit.bloxs(")
    paced_dealcloud = docs.block_with("RateLimit.dealcloud(storage=")
    assert "RateLimit.bloxs" in paced_bloxs
    assert "RateLimit.dealcloud" in paced_dealcloud
    with Simulator(dealcloud_quota=(5, 1.0)) as sim:
        _credentials_in_env(monkeypatch, sim, sim)
        code = _on(sim, paced_bloxs).replace("/var/tmp/", f"{tmp_path}/")
        scope: dict[str, object] = {}
        exec(code, scope)
        assert scope["found"].status_code == 200
        assert (tmp_path / "acme-bloxs-quota.db").exists()
        code = _on(sim, paced_dealcloud).replace("redis://redis.internal:6379/0", redis_url)
        exec(code, scope)
        assert scope["entries"].status_code == 200
        statuses = [r.status for r in sim.requests]
    # 12 calls over a quota of 5 per second: the first 429 teaches it, no other comes
    assert statuses.count(429) == 1
    assert statuses.count(200) == 1 + 3 + 1 + 12  # Bloxs token, filters, DealCloud token, entries


def test_the_readme_example_shows_the_learned_rule_and_the_pause(capsys):
    """ "Pacing to the quota": what the limiter learned is printed, as the comment says."""
    block = docs.block_with("limit.state()")
    exec(block, {})
    rules, state = capsys.readouterr().out.splitlines()
    assert rules == "{'GET /api/rest/v4/data/entrydata/deal/entries': (2, 1.0)}"
    shown = "GET /api/rest/v4/data/entrydata/deal/entries (2, 1.0) True "
    assert state.startswith(shown)
    assert 0 <= float(state.removeprefix(shown)) <= 1.0  # the 429 paused it for a period


def test_the_readme_telemetry_example_prints_what_it_says(capsys):
    """ "What it does, in your dashboards": the in-memory exporter's spans, as the
    comments under the example list them."""
    from .helpers import otel

    block = docs.block_with("InMemorySpanExporter()")
    expected = [
        line.strip().removeprefix("# ").split("  ")[0]
        for line in block.splitlines()
        if line.startswith("# ")
    ]
    otel.reset()
    try:
        exec(block, {})
    finally:
        otel.reset()
    assert capsys.readouterr().out.splitlines() == expected


def test_the_readme_prometheus_example_serves_what_the_alert_rule_reads(sim):
    """The Prometheus example, in a process of its own (the exporter registers in
    prometheus_client's global registry): a scrape shows the metrics and labels the
    README's alert rule uses."""
    block = docs.block_with("PrometheusMetricReader")
    telemetry = docs.PAGES["telemetry"]
    rule = telemetry[telemetry.index("groups:") : telemetry.index("In your own tests, the SDK")]
    for name in ("rbe_client_retries_total", "rbe_error_kind", "rbe_client_circuit_open"):
        assert name in rule
    port = free_port()
    sim.fail(503, path=COMPLEXES, times=2)
    key, secret = sim.bloxs_credentials
    code = block.replace("9464", str(port)) + textwrap.dedent(
        f"""
        import requests, urllib.request
        import requests_bloxs_errors as rbe
        session = requests.Session()
        rbe.mount(session, {sim.url + "/"!r},
                  auth=rbe.BloxsTokenAuth({sim.url!r}, {key!r}, {secret!r}),
                  circuit_breaker=rbe.CircuitBreaker(failures=1), max_retries=0)
        session.get({sim.url + COMPLEXES!r}, timeout=10)  # 503: the circuit opens
        print(urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=10).read().decode())
        """
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert finished.returncode == 0, finished.stderr
    scraped = finished.stdout
    assert "http_client_request_duration_seconds_bucket{" in scraped
    assert "rbe_client_token_requests_total" in scraped
    gauge = re.search(
        r'rbe_client_circuit_open\{[^}]*rbe_circuit_host="([^"]+)"[^}]*\} (\S+)', scraped
    )
    assert gauge is not None
    assert gauge.groups() == (sim.url, "1.0")


def test_the_readme_opentelemetry_instrument_command_traces_a_run_job(sim, tmp_path):
    """The ``opentelemetry-instrument ... run job.py`` command, with the console span
    exporter instead of OTLP (no collector here): the job's call shows as spans."""
    command = README[README.index("OTEL_SERVICE_NAME=") :].split("\n\n")[0]
    assert "opentelemetry-instrument python -m requests_bloxs_errors run job.py" in command
    (tmp_path / "job.py").write_text(
        f"import requests\nprint(requests.get({sim.url + COMPLEXES!r}, timeout=10).status_code)\n"
    )
    key, secret = sim.bloxs_credentials
    instrument = Path(sys.executable).with_name("opentelemetry-instrument")
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "nightly-sync",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "BLOXS_API_KEY": key,
        "BLOXS_API_SECRET": secret,
        "BLOXS_BASE_URL": sim.url,
    }
    finished = subprocess.run(
        [str(instrument), sys.executable, "-m", "requests_bloxs_errors", "run", "job.py"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines()[0] == "200"
    assert '"url.full": "' + sim.url + COMPLEXES + '"' in finished.stdout
    assert '"service.name": "nightly-sync"' in finished.stdout
    assert secret not in finished.stdout


def test_the_readme_simulate_command_stages_its_outage():
    line = next(line for line in README.splitlines() if "--fail 503 --retry-after 30" in line)
    flags = line.split()
    process = subprocess.Popen(
        [*CLI, "simulate", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3]
        down = requests.get(url + COMPLEXES, timeout=10)
        assert (down.status_code, down.headers["Retry-After"]) == (503, "30")
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_the_readme_fleet_example_shares_tokens_through_sqlite_and_redis(
    tmp_path, monkeypatch, redis_url
):
    """The "One token for a fleet" example, twice, as two processes would run it:
    the second finds both tokens in the caches and calls no token endpoint."""
    block = docs.block_with("cache=")
    with Simulator() as bloxs_sim, Simulator() as dealcloud_sim:  # two hosts, as in the example
        _credentials_in_env(monkeypatch, bloxs_sim, dealcloud_sim)
        code = (
            block.replace("https://acme.bloxs.io", bloxs_sim.url)
            .replace("https://acme.dealcloud.com", dealcloud_sim.url)
            .replace("/var/tmp/", f"{tmp_path}/")
            .replace("rediss://:redis-password@redis.internal:6380/0", redis_url)
        )
        for _ in range(2):  # two "processes": fresh credentials, fresh sessions
            scope = {"os": os, "rbe": rbe, "session": requests.Session()}
            exec(code, scope)
            session = scope["session"]
            assert session.get(bloxs_sim.url + COMPLEXES).status_code == 200
            entries = session.get(dealcloud_sim.url + "/api/rest/v4/data/entrydata/deal/entries")
            assert entries.status_code == 200
        assert len(bloxs_sim.token_requests()) == 1
        assert len(dealcloud_sim.token_requests()) == 1


def test_the_readme_outage_example_keeps_the_write_and_alerts_a_webhook(
    sim, server, tmp_path, capsys
):
    """ "When the API stays down": the create fails for good, is kept in the outbox,
    and the chat webhook (a loopback server here) hears of it once."""
    block = docs.block_with("circuit_breaker=")
    server.route("POST", "/hook", Reply(200, "ok"))
    sim.fail(500, path=COMPLEXES, method="POST", times=None)
    code = (
        _on(sim, block)
        .replace("https://hooks.example.com/services/T000/B000/XXXX", server.url("/hook"))
        .replace("/var/tmp/", f"{tmp_path}/")
    )
    exec(code, {})
    assert "kept for later as outbox entry 1" in capsys.readouterr().out
    (hook,) = server.seen("POST", "/hook")
    assert hook.json()["text"].startswith("[queued] writes to ")
    (entry,) = rbe.Outbox(f"sqlite:///{tmp_path}/acme-outbox.db").entries()
    assert entry.headers["Idempotency-Key"] == "create-harbour-view"
    assert entry.uncertain is False


def test_the_readme_lists_every_adapter_argument_with_its_default():
    parameters = inspect.signature(rbe.BloxsAdapter.__init__).parameters
    page = docs.PAGES["configuration"]
    section = page[: page.index("Retries, waits")]
    for name, parameter in parameters.items():
        if name == "self":
            continue
        assert f"``{name}``" in section, name
        assert repr(parameter.default) in section.replace("``", ""), (name, parameter.default)
        assert f":param {name}:" in (rbe.BloxsAdapter.__init__.__doc__ or ""), name


def test_an_unknown_argument_names_bloxs_adapter():
    with pytest.raises(TypeError, match="BloxsAdapter") as caught:
        rbe.BloxsAdapter(pool_maxsize_typo=4)  # type: ignore[call-arg]
    assert "HTTPAdapter" not in str(caught.value)


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--port", "99999"),
        ("simulate", "--port", "-1"),
        ("simulate", "--window", "0"),
        ("simulate", "--window", "-5"),
        ("simulate", "--window", "nan"),
        ("request", "GET", "http://127.0.0.1:1/", "--max-retries", "-1"),
        ("request", "GET", "http://127.0.0.1:1/", "--timeout", "0"),
    ],
)
def test_bad_cli_input_is_one_line(args):
    assert_one_line_error(run(*args))


def test_the_simulator_refuses_a_window_that_would_break_it():
    with pytest.raises(ValueError, match="window"):
        Simulator(window=0)
    with pytest.raises(ValueError, match="port"):
        Simulator(port=99999)


def test_a_closed_pipe_ends_the_cli_quietly():
    """`explain 503 | head -3`: the reader is gone before the writer writes."""
    env = {**os.environ, "NO_COLOR": "1"}
    with subprocess.Popen(
        [*CLI, "table"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 0
    assert "Traceback" not in stderr
    assert stderr == ""


def test_version_and_documented_defaults():
    assert run("--version").stdout.strip() == f"requests-bloxs-errors {rbe.__version__}"
    simulate_help = run("simulate", "--help").stdout
    assert "(default: 8080)" in simulate_help
    assert "(default: 60.0)" in simulate_help
    request_help = " ".join(run("request", "--help").stdout.split())
    assert "retries per call (default: 3)" in request_help


def test_simulate_prints_the_demo_credentials_and_endpoints():
    process = subprocess.Popen(
        [*CLI, "simulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(6 + len(ENDPOINTS))]
    finally:
        process.terminate()
        process.communicate(timeout=30)
    text = "".join(lines)
    assert "apiSecret=demo-secret" in text
    assert "client_secret=demo-client-secret" in text
    assert all(path in text for _, path, _ in ENDPOINTS)


def test_no_response_says_why_and_shows_the_attempts():
    result = run("request", "GET", "http://127.0.0.1:1/x", "--max-retries", "1")
    assert result.returncode == 3
    assert "no response: connection refused" in result.stdout
    assert re.search(r"#1 +NewConnectionError +retry", result.stdout)
    assert re.search(r"#2 +NewConnectionError +gave up: retries exhausted", result.stdout)
    assert "Traceback" not in result.stderr


def test_attempts_of_a_call_that_got_no_response(session):
    rbe.mount(session, "http://", max_retries=1, backoff_factor=0.01)
    with pytest.raises(requests.ConnectionError) as caught:
        session.get("http://127.0.0.1:1/")
    assert [a.decision for a in rbe.attempts(caught.value)] == [
        "retry",
        "gave up: retries exhausted",
    ]
    assert rbe.attempts(requests.ConnectionError("not ours")) == ()


# -- advice that fits the case ------------------------------------------------------


def test_a_401_without_credentials_does_not_blame_an_expired_token(server, session, fast):
    server.route("GET", "/a", json_reply(401, '{"error": "invalid_client"}'))
    error = pytest.raises(rbe.AuthenticationError, session.get(server.url("/a")).raise_for_status)
    assert "expired" not in error.value.action
    assert "auth=" in error.value.action


@pytest.mark.parametrize("status", [401, 403])
def test_after_a_fresh_token_was_refused_the_advice_says_so(server, session, status):
    server.route("GET", "/a", Reply(status, '{"title": "no"}'))
    rbe.mount(session, server.url("/"), auth=rbe.TokenAuth(lambda: "tok"))
    error = pytest.raises(rbe.ClientError, session.get(server.url("/a")).raise_for_status).value
    assert "freshly fetched token was refused as well" in error.action
    assert "if a fresh token is refused" not in error.action.lower()
    assert "fresh" in rbe.classify(session.get(server.url("/a"))).action  # remembered refusal


def test_a_refused_token_request_reads_without_a_doubled_period(sim, session):
    key, _ = sim.bloxs_credentials
    rbe.mount(session, sim.url + "/", auth=rbe.BloxsTokenAuth(sim.url, key, "wrong-secret-1"))
    error = pytest.raises(rbe.AuthenticationError, session.get, sim.url + COMPLEXES).value
    assert ".." not in str(error)
    assert str(error).count("The server said:") == 1


def test_the_bloxs_429_states_its_quota(session):
    with Simulator(window=30.0, limits={"get": 2}) as sim:
        auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials)
        rbe.mount(session, sim.url + "/", auth=auth, max_retries=0)
        statuses = [session.get(sim.url + COMPLEXES).status_code for _ in range(3)]
        response = session.get(sim.url + COMPLEXES)
    assert statuses[:2] == [200, 200]
    error = pytest.raises(rbe.RateLimitError, response.raise_for_status).value
    assert error.quota == (2, 30.0)
