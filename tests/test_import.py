"""What ``import requests_bloxs_errors`` loads: no optional part until it is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests_bloxs_errors as rbe

HEAVY = ("sqlite3", "redis", "cryptography", "opentelemetry", "argparse", "http.server")


def test_the_import_loads_no_optional_part():
    script = (
        "import sys, requests_bloxs_errors as rbe\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.startswith('requests_bloxs_errors.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    loaded = eval(out[1])
    assert not [m for m in loaded if m.split(".")[1] in ("resilience", "tools", "simulator")]
    assert "requests_bloxs_errors.storage" not in loaded


def test_lazy_names_load_on_first_use_and_are_listed():
    script = (
        "import sys, requests_bloxs_errors as rbe\n"
        "assert 'sqlite3' not in sys.modules\n"
        "rbe.RateLimit, rbe.Outbox, rbe.CircuitBreaker, rbe.install_from_env, rbe.ConfigError\n"
        "assert {'RateLimit', 'Outbox', 'install_from_env'} <= set(dir(rbe))\n"
        "try:\n"
        "    rbe.NoSuchThing\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "has no attribute 'NoSuchThing'" in out
    assert set(rbe.__all__) <= set(dir(rbe))


def test_the_benchmarks_helpers_load_without_pytest():
    """``python -m benchmarks`` runs with the ``bench`` extra alone: the test helpers it
    starts Redis and its raw servers with must not need pytest."""
    script = (
        "import sys\n"
        "sys.modules['pytest'] = None  # as if it were not installed\n"
        "import tests.helpers.redisserver, tests.helpers.rawserver, benchmarks.server\n"
        "print('loaded')\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded"
