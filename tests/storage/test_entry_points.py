"""A storage backend from an installed distribution (issue 28): its entry point in the
group ``requests_bloxs_errors.storage`` makes its scheme good for ``run``, ``status``
and every ``RBE_*`` URL, loaded only when a URL names it.

The "installed" distribution is real metadata on disk: a folder with a
``*.dist-info`` (``METADATA``, ``entry_points.txt``) and the backend's module,
put on ``PYTHONPATH`` of real subprocesses, as ``pip install`` would leave it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers.cli import CLI, assert_one_line_error
from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]

#: A user's backend: ``dict:///folder`` keeps the rate limit's permits in
#: ``folder/dict.db`` (the SQLite backend's tables: the point here is the scheme,
#: not the store), and writes one line to ``folder/marker`` per permit it is asked
#: for, which proves that it served the calls.
BACKEND = '''
"""dict:///folder: a storage backend of one's own."""
import os

from requests_bloxs_errors.storage import StorageURL
from requests_bloxs_errors.storage.sqlite import SQLiteBackend


class DictBackend(SQLiteBackend):
    @classmethod
    def check_url(cls, storage, what):
        folder = storage.url.partition("://")[2]
        if not folder.startswith("/"):
            raise ValueError(f"{what} must be dict:///absolute/folder")
        return StorageURL("dict", storage.url, path=os.path.join(folder, "dict.db"))

    def acquire(self, key, *args, **kwargs):
        with open(os.path.join(os.path.dirname(self.storage.path), "marker"), "a") as marker:
            marker.write(f"{os.getpid()} {key}\\n")
        return super().acquire(key, *args, **kwargs)
'''

ENTRY_POINTS = """
[requests_bloxs_errors.storage]
dict = dictstore:DictBackend
sqlite = dictstore:DictBackend
broken = dictstore_missing_module:Backend
"""

SCRIPT = """
import sys
import requests

for _ in range(3):
    print(requests.get(sys.argv[1], timeout=10).status_code)
"""


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A folder as ``pip install dictstore`` would leave it in site-packages."""
    site = tmp_path / "site"
    info = site / "dictstore-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dictstore\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "dictstore.py").write_text(BACKEND)
    return site


def _env(site: Path, **variables: str) -> dict[str, str]:
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "NO_COLOR": "1", "PYTHONPATH": path, **variables}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )


def test_run_and_status_use_a_backend_an_installed_distribution_names(installed, tmp_path, server):
    server.route("GET", "/items", Reply(200, "ok"))
    folder = tmp_path / "store"
    folder.mkdir()
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = _env(
        installed,
        RBE_STORAGE=f"dict://{folder}",
        RBE_RATE_LIMIT="100/hour",
        RBE_PREFIX=server.url("/"),
    )
    ran = _run([*CLI, "run", str(script), server.url("/items")], env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["200"] * 3
    assert len(server.seen("GET", "/items")) == 3
    marker = (folder / "marker").read_text().splitlines()
    assert len(marker) == 3  # one permit asked of the backend per call
    assert {line.split()[1] for line in marker} == {server.url("").rstrip("/") + "|*"}
    assert {line.split()[0] for line in marker} != {str(os.getpid())}  # (the run's process)

    shown = _run([*CLI, "status", "--storage", f"dict://{folder}", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["storage"]["entries"]
    assert (row["namespace"], row["category"]) == (server.url("").rstrip("/"), "*")
    assert (row["rule"], row["used"], row["in_flight"], row["waiting"]) == ([100, 3600.0], 3, 0, 0)
    text = _run([*CLI, "status"], env, tmp_path)  # (RBE_STORAGE names it)
    assert text.returncode == 0, text.stderr
    assert f"rate-limit storage: dict://{folder}" in text.stdout
    origin = server.url("").rstrip("/")
    line = next(line for line in text.stdout.splitlines() if line.startswith(origin))
    assert "100 per 3600s" in line
    assert "3 used" in line


_LISTED = """
import json, sys
from requests_bloxs_errors import storage

listed = storage.schemes()
limits = storage.accepted(storage.PermitLog)
imported = "dictstore" in sys.modules
storage.parse(sys.argv[1], capability=storage.PermitLog)
loaded = "dictstore" in sys.modules
print(json.dumps({
    "listed": listed, "limits": limits, "imported": imported, "loaded": loaded,
    "limits_after": storage.accepted(storage.PermitLog),
    "sqlite": storage.backend_class("sqlite").__module__,
}))
"""


def test_an_installed_scheme_is_listed_unimported_and_loaded_when_a_url_names_it(
    installed, tmp_path
):
    found = _run([sys.executable, "-c", _LISTED, f"dict://{tmp_path}"], _env(installed), tmp_path)
    assert found.returncode == 0, found.stderr
    said = json.loads(found.stdout)
    assert "dict://..." in said["listed"]
    assert "broken://..." in said["listed"]
    assert said["imported"] is False  # listing it imported nothing
    assert "dict://" not in said["limits"]  # what it offers is not known before it loads
    assert said["loaded"] is True
    assert said["limits_after"].endswith(" or dict://...")
    # an entry point never takes a built-in scheme over
    assert said["sqlite"] == "requests_bloxs_errors.storage.sqlite"


_ONCE = """
import sys
from requests_bloxs_errors import storage

storage.parse(sys.argv[1])
storage.unregister_backend("dict")
try:
    storage.parse(sys.argv[1])
except ValueError as exc:
    print(exc)
"""


def test_an_entry_point_is_loaded_once_per_process(installed, tmp_path):
    found = _run([sys.executable, "-c", _ONCE, f"dict://{tmp_path}"], _env(installed), tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("storage must be memory://")  # not loaded again


def test_a_broken_entry_point_is_one_line_naming_it(installed, tmp_path):
    env = _env(installed, RBE_RATE_LIMIT="5/second", RBE_STORAGE="broken://somewhere")
    script = tmp_path / "script.py"
    script.write_text("print('never')\n")
    refused = _run([*CLI, "run", str(script)], env, tmp_path)
    assert_one_line_error(refused)
    for said in (
        "broken:// is served by the entry point "
        "'broken = dictstore_missing_module:Backend' of dictstore 1.0",
        "cannot be loaded: ModuleNotFoundError: No module named 'dictstore_missing_module'",
    ):
        assert said in refused.stderr
    assert "never" not in refused.stdout
    shown = _run([*CLI, "status"], env, tmp_path)
    assert shown.returncode == 1
    lines = [line for line in shown.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "entry point 'broken = dictstore_missing_module:Backend'" in lines[0]
    assert "Traceback" not in shown.stderr


def test_an_unknown_scheme_is_still_refused_with_what_is_accepted(installed, tmp_path):
    env = _env(installed, RBE_RATE_LIMIT="5/second", RBE_STORAGE="mongo://x")
    script = tmp_path / "script.py"
    script.write_text("print('never')\n")
    refused = _run([*CLI, "run", str(script)], env, tmp_path)
    assert_one_line_error(refused)
    assert "RBE_STORAGE must be memory://" in refused.stderr


def test_no_entry_point_is_read_while_every_url_names_a_built_in_scheme(tmp_path):
    """A process that only uses built-in schemes never reads the installed metadata."""
    code = (
        "import importlib.metadata as m, sys\n"
        "m.entry_points = None  # reading it now would fail\n"
        "from requests_bloxs_errors import storage\n"
        "storage.parse(sys.argv[1], capability=storage.PermitLog)\n"
        "storage.parse('memory://')\n"
        "print(storage.accepted(storage.OutboxStore))\n"
    )
    found = _run(
        [sys.executable, "-c", code, f"sqlite:///{tmp_path}/x.db"], _env(tmp_path), tmp_path
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "sqlite:////absolute/path.db"
