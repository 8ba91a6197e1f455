"""The demo's outage scene, with and without the ``crypto`` extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from requests_bloxs_errors.resilience.outbox import ReplayReport, ReplayResult
from requests_bloxs_errors.tools.outbox_cli import replay_summary

from ..helpers.cli import run

pytestmark = pytest.mark.slow  # the demo

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_shows_the_outage_and_the_replay():
    finished = run("demo", timeout=120)
    assert finished.returncode == 0, finished.stdout[-2000:]
    assert "circuit open: a local 503, not sent; kept as outbox entry" in finished.stdout
    sent = ReplayReport(results=tuple(ReplayResult(n, "sent", 201) for n in range(1, 7)))
    # the replay's summary in the words 'outbox replay' prints
    assert f"   {replay_summary(sent)}\n" in finished.stdout
    assert "   6 sent, 0 failed, 0 dead, 0 skipped\n" in finished.stdout


def test_the_demo_runs_without_the_crypto_extra_and_says_what_it_skipped():
    code = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys([n for n in sys.modules if 'cryptography' in n]))\n"
        "sys.modules['cryptography'] = None\n"
        "from requests_bloxs_errors.tools.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-2000:]
    assert "skipped: the outbox needs the 'cryptography' package" in finished.stdout
