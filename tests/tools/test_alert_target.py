"""``RBE_ALERT``: ``run`` sends each alert to a webhook (a real loopback server receives
the JSON) or to a ``module:function``; the webhook never holds the call that raised the
alert, never goes through the adapter, and fails in one WARNING that names its origin
only. Real ``run`` subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest

from requests_bloxs_errors.events import AlertEvent
from requests_bloxs_errors.simulator import COMPLEXES
from requests_bloxs_errors.tools.alert_target import alert_json
from requests_bloxs_errors.tools.envconfig import config_from_env
from requests_bloxs_errors.tools.settings import ConfigError

from ..helpers import wait_until
from ..helpers.cli import CLI, assert_one_line_error
from ..helpers.redisserver import free_port
from ..helpers.server import Reply, ScriptServer

ROOT = str(Path(__file__).resolve().parents[2])
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
#: A webhook's address carries its secret in the path (and sometimes the query).
HOOK_PATH = "/services/T000/B000/s3cr3tPATH"
HOOK_QUERY = "token=QUERYSECRET"

#: Four writes to a host that answers 503: the first is queued (alert "queued"),
#: the second opens the circuit (alert "circuit_open"), the last two are refused.
WRITES = """\
import sys, time
import requests

started = time.monotonic()
for n in range(4):
    answer = requests.post(sys.argv[1], json={"n": n}, headers={"Idempotency-Key": str(n)},
                           timeout=10)
    print(answer.status_code, getattr(answer, "local", False))
print("calls done", flush=True)
"""


def environment(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RBE_", "BLOXS_"))}
    return {**clean, "NO_COLOR": "1", "RBE_MAX_RETRIES": "0", **extra}


def launch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False
    )


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "writes.py"
    path.write_text(WRITES)
    return str(path)


def test_each_alert_reaches_the_webhook_as_json_without_a_secret(
    sim, other_server, script, tmp_path
):
    other_server.route("POST", HOOK_PATH, Reply(200, "ok"))
    key, secret = sim.bloxs_credentials
    sim.fail(503, path=COMPLEXES, times=None)
    env = environment(
        BLOXS_BASE_URL=sim.url,
        BLOXS_API_KEY=key,
        BLOXS_API_SECRET=secret,
        RBE_CIRCUIT_BREAKER="2/30",
        RBE_OUTBOX=f"sqlite:///{tmp_path}/outbox.db",
        RBE_ALERT=f"{other_server.url(HOOK_PATH)}?{HOOK_QUERY}",
    )
    ran = launch([*CLI, "run", script, sim.url + COMPLEXES], env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[:4] == ["503 False", "503 False", "503 True", "503 True"]
    posts = other_server.seen("POST", HOOK_PATH)
    assert [post.json()["kind"] for post in posts] == ["queued", "circuit_open"]
    for post in posts:
        assert post.query == HOOK_QUERY  # the URL as given, query included
        assert post.headers["Content-Type"] == "application/json"
        document = post.json()
        assert document["host"] == sim.url
        assert document["text"] == f"[{document['kind']}] {document['message']}"
        assert ISO.match(document["at"])
        assert document["process"]["pid"] > 0
        body = post.body.decode()
        assert secret not in body
        assert "Bearer" not in body
        assert "Authorization" not in body
    opened = posts[1].json()
    assert (opened["failures"], ISO.match(opened["until"]) is not None) == (2, True)
    assert posts[0].json()["outbox_id"] == 1
    # the alerts went out through the standard library, not the adapter: nothing
    # was paced, signed or retried, and no request reached the API for them
    assert all("Authorization" not in post.headers for post in posts)
    assert "Alert circuit_open" in ran.stderr  # each alert is logged as well
    assert "s3cr3tPATH" not in ran.stderr
    assert "QUERYSECRET" not in ran.stderr


def test_a_webhook_that_does_not_answer_never_holds_the_calls(server, other_server, script):
    release, answered = threading.Event(), threading.Event()

    def held(request: object) -> object:
        release.wait(30)  # the webhook answers only when the test lets it
        answered.set()
        return Reply(200, "ok")

    other_server.route_fn("POST", "/hook", held)
    server.route("POST", "/api/w", Reply(503, "down"))
    env = environment(
        RBE_PREFIX="http://",
        RBE_CIRCUIT_BREAKER="2/30",
        RBE_ALERT=other_server.url("/hook"),
    )
    with subprocess.Popen(
        [*CLI, "run", script, server.url("/api/w")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as running:
        assert running.stdout is not None
        lines = [running.stdout.readline() for _ in range(5)]
        # every call ended while the webhook had not answered the alert it got
        assert lines[-1] == "calls done\n"
        assert not answered.is_set()
        assert wait_until(lambda: len(other_server.seen("POST", "/hook")) == 1, timeout=30)
        release.set()
        _, errors = running.communicate(timeout=60)
    assert running.returncode == 0, errors
    assert len(other_server.seen("POST", "/hook")) == 1  # circuit_open, sent at exit's latest
    assert len(server.seen("POST", "/api/w")) == 2  # no request of the webhook's went there
    assert "Alert webhook" not in errors


@pytest.mark.parametrize("how", ["answers 500", "refuses connections"])
def test_a_failing_webhook_is_one_warning_naming_its_origin_only(
    server, other_server, script, tmp_path, how
):
    server.route("POST", "/api/w", Reply(503, "down"))
    other_server.route("POST", HOOK_PATH, Reply(500, "broken"))
    port = other_server.port if how == "answers 500" else free_port()
    hook = f"http://localhost:{port}{HOOK_PATH}?{HOOK_QUERY}"
    env = environment(
        RBE_PREFIX="http://",
        RBE_CIRCUIT_BREAKER="2/30",
        RBE_OUTBOX=f"sqlite:///{tmp_path}/outbox.db",
        RBE_ALERT=hook,
    )
    ran = launch([*CLI, "run", script, server.url("/api/w")], env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[4] == "calls done"
    (warning,) = [line for line in ran.stderr.splitlines() if "Alert webhook" in line]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ WARNING ", warning)
    assert f"Alert webhook http://localhost:{port}: the queued alert was not delivered" in warning
    why = "it answered 500" if how == "answers 500" else "connection refused"
    assert why in warning
    assert "s3cr3tPATH" not in ran.stderr
    assert "QUERYSECRET" not in ran.stderr
    assert "Traceback" not in ran.stderr
    if how == "answers 500":
        assert len(other_server.seen("POST", HOOK_PATH)) == 2  # each alert once, no retries


def test_a_module_function_receives_each_alert(server, script, tmp_path):
    server.route("POST", "/api/w", Reply(503, "down"))
    (tmp_path / "alert_sink.py").write_text(
        "import json, os\n"
        "def record(alert):\n"
        "    with open(os.environ['ALERTS_FILE'], 'a') as out:\n"
        "        out.write(json.dumps([type(alert).__name__, alert.kind, alert.host]) + '\\n')\n"
    )
    received = tmp_path / "alerts.jsonl"
    env = environment(
        RBE_PREFIX="http://",
        RBE_CIRCUIT_BREAKER="2/30",
        RBE_ALERT="alert_sink:record",
        PYTHONPATH=str(tmp_path),
        ALERTS_FILE=str(received),
    )
    ran = launch([*CLI, "run", script, server.url("/api/w")], env)
    assert ran.returncode == 0, ran.stderr
    host = server.url("").rstrip("/")
    lines = [json.loads(line) for line in received.read_text().splitlines()]
    assert lines == [["AlertEvent", "circuit_open", host]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://hooks.example.com/x", "RBE_ALERT must be an http:// or https:// webhook URL"),
        ("page the on-call", "RBE_ALERT must be an http:// or https:// webhook URL"),
        ("no_such_module_here:fn", "RBE_ALERT: cannot import 'no_such_module_here'"),
        ("alert_sink:missing", "RBE_ALERT: 'alert_sink' has no 'missing'"),
        ("alert_sink:VALUE", "RBE_ALERT: alert_sink:VALUE is a int, not a callable"),
        ("broken_sink:fn", "RBE_ALERT: importing 'broken_sink' raised RuntimeError: boom"),
        ("https://u:PW@hooks.example.com/x", "RBE_ALERT must not contain credentials"),
    ],
)
def test_run_names_a_bad_alert_target_in_one_line_before_the_script_starts(
    tmp_path, value, message
):
    (tmp_path / "alert_sink.py").write_text("VALUE = 3\n")
    (tmp_path / "broken_sink.py").write_text("raise RuntimeError('boom')\n")
    job = tmp_path / "job.py"
    job.write_text("print('ran')\n")
    env = environment(RBE_CIRCUIT_BREAKER="on", RBE_ALERT=value, PYTHONPATH=str(tmp_path))
    result = launch([*CLI, "run", str(job)], env)
    assert_one_line_error(result)
    assert message in result.stderr
    assert "PW" not in result.stderr
    assert result.stdout == ""


def test_an_alert_target_without_a_source_of_alerts_is_refused():
    with pytest.raises(ConfigError, match="RBE_ALERT needs RBE_CIRCUIT_BREAKER or RBE_OUTBOX"):
        config_from_env({"RBE_ALERT": "https://hooks.example.com/x"})


def test_config_shows_a_webhook_by_its_origin_only(other_server):
    hook = f"{other_server.url(HOOK_PATH)}?{HOOK_QUERY}"
    env = environment(RBE_CIRCUIT_BREAKER="on", RBE_ALERT=hook, COLUMNS="200")
    shown = launch([*CLI, "config"], env)
    assert shown.returncode == 0, shown.stderr
    origin = other_server.url("").rstrip("/")
    assert f"  on_alert: {origin}/... (webhook)" in shown.stdout
    assert re.search(rf"RBE_ALERT +set +{re.escape(origin)}/\.\.\. \(webhook\)", shown.stdout)
    assert "s3cr3tPATH" not in shown.stdout
    assert "QUERYSECRET" not in shown.stdout
    assert other_server.seen() == []  # reading the configuration sends nothing


def test_the_json_holds_the_events_fields_and_its_times_in_iso_8601():
    event = AlertEvent(
        "circuit_open",
        "https://acme.bloxs.io:443",
        "https://acme.bloxs.io:443 failed",
        failures=5,
        at=1796674370.25,
        until=1796674400.0,
        trace_id="0HN7",
    )
    document = alert_json(event)
    assert document == {
        "text": "[circuit_open] https://acme.bloxs.io:443 failed",
        "kind": "circuit_open",
        "host": "https://acme.bloxs.io:443",
        "message": "https://acme.bloxs.io:443 failed",
        "failures": 5,
        "rejected": 0,
        "outbox_id": None,
        "at": "2026-12-07T20:12:50Z",
        "until": "2026-12-07T20:13:20Z",
        "trace_id": "0HN7",
        "process": {"hostname": document["process"]["hostname"], "pid": os.getpid()},
    }
    assert json.loads(json.dumps(document)) == document


FORKED = """\
import os, sys
import requests

def writes(url):
    for n in range(2):
        requests.post(url, json={}, headers={"Idempotency-Key": f"{url}-{n}"}, timeout=10)

writes(sys.argv[1])  # the parent's alerts start its webhook thread
child = os.fork()
if child == 0:
    writes(sys.argv[2])  # a child's alerts go out from a thread of its own
    sys.exit(0)
os.waitpid(child, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX's")
def test_a_forked_child_sends_its_own_alerts(server, other_server, tmp_path):
    second = ScriptServer()
    try:
        for api in (server, second):
            api.route("POST", "/api/w", Reply(503, "down"))
        other_server.route("POST", "/hook", Reply(200, "ok"))
        script = tmp_path / "forked.py"
        script.write_text(FORKED)
        env = environment(
            RBE_PREFIX="http://",
            RBE_CIRCUIT_BREAKER="2/30",
            RBE_OUTBOX=f"sqlite:///{tmp_path}/outbox.db",
            RBE_ALERT=other_server.url("/hook"),
        )
        urls = [server.url("/api/w"), second.url("/api/w")]
        ran = launch([*CLI, "run", str(script), *urls], env)
        assert ran.returncode == 0, ran.stderr
        received = sorted(
            (post.json()["kind"], post.json()["host"])
            for post in other_server.seen("POST", "/hook")
        )
        hosts = sorted(url.removesuffix("/api/w") for url in urls)
        assert received == sorted(
            (kind, host) for kind in ("circuit_open", "queued") for host in hosts
        )
    finally:
        second.close()
