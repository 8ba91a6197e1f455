"""Every small text says what is true, one way: ``--log-level``'s choices, the
unset-prefix message, a ``config`` table that fits the terminal and marks set values
from defaults, a description for every command, the ``RBE_TOKEN_CACHE`` help, the
replay summary, the missing ``otel`` extra, and times in ISO 8601 UTC."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors.resilience.outbox import ReplayReport, ReplayResult
from requests_bloxs_errors.switches import SWITCH_WORDS
from requests_bloxs_errors.tools.cli import _parser
from requests_bloxs_errors.tools.envconfig import VARIABLES
from requests_bloxs_errors.tools.outbox_cli import replay_summary
from requests_bloxs_errors.tools.settings import LEVELS

from ..helpers.cli import CLI, launch, run
from ..helpers.server import Reply

ROOT = str(Path(__file__).resolve().parents[2])
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
#: Commands another change reworks (their descriptions come with it).
REWORKED = {"simulate", "status"}


def _commands(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:  # argparse keeps subcommands here, and only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((f"{path} {name}".strip(), sub))
                found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_has_a_description_in_its_help():
    commands = [(name, sub) for name, sub in _commands(_parser(), "") if name not in REWORKED]
    assert {"demo", "explain", "table", "config", "run", "request", "outbox replay"} <= {
        name for name, _ in commands
    }
    for name, sub in commands:
        assert sub.description, name
        assert " ".join(sub.description.split())[:40] in " ".join(sub.format_help().split())


def test_run_help_offers_every_log_level_it_takes_and_off_silences_it(server, tmp_path):
    shown = launch([*CLI, "run", "--help"], {"COLUMNS": "200"})
    assert "--log-level LOG_LEVEL DEBUG, INFO, WARNING, ERROR or OFF (RBE_LOG_LEVEL)" in " ".join(
        shown.stdout.split()
    )
    assert list(LEVELS) == ["DEBUG", "INFO", "WARNING", "ERROR", "OFF"]
    server.route("GET", "/x", Reply(500, "down"))
    script = tmp_path / "job.py"
    script.write_text(f"import requests\nrequests.get({server.url('/x')!r}, timeout=5)\n")
    env = {"RBE_PREFIX": "http://", "RBE_MAX_RETRIES": "1", "RBE_DEADLINE": "5"}
    loud = launch([*CLI, "run", str(script)], env)
    assert re.search(rf"^{ISO} WARNING requests_bloxs_errors: Retrying GET", loud.stderr, re.M)
    quiet = launch([*CLI, "run", "--log-level", "off", str(script)], env)
    assert quiet.returncode == 0
    assert quiet.stderr == ""


def test_the_token_cache_help_offers_only_stores_that_share_among_processes():
    (cache,) = [v for v in VARIABLES if v.name == "RBE_TOKEN_CACHE"]
    assert "memory://" not in cache.what
    assert "sqlite:////absolute/path.db" in cache.what
    assert "redis://host:port/db" in cache.what
    shown = launch([*CLI, "run", "--help"], {"COLUMNS": "200"})
    help_text = " ".join(shown.stdout.split())
    assert f"RBE_TOKEN_CACHE {cache.what}" in help_text
    env = {"BLOXS_BASE_URL": "https://acme.bloxs.io", "BLOXS_API_KEY": "k"}
    env |= {"BLOXS_API_SECRET": "s", "RBE_TOKEN_CACHE": "memory://"}
    refused = launch([*CLI, "config"], env)
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith(
        "RBE_TOKEN_CACHE must be sqlite:////absolute/path.db, redis://host:port/db, "
        "rediss://host:port/db, redis+sentinel://host:26379[,host:port...]/service[/db] or "
        "redis+cluster://host:port[,host:port...]; got 'memory://' (it shares nothing among "
        "processes)"
    )


def test_without_a_prefix_the_unused_adapter_message_names_what_it_serves(server, tmp_path):
    server.route("GET", "/x", Reply(200, "ok"))
    script = tmp_path / "job.py"
    script.write_text(f"import requests\nrequests.get({server.url('/x')!r}, timeout=5)\n")
    ran = launch([*CLI, "run", str(script)], {})
    assert ran.returncode == 0, ran.stderr
    (line,) = [line for line in ran.stderr.splitlines() if "RBE_PREFIX" in line]
    assert "https:///" not in line
    assert (
        "the script made 1 request(s) and none was under https://, all the adapter serves "
        "while RBE_PREFIX is not set" in line
    )
    shown = launch([*CLI, "config"], {})
    assert shown.stdout.splitlines()[0] == "prefix: https://"


@pytest.mark.parametrize("columns", [60, 80, 132])
def test_the_config_table_fits_the_terminal_and_marks_set_values_from_defaults(columns):
    env = {
        "COLUMNS": str(columns),
        "RBE_MAX_RETRIES": "5",
        "RBE_RATE_LIMIT": "bloxs",
        "RBE_STORAGE": "sqlite:////tmp/rbe-texts-never-opened.db",
    }
    shown = launch([*CLI, "config"], env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= columns
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["variable", "from", "value", "what"]
    rows = {line.split()[0]: line.split()[1:3] for line in table[2:] if not line.startswith(" ")}
    assert set(rows) == {v.name for v in VARIABLES}
    assert rows["RBE_MAX_RETRIES"] == ["set", "5"]
    assert rows["RBE_RATE_LIMIT"] == ["set", "bloxs"]
    assert rows["RBE_DEADLINE"] == ["default", "none"]
    assert rows["RBE_LOG_LEVEL"][0] == "default"  # run's WARNING, not something set
    assert rows["RBE_OUTBOX"] == ["default", "none"]


def test_piped_without_columns_the_config_table_is_not_wrapped():
    shown = launch([*CLI, "config"], {"RBE_MAX_RETRIES": "5"})
    lines = shown.stdout.splitlines()
    table = lines[lines.index("") + 3 :]
    assert [line.split()[0] for line in table] == [v.name for v in VARIABLES]  # a line each
    (retries,) = [line for line in table if line.startswith("RBE_MAX_RETRIES ")]
    assert retries.split()[1:4] == ["set", "5", "retries"]


def test_the_replay_summary_names_each_reason_an_entry_stays_queued():
    report = ReplayReport(
        sent=(1,),
        failed=(2, 3, 4),
        skipped=(5, 6),
        results=(
            ReplayResult(1, "sent", 201, "201 Created"),
            ReplayResult(2, "failed", 503, "503 Service Unavailable"),
            ReplayResult(3, "failed", 503, "503 Service Unavailable"),
            ReplayResult(4, "dead", 400, "400 Bad Request"),
            ReplayResult(5, "skipped", None, "uncertain: the server may have processed it"),
            ReplayResult(6, "skipped", None, "another replayer is sending it"),
        ),
    )
    assert replay_summary(report) == (
        "1 sent, 2 failed, 1 dead, 2 skipped. 4 stay queued: 2 x 503 Service Unavailable; "
        "1 x uncertain: the server may have processed it; 1 x another replayer is sending "
        "it. 1 refused for good: see 'outbox show ID', then drop"
    )
    told = replay_summary(report, {2: "503 Service Unavailable: behind a proxy"})
    assert "1 x 503 Service Unavailable: behind a proxy; 1 x 503 Service Unavailable;" in told


def test_the_outbox_prints_its_times_in_iso_8601_utc_with_their_age(server, session, outbox_url):
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    listed = run("outbox", "list", "--db", outbox_url)
    assert re.search(rf"^1 +{ISO} \(\d+s ago\) +PUT", listed.stdout.splitlines()[2])
    shown = run("outbox", "show", "1", "--db", outbox_url)
    assert re.search(
        rf"^  queued: +{ISO} \(\d+s ago\), internal_server_error 500$", shown.stdout, re.M
    )
    as_json = json.loads(run("outbox", "list", "--json", "--db", outbox_url).stdout)
    assert re.fullmatch(ISO, as_json[0]["queued"])


def test_telemetry_asked_for_without_the_extra_is_one_line_and_the_script_runs(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if the extra were not installed\n"
        "from requests_bloxs_errors.tools.cli import main\n"
        f"sys.exit(main(['run', {str(script)!r}]))\n"
    )
    asked = launch([sys.executable, "-c", code], {"RBE_TELEMETRY": "on"})
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout == "ran\n"
    (line,) = asked.stderr.splitlines()
    assert re.match(rf"^{ISO} WARNING requests_bloxs_errors: RBE_TELEMETRY=on needs", line)
    assert "pip install 'requests-bloxs-errors[otel]'" in line
    assert line.endswith("; telemetry stays off")
    for value in ("off", ""):
        quiet = launch([sys.executable, "-c", code], {"RBE_TELEMETRY": value})
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "ran\n", "")


def test_every_adapter_reads_rbe_telemetry_with_runs_words_and_says_a_missing_extra(tmp_path):
    code = (
        "import logging, os, sys\n"
        "sys.modules['opentelemetry'] = None  # as if the extra were not installed\n"
        "import requests, requests_bloxs_errors as rbe\n"
        "logging.basicConfig(format='%(levelname)s %(message)s')\n"
        "for value in sys.argv[1:]:\n"
        "    os.environ['RBE_TELEMETRY'] = value\n"
        "    try:\n"
        "        rbe.mount(requests.Session(), 'https://')\n"
        "        print(value, 'mounted')\n"
        "    except ValueError as exc:\n"
        "        print(value, exc)\n"
    )
    asked = launch([sys.executable, "-c", code, "yes", "on"], {})
    assert asked.stdout.splitlines() == ["yes mounted", "on mounted"], asked.stderr
    (line,) = asked.stderr.splitlines()  # once a process, however many adapters
    assert line.startswith("WARNING RBE_TELEMETRY=yes needs the 'opentelemetry-api' package")
    assert line.endswith("; telemetry stays off")
    quiet = launch([sys.executable, "-c", code, "off", "NO", "", "0", "maybe"], {})
    assert quiet.stderr == ""
    assert quiet.stdout.splitlines() == [
        "off mounted",
        "NO mounted",
        " mounted",
        "0 mounted",
        f"maybe RBE_TELEMETRY must be {SWITCH_WORDS}, not 'maybe'",
    ]
