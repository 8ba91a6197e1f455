"""Zero-edit adoption: a legacy script run through ``run``, configured from the
environment, against the simulator; real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import COMPLEXES

from ..helpers.cli import CLI, assert_one_line_error
from ..helpers.server import Reply

SCRIPT = str(Path(__file__).parent.parent / "helpers" / "legacy_sync.py")
ROOT = str(Path(__file__).resolve().parents[2])


def env_for(sim, **extra: str) -> dict[str, str]:
    key, secret = sim.bloxs_credentials
    return {
        **os.environ,
        "NO_COLOR": "1",
        "BLOXS_BASE_URL": sim.url,
        "BLOXS_API_KEY": key,
        "BLOXS_API_SECRET": secret,
        **extra,
    }


def launch(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False
    )


def faults(sim) -> None:
    sim.fail(500, path=COMPLEXES + "/1", times=2)  # retried
    sim.fail(401, path=COMPLEXES + "/2", times=1)  # re-authenticated
    sim.fail(429, path=COMPLEXES + "/3", times=1, retry_after=0)


@pytest.mark.slow  # a script in processes of its own, twice
def test_a_legacy_script_survives_faults_through_run_unchanged(sim):
    env = env_for(sim, RBE_MAX_RETRIES="4")
    clean = launch([*CLI, "run", SCRIPT, sim.url, "--flag", "x"], env)
    assert clean.returncode == 0, clean.stderr
    faults(sim)
    plain = launch([sys.executable, SCRIPT, sim.url], env)
    assert plain.returncode == 4  # without the adapter the script fails on the 500
    sim.clear_faults()
    faults(sim)
    survived = launch([*CLI, "run", SCRIPT, sim.url, "--flag", "x"], env)
    assert survived.returncode == 0, survived.stderr
    assert survived.stdout == clean.stdout  # same output, its own argv and __name__
    assert clean.stdout.strip().endswith("| argv: --flag x | name: __main__")
    assert "Traceback" not in survived.stderr


def test_the_module_form_and_the_scripts_own_exit_status(sim):
    env = env_for(sim)
    result = launch([*CLI, "run", "-m", "tests.helpers.legacy_sync", sim.url, "a"], env)
    assert result.returncode == 0, result.stderr
    assert "| argv: a | name: __main__" in result.stdout
    sim.fail(404, path=COMPLEXES + "/1", times=1)
    assert launch([*CLI, "run", SCRIPT, sim.url], env).returncode == 4
    crashed = launch([*CLI, "run", SCRIPT, sim.url, "--crash"], env)
    assert crashed.returncode == 1
    assert "RuntimeError: the script's own error" in crashed.stderr  # its own traceback


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RBE_MAX_RETRIES", "lots"),
        ("RBE_DEADLINE", "0"),
        ("RBE_MAX_RETRY_AFTER", "-1"),
        ("RBE_RAISE_ERRORS", "maybe"),
        ("RBE_LOG_LEVEL", "LOUD"),
        ("RBE_PREFIX", "https://"),
        ("RBE_PREFIX", "https://user:PASSW0RD@host/"),
        ("BLOXS_BASE_URL", "ftp://nowhere"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_before_the_script_starts(sim, variable, value):
    result = launch([*CLI, "run", SCRIPT, sim.url], env_for(sim, **{variable: value}))
    assert_one_line_error(result)
    assert variable in result.stderr
    assert "PASSW0RD" not in result.stderr
    assert result.stdout == ""  # the script never ran
    assert sim.token_requests() == []


def test_config_shows_the_configuration_with_secrets_masked(sim):
    env = env_for(sim, RBE_DEADLINE="30")
    result = launch([*CLI, "config"], env)
    assert result.returncode == 0, result.stderr
    _, secret = sim.bloxs_credentials
    assert secret not in result.stdout
    assert re.search(r"BLOXS_API_SECRET +set +\*\*\* ", result.stdout)
    assert f"prefix: {sim.url}/" in result.stdout
    assert "deadline: 30.0" in result.stdout
    assert "auth: BloxsTokenAuth" in result.stdout


def test_install_from_env_in_python(sim, monkeypatch):
    for name, value in env_for(sim, RBE_MAX_RETRIES="2").items():
        monkeypatch.setenv(name, value)
    config = rbe.install_from_env()
    assert config.prefix == sim.url + "/"
    import requests

    response = requests.get(sim.url + COMPLEXES)  # signed by the installed adapter
    assert response.status_code == 200
    assert len(sim.token_requests()) == 1
    with pytest.raises(rbe.ConfigError, match="RBE_MAX_RETRIES"):
        rbe.install_from_env({"RBE_MAX_RETRIES": "-3"})


JOB = """\
import sys

import requests

try:
    answer = requests.get(sys.argv[1], timeout=10)
except requests.HTTPError as exc:
    print("raised", type(exc).__name__)
    sys.exit(3)
print("answered", answer.status_code, "| argv:", " ".join(sys.argv[1:]))
"""


def test_16_run_raise_errors_is_a_flag_that_never_takes_the_scripts_name(server, tmp_path):
    server.route("GET", "/gone", Reply(404, "no such thing"))
    job = tmp_path / "job.py"
    job.write_text(JOB)
    url = server.url("/gone")
    env = {**os.environ, "NO_COLOR": "1", "RBE_PREFIX": server.url("/"), "RBE_LOG_LEVEL": "OFF"}
    raised = launch([*CLI, "run", "--raise-errors", str(job), url], env)
    assert raised.returncode == 3, raised.stderr
    assert raised.stdout == "raised NotFoundError\n"
    answered = launch(
        [*CLI, "run", "--no-raise-errors", str(job), url, "--raise-errors"],
        {**env, "RBE_RAISE_ERRORS": "1"},  # the flag wins; the script's own args are its own
    )
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == f"answered 404 | argv: {url} --raise-errors\n"
    old_form = launch([*CLI, "run", "--raise-errors", "1", str(job), url], env)
    assert_one_line_error(old_form)
    assert "--raise-errors takes no value" in old_form.stderr
    helped = launch([*CLI, "run", "--help"], env)
    assert helped.returncode == 0
    assert "run --raise-errors SCRIPT" in " ".join(helped.stdout.split())
