"""The command line, run as a user runs it: a subprocess, exit codes, output."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest
import requests

from requests_bloxs_errors.simulator import COMPLEXES

from ..helpers.cli import CLI, assert_one_line_error, run


@pytest.mark.parametrize("status", ["429", "503"])
def test_explain_retry_after_statuses(status):
    result = run("explain", status)
    assert result.returncode == 0
    assert "Retry-After" in result.stdout
    assert "max_retry_after (60s by default)" in result.stdout
    assert "what to do:" in result.stdout


def test_explain_403_mentions_reauth_and_the_quota_variant():
    out = run("explain", "403").stdout
    assert "re-auth:     yes" in out
    assert "exhausted quota" in out


@pytest.mark.parametrize("status", ["abc", "-1", "99", "600", "4o4", ""])
def test_explain_nonsense_is_one_line(status):
    assert_one_line_error(run("explain", status))


@pytest.mark.parametrize("args", [(), ("bogus",), ("explain",), ("request", "GET")])
def test_usage_errors_are_one_line(args):
    assert_one_line_error(run(*args))


def test_table_lists_every_row():
    result = run("table")
    assert result.returncode == 0
    for status in (
        "400",
        "401",
        "403",
        "403+Retry-After",
        "404",
        "405",
        "415",
        "429",
        "500",
        "502",
        "503",
        "504",
    ):
        assert re.search(rf"^{re.escape(status)}\s", result.stdout, re.MULTILINE), status


def test_request_through_the_adapter_with_env_credentials(sim):
    sim.fail(503, path=COMPLEXES + "/3", retry_after=0)
    key, secret = sim.bloxs_credentials
    result = run(
        "request",
        "GET",
        f"{sim.url}{COMPLEXES}/3?secret-query=1",
        env={"BLOXS_API_KEY": key, "BLOXS_API_SECRET": secret},
    )
    assert result.returncode == 0, result.stderr
    assert "#1  503  service_unavailable  retry" in result.stdout
    assert "#2  200  ok  returned" in result.stdout
    assert '"name": "Complex 3"' in result.stdout
    assert secret not in result.stdout + result.stderr
    assert "secret-query" not in result.stdout


def test_request_with_an_error_status_exits_1_and_explains(sim):
    key, secret = sim.bloxs_credentials
    result = run(
        "request",
        "POST",
        sim.url + COMPLEXES,
        "--json",
        '{"units": 3}',
        "--bloxs-key",
        key,
        "--bloxs-secret",
        secret,
    )
    assert result.returncode == 1
    assert "BadRequestError" in result.stdout
    assert "Name: The Name field is required." in result.stdout


def test_request_with_refused_credentials_is_one_line_without_the_secret(sim):
    result = run(
        "request",
        "GET",
        sim.url + COMPLEXES,
        env={"BLOXS_API_KEY": "demo-key", "BLOXS_API_SECRET": "s3cret-wrong"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "AuthenticationError" in result.stderr
    assert "s3cret-wrong" not in result.stdout + result.stderr


def test_request_with_client_credentials(sim):
    token_url, client_id, client_secret = sim.dealcloud_credentials
    result = run(
        "request",
        "GET",
        sim.url + "/api/rest/v4/data/entrydata/deal/entries",
        "--scope",
        "data",
        env={
            "DEALCLOUD_CLIENT_ID": client_id,
            "DEALCLOUD_CLIENT_SECRET": client_secret,
            "DEALCLOUD_TOKEN_URL": token_url,
        },
    )
    assert result.returncode == 0, result.stderr
    assert "DealName" in result.stdout


def test_request_to_a_closed_port_exits_3():
    result = run("request", "GET", "http://127.0.0.1:9/x", "--max-retries", "0", "--timeout", "2")
    assert result.returncode == 3
    assert "no response" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args", [("--json", "{bad"), ("--header", "NoColon"), ("--bloxs-key", "only-a-key")]
)
def test_request_bad_flags_are_one_line(sim, args):
    assert_one_line_error(run("request", "GET", sim.url + COMPLEXES, *args))


def test_simulate_serves_until_interrupted():
    # port 0: the simulator picks a free port and prints its URL, so no other test's
    # socket can take a port chosen beforehand
    # started as a script's background job is: with SIGINT ignored (CI may start this
    # suite so); Ctrl-C and kill stop it all the same
    in_the_background = ["sh", "-c", 'trap "" INT; exec "$0" "$@"']
    with subprocess.Popen(
        [*in_the_background, *CLI, "simulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    ) as process:
        lines: queue.Queue[str] = queue.Queue()
        stdout = process.stdout
        reader = threading.Thread(
            target=lambda: [lines.put(line) for line in stdout or ()], daemon=True
        )
        reader.start()
        try:
            # (real time, loose: a process starting on a busy machine; it only catches a hang)
            first = lines.get(timeout=60)
            found = re.search(r"http://127\.0\.0\.1:\d+", first)
            assert found is not None, first
            answer = requests.post(
                found.group(0) + "/Authorization",
                json={"apiKey": "demo-key", "apiSecret": "demo-secret"},
                timeout=30,
            )
            assert answer.status_code == 200
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            reader.join(10)
        err = process.stderr.read() if process.stderr else ""
    out = first + "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert process.returncode == 0, err
    assert found.group(0) in out
    assert "stopped" in out
    assert "Traceback" not in err


def test_simulate_on_a_busy_port_is_one_line(sim):
    port = sim.url.rsplit(":", 1)[1]
    assert_one_line_error(run("simulate", "--port", port))


@pytest.mark.slow  # the demo
def test_demo_end_to_end():
    started = time.monotonic()
    result = run("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert time.monotonic() - started < 60  # (real time, loose: the demo meets real waits)
    assert "token  POST   /Authorization" in out
    assert "refresh credentials, resend once" in out
    assert "429   rate_limited" in out
    assert "503   service_unavailable" in out
    assert "Name: The Name field is required." in out
    assert "404   not_found" in out
    assert "not retried: POST without an Idempotency-Key" in out
    assert "Summary" in out
    assert "UNEXPECTED" not in out
    assert "\x1b[" not in out  # plain text when piped


def test_console_script_is_installed():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["requests-bloxs-errors"] == "requests_bloxs_errors.tools.cli:main"
