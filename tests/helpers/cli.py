"""The command line as a user runs it: a subprocess, its output and exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["CLI", "ROOT", "assert_one_line_error", "assert_users_suite_passes", "launch", "run"]

CLI = [sys.executable, "-m", "requests_bloxs_errors"]
#: The project's folder, where a command line runs (``python -m`` finds the package).
ROOT = Path(__file__).resolve().parents[2]
#: The prefixes of the package's variables: a user's shell may set them, a test must not
#: inherit them.
OURS = ("RBE_", "BLOXS_", "DEALCLOUD_")


def launch(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the command line ``args`` in :data:`ROOT` with this environment less the
    package's variables and ``COLUMNS`` (a terminal's width), plus ``NO_COLOR=1``
    and ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(OURS) and k != "COLUMNS"}
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**clean, "NO_COLOR": "1", **env},
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("requests-bloxs-errors: error:")


def assert_users_suite_passes(folder) -> None:
    """Run pytest on another project's test folder, as its owner would; one test must pass."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
