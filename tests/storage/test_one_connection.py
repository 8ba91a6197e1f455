"""One connection per SQLite file per process (issue 26, point 1): what one process
writes through any of the objects that name a file, every other process sees.

Closing any descriptor of a file drops every POSIX lock the process holds on it;
SQLite then took another process for the file's last user, and that process
deleted the write-ahead log under the live connection: what went into it
afterwards was never seen again. Each test writes, opens the file again in the
same process (under another object, or another spelling of its path), lets a
real second process read it, writes again, and asks the second process again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.storage import parse
from requests_bloxs_errors.storage.sqlite import SQLiteBackend

from ..helpers.cli import run
from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]


def _queued(session: requests.Session, url: str) -> int | None:
    """The outbox entry a failing POST was queued as."""
    response = session.post(url, data=b"x")
    assert response.status_code == 503
    with pytest.raises(rbe.ServiceUnavailableError) as caught:
        response.raise_for_status()
    return caught.value.outbox_id


def _listed(outbox_url: str) -> list[int]:
    """The entry ids ``outbox list`` shows in another process."""
    listed = run("outbox", "list", "--json", "--db", outbox_url)
    assert listed.returncode == 0, listed.stderr
    return [entry["id"] for entry in json.loads(listed.stdout)]


def test_1_writes_queued_after_a_replay_object_read_the_outbox_reach_other_processes(
    server, session, outbox_url
):
    server.route("POST", "/w", Reply(503, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    queued = [_queued(session, server.url("/w"))]
    # what the Outbox docstring shows for a replay, in the process that queues
    assert [entry.id for entry in rbe.Outbox(outbox_url).entries()] == [1]
    assert _listed(outbox_url) == [1]
    queued += [_queued(session, server.url("/w")), _queued(session, server.url("/w"))]
    assert queued == [1, 2, 3]  # what the adapter said it kept
    assert _listed(outbox_url) == [1, 2, 3]


def _used(storage: str) -> int:
    """The permits of the current period that ``status`` counts in another process."""
    status = run("status", "--json", "--storage", storage)
    assert status.returncode == 0, status.stderr
    return sum(row["used"] for row in json.loads(status.stdout)["storage"]["entries"])


def test_1_permits_of_a_rate_limit_built_per_task_on_one_file_reach_other_processes(
    server, tmp_path
):
    server.route("GET", "/x", Reply(200, "ok"))
    (tmp_path / "link").symlink_to(tmp_path)  # the same file under another URL
    url = f"sqlite:///{tmp_path}/limit.db"
    first, second = requests.Session(), requests.Session()
    try:
        for session, storage in ((first, url), (second, f"sqlite:///{tmp_path}/link/limit.db")):
            rbe.mount(
                session, "http://", rate_limit=rbe.RateLimit({"*": "100/hour"}, storage=storage)
            )
        assert first.get(server.url("/x")).ok
        assert second.get(server.url("/x")).ok
        assert _used(url) == 2
        assert first.get(server.url("/x")).ok
        assert first.get(server.url("/x")).ok
        assert _used(url) == 4
    finally:
        first.close()
        second.close()


def _peer_tokens(cache: str, *keys: str) -> dict[str, str]:
    """The token another process finds in ``cache`` for each ``cache_key``."""
    peer = subprocess.run(
        [sys.executable, "-m", "tests.helpers.token_peer", cache, *keys],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert peer.returncode == 0, peer.stderr
    found: dict[str, str] = json.loads(peer.stdout)
    return found


def test_1_tokens_of_two_credentials_caching_in_one_file_reach_other_processes(tmp_path):
    cache = f"sqlite:///{tmp_path}/tokens.db"
    issued = iter(["bloxs-1", "bloxs-2"])
    bloxs = rbe.TokenAuth(lambda: (next(issued), 900.0), cache=cache, cache_key="bloxs-key")
    dealcloud = rbe.TokenAuth(lambda: ("dealcloud-1", 900.0), cache=cache, cache_key="dc-key")
    request = requests.Request("GET", "http://127.0.0.1/").prepare()
    bloxs(request)
    dealcloud(requests.Request("GET", "http://127.0.0.1/").prepare())
    assert _peer_tokens(cache, "bloxs-key", "dc-key") == {
        "bloxs-key": "bloxs-1",
        "dc-key": "dealcloud-1",
    }
    assert bloxs.refresh(request, requests.Response())  # bloxs-1 was refused: renewed
    assert bloxs.current()[0] == "bloxs-2"
    assert _peer_tokens(cache, "bloxs-key") == {"bloxs-key": "bloxs-2"}


def _peer_count(path: Path) -> int:
    """The rows of the table ``app`` another process reads from ``path`` (then closes it)."""
    code = (
        "import sqlite3, sys\n"
        "print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM app').fetchone()[0])"
    )
    peer = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert peer.returncode == 0, peer.stderr
    return int(peer.stdout)


def test_1_opening_a_file_the_process_has_open_keeps_its_connection_seen(server, session, tmp_path):
    path = tmp_path / "app.db"
    path.touch(mode=0o600)
    own = sqlite3.connect(path, isolation_level=None)  # the application's own connection
    try:
        own.execute("PRAGMA journal_mode=WAL")
        own.execute("CREATE TABLE app (n INTEGER)")
        own.execute("INSERT INTO app VALUES (1)")
        server.route("POST", "/w", Reply(503, "down"))
        rbe.mount(session, "http://", outbox=f"sqlite:///{path}", max_retries=0)
        assert _queued(session, server.url("/w")) == 1  # the outbox opens the same file
        assert _peer_count(path) == 1
        own.execute("INSERT INTO app VALUES (2)")
        assert _peer_count(path) == 2
    finally:
        own.close()


_FORKING = """
import os, sys
from requests_bloxs_errors.storage import parse
from requests_bloxs_errors.storage.sqlite import SQLiteBackend
store = SQLiteBackend(parse(sys.argv[1]))
store.acquire("k", (100, 3600.0), 1)
with store.file.connection():  # forked while this process's lock on the file is held
    child = os.fork()
    if child == 0:
        try:
            store.acquire("k", (100, 3600.0), 1)  # a connection (and a lock) of its own
            store.close()
        except BaseException:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
store.acquire("k", (100, 3600.0), 1)  # the parent's connection, still
print(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own(tmp_path):
    url = f"sqlite:///{tmp_path}/limit.db"
    forking = subprocess.run(
        [sys.executable, "-c", _FORKING, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert forking.returncode == 0, forking.stderr
    assert forking.stdout.strip() == "0"  # the child's permit was granted
    assert _used(url) == 3


def _descriptors(path: Path) -> int:
    """How many descriptors this process has open on the file ``path`` (not its side
    files): as the kernel sees it, one per SQLite connection to it."""
    target = os.path.realpath(path)
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own descriptor, closed by now)
            found += os.readlink(f"/proc/self/fd/{fd}") == target
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_one_connection_serves_every_object_naming_the_file_until_its_last_user_closes(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path)
    path = tmp_path / "s.db"
    one = SQLiteBackend(parse(f"sqlite:///{path}"))
    two = SQLiteBackend(parse(f"sqlite:///{tmp_path}/link/s.db"))
    one.write("a", b"1", 60)
    assert _descriptors(path) == 1
    assert two.read("a") == b"1"
    assert _descriptors(path) == 1  # the other spelling of the path shares the connection
    one.close()
    assert two.read("a") == b"1"
    assert _descriptors(path) == 1  # still open for the other user
    two.close()
    assert _descriptors(path) == 0  # closed with its last user
