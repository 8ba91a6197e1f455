"""Where an outbox on a backend of your own keeps its sealing key (issue 26, point 12).

A registered backend has no SQLite path: its key went to ``./.key`` in whatever
directory the process ran in, and a replay run elsewhere found every entry
unreadable. The backend names the key's file (``key_path``), or the outbox
refuses it when it is configured.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors import storage

from ..helpers.server import Reply
from ..helpers.vault_backend import KeyedVaultBackend, VaultBackend

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = "tests.helpers.vault_backend"

_REPLAY = f"""
import sys, requests, requests_bloxs_errors as rbe
from requests_bloxs_errors import storage
storage.register_backend("vault", "{BACKENDS}:KeyedVaultBackend")
report = rbe.Outbox(sys.argv[1]).replay(requests.Session())
print(report.sent, [r.reason for r in report.results])
"""


@pytest.fixture
def vault() -> Iterator[None]:
    yield
    with contextlib.suppress(KeyError):  # (registered in this process, or only in another)
        storage.unregister_backend("vault")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory this process runs in: not where the store is."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_12_a_custom_outbox_backend_that_names_no_key_file_is_refused(
    vault, elsewhere, tmp_path, session
):
    storage.register_backend("vault", VaultBackend)
    with pytest.raises(ValueError, match="key_path") as caught:
        rbe.Outbox(f"vault://{tmp_path}")
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="key_path"):
        rbe.mount(session, "http://", outbox=f"vault://{tmp_path}")
    assert list(elsewhere.iterdir()) == []  # no key left where the process ran


def test_12_a_custom_outbox_backend_keeps_its_key_where_it_says_for_a_replay_elsewhere(
    vault, elsewhere, tmp_path, server, session
):
    storage.register_backend("vault", KeyedVaultBackend)
    server.route("PUT", "/r", Reply(503, "down"), Reply(201, "made"))
    rbe.mount(session, "http://", outbox=f"vault://{tmp_path}", max_retries=0)
    assert session.put(server.url("/r?k=v"), data=b"x").status_code == 503
    key = tmp_path / "vault.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert list(elsewhere.iterdir()) == []
    other = tmp_path / "another-directory"
    other.mkdir()
    replay = subprocess.run(
        [sys.executable, "-c", _REPLAY, f"vault://{tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=other,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.split("\n")[0] == "(1,) ['201 Created']"
    assert server.seen("PUT", "/r")[-1].body == b"x"
