"""Hardening of the shared-state features (issue 17): each test is named after the
behaviour it holds; each section names the finding it came from.

Real loopback servers, a real ``redis-server``, real SQLite files and the real
command line in subprocesses; where a test checks a timing rule, the breaker or
the permit store runs on a :class:`~requests_bloxs_errors.clock.FakeClock`. The
stores that never answer are real time (a busy timeout, a socket's): there the
call's outcome and the time each store operation was given are checked.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import STORE_SHARE, STORE_TIMEOUT, parse
from requests_bloxs_errors.storage.memory import MemoryBackend
from requests_bloxs_errors.storage.redis import RedisBackend
from requests_bloxs_errors.storage.sqlite import SQLiteBackend
from requests_bloxs_errors.tools.envconfig import ConfigError, config_from_env

from ..helpers import refused, wait_until
from ..helpers.cli import run
from ..helpers.server import Reply, json_reply

SECRET = "s3cr3t-api-secret-value"
KEY = "key-0123456789"
#: Variables of the runner's environment that must not reach a command under test.
NO_CREDENTIALS = dict.fromkeys(
    (
        "BLOXS_BASE_URL",
        "BLOXS_API_KEY",
        "BLOXS_API_SECRET",
        "BLOXS_HMAC",
        "DEALCLOUD_TOKEN_URL",
        "DEALCLOUD_CLIENT_ID",
        "DEALCLOUD_CLIENT_SECRET",
        "RBE_TOKEN_CACHE",
        "RBE_OUTBOX",
    ),
    "",
)


def origin(server) -> str:
    return server.url("").rstrip("/")


def one_line_exit_2(finished: subprocess.CompletedProcess[str]) -> str:
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, finished.stderr
    return lines[0]


# -- credentials go only to the API they are for (finding 1) ---------------------------


def _queue_a_webhook_then_an_api_write(api, webhook, outbox_url: str) -> None:
    webhook.route("POST", "/hook", Reply(500, "down"))
    api.route("POST", "/orders", Reply(500, "down"))
    with requests.Session() as session:
        rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
        session.post(webhook.url("/hook"), data=b"event", headers={"Idempotency-Key": "1"})
        session.post(api.url("/orders"), data=b"order", headers={"Idempotency-Key": "2"})
    assert [e.host for e in rbe.Outbox(outbox_url).entries()] == [
        f"http://{webhook.host}:{webhook.port}",
        f"http://{api.host}:{api.port}",
    ]


def test_replay_without_a_base_url_refuses_and_sends_no_secret_anywhere(
    server, other_server, outbox_url
):
    _queue_a_webhook_then_an_api_write(server, other_server, outbox_url)
    before = (len(server.seen()), len(other_server.seen()))
    env = {**NO_CREDENTIALS, "BLOXS_API_KEY": KEY, "BLOXS_API_SECRET": SECRET}
    finished = run("outbox", "replay", "--db", outbox_url, env=env)
    line = one_line_exit_2(finished)
    assert "BLOXS_BASE_URL" in line
    assert SECRET not in finished.stdout + finished.stderr
    assert (len(server.seen()), len(other_server.seen())) == before  # nothing was sent
    assert len(rbe.Outbox(outbox_url).entries()) == 2


def test_replay_signs_only_entries_for_the_credentials_origin(server, other_server, outbox_url):
    _queue_a_webhook_then_an_api_write(server, other_server, outbox_url)
    server.route("POST", "/Authorization", json_reply(200, '{"token": "tok-fresh"}'))
    server.route("POST", "/orders", Reply(201, "created"))
    other_server.route("POST", "/hook", Reply(200, "ok"))
    env = {
        **NO_CREDENTIALS,
        "BLOXS_API_KEY": KEY,
        "BLOXS_API_SECRET": SECRET,
        "BLOXS_BASE_URL": origin(server),
    }
    finished = run("outbox", "replay", "--db", outbox_url, env=env)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "2 sent, 0 failed" in finished.stdout
    (hook,) = other_server.seen("POST", "/hook")[1:]
    assert "Authorization" not in hook.headers
    assert all(SECRET.encode() not in r.body for r in other_server.seen())
    assert other_server.seen("POST", "/Authorization") == []
    (token_request,) = server.seen("POST", "/Authorization")
    assert token_request.json() == {"apiKey": KEY, "apiSecret": SECRET}
    (order,) = server.seen("POST", "/orders")[1:]
    assert order.headers["Authorization"] == "Bearer tok-fresh"


def test_replay_without_credentials_says_it_sends_unsigned(server, other_server, outbox_url):
    _queue_a_webhook_then_an_api_write(server, other_server, outbox_url)
    server.route("POST", "/orders", Reply(201, "created"))
    other_server.route("POST", "/hook", Reply(200, "ok"))
    finished = run("outbox", "replay", "--db", outbox_url, env=NO_CREDENTIALS)
    assert finished.returncode == 0
    assert "sent unsigned" in finished.stdout
    assert all("Authorization" not in r.headers for r in server.seen() + other_server.seen())


# -- a credential's own request is never kept (finding 2) ------------------------------


def test_a_token_request_made_inside_a_fetch_is_never_queued(server, outbox_url):
    server.route("POST", "/token", Reply(503, "token service down"))
    server.route("POST", "/orders", Reply(201, "created"))

    def fetch_token() -> str:
        answer = requests.post(server.url("/token"), json={"apiSecret": SECRET}, timeout=5)
        answer.raise_for_status()
        return str(answer.json()["token"])

    rbe.install(
        server.url("/"), auth=rbe.TokenAuth(fetch_token), outbox=outbox_url, max_retries=0
    )  # the README's example, with an outbox
    with pytest.raises(rbe.ServiceUnavailableError) as caught:
        requests.post(server.url("/orders"), data=b"the order")
    entries = rbe.Outbox(outbox_url).entries()
    assert [(e.method, e.shown_url) for e in entries] == [("POST", server.url("/orders"))]
    assert caught.value.outbox_id == entries[0].id  # the write the token was for is kept
    assert all(SECRET.encode() not in e.body for e in entries)
    assert len(server.seen("POST", "/token")) == 1


# -- a hostile answer cannot stall an endpoint (finding 3) ------------------------------

POISONS = {
    "stated quota": Reply(
        429,
        "API calls quota exceeded! maximum admitted 1 per 99999999 second.",
        {"Content-Type": "text/plain"},
    ),
    "Retry-After seconds": Reply(429, "slow down", {"Retry-After": "99999999"}),
    "Retry-After date": Reply(429, "slow down", {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_hostile_429_holds_a_shared_category_one_period_at_most(
    server, tmp_path, poison, caplog, clock
):
    storage = f"sqlite:///{tmp_path}/limit.db"
    server.route("GET", "/x", POISONS[poison])
    first = rbe.RateLimit({"*": "100/second"}, storage=storage, clock=clock)
    with requests.Session() as session:
        rbe.mount(session, "http://", rate_limit=first, max_retries=0, clock=clock)
        assert session.get(server.url("/x")).status_code == 429
        assert session.get(server.url("/x")).status_code == 429  # poisoned twice
    key = first.key(requests.Request("GET", server.url("/x")).prepare(), "*")
    assert first.store.paused_for(key, first.rule("*")) <= 1.0
    server.route("GET", "/x", Reply(200, "ok"))
    other = rbe.RateLimit({"*": "100/second"}, storage=storage, clock=clock)  # another process's
    with requests.Session() as session:
        rbe.mount(session, "http://", rate_limit=other, clock=clock)
        started = clock.monotonic()
        response = session.get(server.url("/x"))
        assert response.status_code == 200
    assert clock.monotonic() - started <= 1.0  # one period, not years
    assert rbe.attempts(response)[0].paced <= 1.0
    bounds = [r for r in caplog.records if "Rate limit '*'" in r.getMessage()]
    assert len(bounds) == 1  # the clamp is logged once, however often the server repeats it


def test_a_stated_period_is_clamped_to_an_hour_without_a_configured_rule(server, tmp_path, clock):
    storage = f"sqlite:///{tmp_path}/limit.db"
    server.route("GET", "/api/rest/v4/x", POISONS["stated quota"])
    limit = rbe.RateLimit.dealcloud(storage=storage, clock=clock)
    with requests.Session() as session:
        rbe.mount(session, "http://", rate_limit=limit, max_retries=0, clock=clock)
        assert session.get(server.url("/api/rest/v4/x")).status_code == 429
        caught = refused(session.get(server.url("/api/rest/v4/x")), rbe.RateLimitError)
    assert caught.value.retry_after == pytest.approx(3600)
    assert len(server.seen()) == 1


def test_a_poisoned_token_endpoint_cannot_stop_authorization_for_the_fleet(server, tmp_path):
    storage = f"sqlite:///{tmp_path}/limit.db"
    server.route("POST", "/Authorization", Reply(429, "no", {"Retry-After": "99999999"}))
    server.route("GET", "/api/v1/x", Reply(200, "ok"))
    limit = rbe.RateLimit.bloxs(storage=storage)
    auth = rbe.BloxsTokenAuth(origin(server), KEY, SECRET, max_retries=0)
    with requests.Session() as session:
        rbe.mount(session, server.url("/"), auth=auth, rate_limit=limit, max_retries=0)
        with pytest.raises(rbe.RateLimitError):  # the token endpoint's own 429
            session.get(server.url("/api/v1/x"))
    request = requests.Request("POST", server.url("/Authorization")).prepare()
    key = limit.key(request, "authorization")
    held = limit.store.paused_for(key, limit.rule("authorization"))
    assert 0 < held <= 60.0  # Bloxs's window is a minute


# -- announced maintenance is bounded (finding 4) ----------------------------------------


@pytest.mark.parametrize(("max_open_for", "bound"), [(None, 86400.0), (120.0, 120.0)])
def test_announced_maintenance_holds_the_circuit_open_for_a_bounded_time(
    server, session, max_open_for, bound
):
    clock = FakeClock()
    alerts: list[rbe.AlertEvent] = []
    breaker = rbe.CircuitBreaker(failures=5, open_for=30, max_open_for=max_open_for, clock=clock)
    rbe.mount(session, "http://", circuit_breaker=breaker, on_alert=alerts.append)
    server.route("GET", "/m", Reply(503, "maintenance", {"Retry-After": "99999999"}))
    assert session.get(server.url("/m")).status_code == 503
    caught = refused(session.get(server.url("/m")), rbe.CircuitOpenError)
    assert bound - 1 < caught.value.retry_after <= bound
    (opened,) = alerts
    assert "failed 0" not in opened.message
    assert "maintenance" in opened.message
    clock.advance(bound)
    server.route("GET", "/m", Reply(200, "back"))
    assert session.get(server.url("/m")).status_code == 200  # the probe went, and closed it
    assert len(server.seen()) == 2


# -- stores never break the deadline (finding 5) -----------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


#: The calls' deadline: shorter than the store's own timeout (a store that took that
#: would leave the call nothing: it would end in a timeout), and long enough that
#: the share a store may take leaves the request room on a busy machine.
DEADLINE = 0.9
assert DEADLINE < STORE_TIMEOUT


def _timeouts_given(monkeypatch, backend: type, *operations: str) -> list[float | None]:
    """Record the ``timeout`` each of ``operations`` of ``backend`` is given (every store
    operation takes one): the share of the call's time the store was allowed."""
    given: list[float | None] = []
    for name in operations:
        operation = getattr(backend, name)

        def recorded(self, *args, timeout=None, _operation=operation, **kwargs):
            given.append(timeout)
            return _operation(self, *args, timeout=timeout, **kwargs)

        monkeypatch.setattr(backend, name, recorded)
    return given


def _a_call_with_a_deadline(server, **adapter) -> requests.Response:
    """One call with :data:`DEADLINE` to an answer that takes a real read: it is 200
    only if the store left the request its share of the deadline.

    Real time: what a store that never answers costs is SQLite's busy timeout or a
    socket's timeout, which no clock stands in for. What is asserted is the call's
    outcome and the timeouts the store was given, never how long it took.
    """
    server.route("GET", "/api/v1/x", Reply(200, "ok", delay=0.05))
    with requests.Session() as session:
        rbe.mount(session, server.url("/"), deadline=DEADLINE, **adapter)
        return session.get(server.url("/api/v1/x"), timeout=5)


def _within_its_share(given: list[float | None]) -> bool:
    return bool(given) and all(t is not None and t <= DEADLINE * STORE_SHARE for t in given)


def test_a_locked_sqlite_file_costs_a_part_of_the_deadline_only(server, tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path}/limit.db"
    limit = rbe.RateLimit({"*": "100/second"}, storage=storage)
    key = limit.key(requests.Request("GET", server.url("/")).prepare(), "*")
    limit.store.acquire(key, (100, 1.0), 1)  # creates the file
    given = _timeouts_given(monkeypatch, SQLiteBackend, "acquire")
    holder = sqlite3.connect(str(tmp_path / "limit.db"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        response = _a_call_with_a_deadline(server, rate_limit=limit)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # it once took the store's own timeout, and the call ended in a timeout
    assert response.status_code == 200
    assert _within_its_share(given), given
    assert limit.store.failing  # it did time out: the call went on in-process


def test_a_redis_that_never_answers_costs_a_part_of_the_deadline_only(
    server, silent_server, monkeypatch
):
    limit = rbe.RateLimit({"*": "100/second"}, storage=f"redis://127.0.0.1:{silent_server}/0")
    given = _timeouts_given(monkeypatch, RedisBackend, "acquire")
    response = _a_call_with_a_deadline(server, rate_limit=limit)
    assert response.status_code == 200
    assert _within_its_share(given), given
    assert limit.store.failing


def test_a_token_cache_that_never_answers_leaves_the_call_its_own_token(
    server, silent_server, monkeypatch
):
    server.route("POST", "/Authorization", json_reply(200, '{"token": "tok-own"}'))
    auth = rbe.BloxsTokenAuth(
        origin(server), KEY, SECRET, cache=f"redis://127.0.0.1:{silent_server}/0"
    )
    given = _timeouts_given(monkeypatch, RedisBackend, "read", "lock", "write")
    response = _a_call_with_a_deadline(server, auth=auth)
    assert response.status_code == 200
    assert _within_its_share(given), given
    assert server.seen("GET", "/api/v1/x")[0].headers["Authorization"] == "Bearer tok-own"


# -- side files are checked like the main file (finding 6) --------------------------------


def _plant(path: Path) -> None:
    path.write_bytes(b"")
    os.chmod(path, 0o666)  # (as another user would leave it in a shared directory)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_planted_side_file_refuses_the_outbox(server, session, tmp_path, suffix, caplog):
    planted = tmp_path / f"outbox.db{suffix}"
    _plant(planted)
    server.route("POST", "/w", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=f"sqlite:///{tmp_path}/outbox.db", max_retries=0)
    response = session.post(server.url("/w"), data=b"secret body")
    assert response.status_code == 500
    assert planted.read_bytes() == b""  # nothing went into the other user's file
    refused = [r for r in caplog.records if "could not be queued" in r.getMessage()]
    assert len(refused) == 1


def test_a_planted_side_file_refuses_the_limit_store(server, session, tmp_path, caplog):
    planted = tmp_path / "limit.db-wal"
    _plant(planted)
    server.route("GET", "/x", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": "5/second"}, storage=f"sqlite:///{tmp_path}/limit.db")
    rbe.mount(session, "http://", rate_limit=limit)
    assert [session.get(server.url("/x")).status_code for _ in range(3)] == [200] * 3
    assert planted.read_bytes() == b""
    warnings = [r for r in caplog.records if "pacing within this process" in r.getMessage()]
    assert len(warnings) == 1


def test_side_files_are_created_for_their_owner_only(server, session, tmp_path):
    server.route("GET", "/x", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": "5/second"}, storage=f"sqlite:///{tmp_path}/limit.db")
    rbe.mount(session, "http://", rate_limit=limit)
    session.get(server.url("/x"))
    for suffix in ("", "-wal", "-shm"):
        mode = stat.S_IMODE((tmp_path / f"limit.db{suffix}").stat().st_mode)
        assert mode == 0o600, suffix


# -- a wall clock stepped back does not stall the SQLite limiter (finding 7) -----------------


def test_permits_and_pauses_from_an_hour_ahead_do_not_stall_the_true_clock(tmp_path):
    storage = parse(f"sqlite:///{tmp_path}/limit.db")
    true_clock = FakeClock()
    fast_clock = FakeClock(wall=true_clock.time() + 3600)  # then set back by an hour
    fast = SQLiteBackend(storage, fast_clock)
    for _ in range(5):
        grant = fast.acquire("k", (5, 1.0), 60)
        assert grant.wait == 0
        fast.finish("k", grant.stamp)
    fast.pause("k", 30, (5, 60.0))
    true = SQLiteBackend(storage, true_clock)
    assert true.paused_for("k", (5, 60.0)) <= 30
    grant = true.acquire("k", (5, 1.0), 60)
    assert grant.stamp is not None
    assert grant.wait <= 30 + 1.0  # the pause, at most: not the hour


def test_a_permit_impossibly_far_ahead_is_stale_in_every_shared_store(tmp_path, redis_url):
    # (memory's monotonic clock cannot be stepped: no permit there lies further ahead
    # than max_wait)
    import redis

    sqlite = SQLiteBackend(parse(f"sqlite:///{tmp_path}/a.db"))
    sqlite.acquire("k", (1, 1.0), 60)
    with sqlite.file.transaction() as db:
        db.execute("UPDATE rbe_permits SET at = at + 864000, expires = expires + 864000")
    grant = sqlite.acquire("k", (1, 1.0), 60)
    assert grant.stamp is not None
    assert grant.wait == 0

    store = RedisBackend(parse(redis_url))
    store.acquire("k", (1, 1.0), 60)
    client = redis.Redis.from_url(redis_url)
    try:
        (flight,) = client.keys("rbe:{k}:flight")
        (member,) = client.zrange(flight, 0, -1)
        client.zadd(flight, {member: client.zscore(flight, member) + 864000})
    finally:
        client.close()
    grant = store.acquire("k", (1, 1.0), 60)
    assert grant.stamp is not None
    assert grant.wait == 0


# -- the outbox command on a bad database (finding 8) -------------------------------------


def _make_outbox(server, outbox_url: str) -> None:
    server.route("POST", "/w", Reply(500, "down"))
    with requests.Session() as session:
        rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
        session.post(server.url("/w"), data=b"x")


@pytest.mark.parametrize("damage", ["corrupt", "world-readable", "directory", "symlink loop"])
@pytest.mark.parametrize("action", [("list",), ("show", "1"), ("drop", "1"), ("replay",)])
def test_a_bad_outbox_database_is_one_line_and_exit_2(server, tmp_path, damage, action):
    path = tmp_path / "outbox.db"
    if damage == "corrupt":
        path.write_bytes(b"this is not a database, " * 200)
        path.chmod(0o600)
    elif damage == "world-readable":
        _make_outbox(server, f"sqlite:///{path}")
        path.chmod(0o644)
    elif damage == "directory":
        path.mkdir()
    else:
        os.symlink(tmp_path / "other.db", path)
        os.symlink(path, tmp_path / "other.db")
    finished = run("outbox", *action, "--db", f"sqlite:///{path}", env=NO_CREDENTIALS)
    line = one_line_exit_2(finished)
    assert str(path) in line


@pytest.mark.parametrize("action", ["show", "drop"])
def test_an_outbox_id_past_what_sqlite_holds_is_one_line_and_exit_2(server, outbox_url, action):
    _make_outbox(server, outbox_url)
    line = one_line_exit_2(run("outbox", action, "99999999999999999999", "--db", outbox_url))
    assert "ID" in line


# -- replay's timeout (finding 9) ------------------------------------------------------


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf", "soon"])
def test_a_replay_timeout_that_is_not_positive_is_refused(server, outbox_url, timeout):
    _make_outbox(server, outbox_url)
    line = one_line_exit_2(run("outbox", "replay", "--db", outbox_url, "--timeout", timeout))
    assert "--timeout" in line
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert entry.tries == 0  # nothing was bumped


# -- run -m with a module that is not there (finding 10) ---------------------------------


@pytest.mark.parametrize("module", ["missing_module_xyz", "missing_pkg_xyz.module", "json"])
def test_run_m_with_a_missing_module_says_so_as_python_does(module):
    ours = run("run", "-m", module)
    python = subprocess.run(
        [sys.executable, "-m", module], capture_output=True, text=True, check=False
    )
    assert ours.returncode == python.returncode == 1
    assert "Traceback" not in ours.stderr
    assert ours.stderr == python.stderr


# -- a bad URL is blamed on its own variable (finding 11) -------------------------------------


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"BLOXS_BASE_URL": "https://acme.bloxs.io:99999", "BLOXS_API_KEY": "k"},
            "BLOXS_BASE_URL",
        ),
        ({"BLOXS_BASE_URL": "ftp://acme.bloxs.io", "BLOXS_API_KEY": "k"}, "BLOXS_BASE_URL"),
        (
            {"BLOXS_BASE_URL": "https://user:pw@acme.bloxs.io", "BLOXS_API_KEY": "k"},
            "BLOXS_BASE_URL",
        ),
        ({"DEALCLOUD_TOKEN_URL": "https://dc.example:70000/token"}, "DEALCLOUD_TOKEN_URL"),
        ({"DEALCLOUD_TOKEN_URL": "https:///token"}, "DEALCLOUD_TOKEN_URL"),
        ({"DEALCLOUD_TOKEN_URL": "https://dc.example/token?tenant=7"}, "DEALCLOUD_TOKEN_URL"),
        ({"DEALCLOUD_TOKEN_URL": "https://u:pw@dc.example/token"}, "DEALCLOUD_TOKEN_URL"),
    ],
)
def test_a_bad_url_is_blamed_on_its_own_variable(tmp_path, environ, named):
    vendor = (
        {"BLOXS_API_SECRET": "s"}
        if "BLOXS_API_KEY" in environ
        else {
            "DEALCLOUD_CLIENT_ID": "c",
            "DEALCLOUD_CLIENT_SECRET": "s",
        }
    )
    base = {**vendor, "RBE_TOKEN_CACHE": f"sqlite:///{tmp_path}/tokens.db"}
    with pytest.raises(ConfigError) as caught:
        config_from_env({**base, **environ})
    message = str(caught.value)
    assert message.startswith(named), message
    assert "RBE_TOKEN_CACHE" not in message
    assert "pw@" not in message


def test_a_bad_token_cache_is_still_blamed_on_itself():
    with pytest.raises(ConfigError, match=r"^RBE_TOKEN_CACHE"):
        config_from_env(
            {
                "BLOXS_BASE_URL": "https://acme.bloxs.io",
                "BLOXS_API_KEY": "k",
                "BLOXS_API_SECRET": "s",
                "RBE_TOKEN_CACHE": "mongo://x",
            }
        )


# -- what has ended is forgotten (finding 12) -----------------------------------------------


def test_memory_forgets_100000_ended_pauses():
    clock = FakeClock()
    store = MemoryBackend(clock=clock)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for n in range(100_000):
            store.pause(f"https://api.example:443|GET /api/rest/v4/entry/{n}", 1.0)
        held = tracemalloc.get_traced_memory()[0] - baseline
        clock.advance(120)  # every pause has ended; a sweep is due
        assert store.paused_for("https://api.example:443|GET /other") == 0
        kept = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert held > 5_000_000  # what 100,000 pauses cost while they last
    assert kept < 200_000
    assert store.held()["pauses"] == set()


def test_memory_forgets_idle_logs_and_expired_rules():
    clock = FakeClock()
    store = MemoryBackend(clock=clock)
    for n in range(50):
        store.acquire(f"k{n}", (5, 1.0), 60)
        store.learn(f"k{n}", 2, 1.0)
    clock.advance(4000)  # past the permits' period and the learned rules' hour
    store.acquire("fresh", (5, 1.0), 60)
    assert store.held()["permits"] == {"fresh"}
    assert store.held()["rules"] == set()


def test_sqlite_deletes_ended_pauses_expired_rules_and_idle_permits(tmp_path):
    clock = FakeClock()
    store = SQLiteBackend(parse(f"sqlite:///{tmp_path}/limit.db"), clock)
    for n in range(20):
        store.acquire(f"k{n}", (5, 1.0), 60)
        store.pause(f"k{n}", 2.0)
        store.learn(f"k{n}", 2, 1.0)
    clock.advance(4000)
    store.acquire("fresh", (5, 1.0), 60)
    check = sqlite3.connect(str(tmp_path / "limit.db"))
    try:
        counts = {
            table: check.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("rbe_permits", "rbe_pauses", "rbe_rules")
        }
    finally:
        check.close()
    assert counts == {"rbe_permits": 1, "rbe_pauses": 0, "rbe_rules": 0}


def test_every_redis_key_of_a_limit_expires(redis_url):
    import redis

    limit = rbe.RateLimit({"*": "5/second"}, storage=redis_url)
    store = limit.store
    store.acquire("k", (5, 1.0), 60)
    store.finish("k", store.acquire("k", (5, 1.0), 60).stamp)
    store.acquire("w", (1, 1.0), 60)
    assert store.acquire("w", (1, 1.0), 60).wait > 0  # (a waiting permit, with its lease)
    store.pause("k", 2.0)
    store.learn("k", 2, 1.0)
    client = redis.Redis.from_url(redis_url)
    try:
        keys = client.keys("rbe:*")
        # "k": in flight, ended, their counter, the pause, the rule, the holders;
        # "w" (nothing ended): in flight, the counter, the holders, the leases
        assert len(keys) == 10
        assert all(0 < client.pttl(key) <= 3_600_000 for key in keys)
    finally:
        client.close()


# -- a token lifetime of 1e20 (finding 13) ----------------------------------------------------


def test_a_huge_token_lifetime_is_clamped_before_it_reaches_redis(server, redis_url, caplog):
    server.route(
        "POST",
        "/token",
        json_reply(200, '{"access_token": "tok-long", "token_type": "bearer", "expires_in": 1e20}'),
    )
    server.route("GET", "/x", Reply(200, "ok"))
    for _ in range(3):  # three processes' credentials
        auth = rbe.ClientCredentialsAuth(server.url("/token"), "client", SECRET, cache=redis_url)
        with requests.Session() as session:
            rbe.mount(session, server.url("/"), auth=auth)
            assert session.get(server.url("/x")).status_code == 200
    assert len(server.seen("POST", "/token")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        (key,) = client.keys("rbe:token:*")
        assert 0 < client.pttl(key) <= 7 * 24 * 3600 * 1000
    finally:
        client.close()


# -- one probe at a time, also when it is slow (finding 14) ------------------------------


def test_a_slow_probe_is_the_only_one_until_its_deadline(server, session):
    clock = FakeClock()
    release = threading.Event()
    server.route("GET", "/p", Reply(500, "down"))
    breaker = rbe.CircuitBreaker(failures=1, open_for=0.3, clock=clock)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, deadline=3.0)
    assert session.get(server.url("/p")).status_code == 500
    clock.advance(0.35)

    def slow(request) -> Reply:
        release.wait(10)
        return Reply(200, "back")

    server.route_fn("GET", "/p", slow)
    probe = threading.Thread(target=lambda: session.get(server.url("/p")))
    probe.start()
    assert wait_until(lambda: len(server.seen()) == 2)  # the probe is in flight
    for _ in range(4):  # open_for passes again and again while the probe is in flight
        clock.advance(0.35)
        refused(session.get(server.url("/p")), rbe.CircuitOpenError)
    assert len(server.seen()) == 2
    clock.advance(3.0)  # the probe's own deadline has passed: another may go
    server.route("GET", "/p", Reply(200, "back"))
    assert session.get(server.url("/p")).status_code == 200
    release.set()
    probe.join(10)
    assert len(server.seen()) == 3


# -- one alert per outage (finding 15) -----------------------------------------------------


def test_one_continuous_outage_raises_one_alert_until_the_circuit_closes(server, session):
    clock = FakeClock()
    alerts: list[rbe.AlertEvent] = []
    server.route("GET", "/x", Reply(500, "down"))
    breaker = rbe.CircuitBreaker(failures=1, open_for=1.0, max_open_for=1.0, clock=clock)
    rbe.mount(session, "http://", circuit_breaker=breaker, on_alert=alerts.append, max_retries=0)
    session.get(server.url("/x"))
    for _ in range(11):  # eleven failed probes
        clock.advance(1.0)
        assert session.get(server.url("/x")).status_code == 500
    assert [a.kind for a in alerts] == ["circuit_open"]
    assert len(server.seen()) == 12
    server.route("GET", "/x", Reply(200, "ok"))
    clock.advance(1.0)
    assert session.get(server.url("/x")).ok
    assert [a.kind for a in alerts] == ["circuit_open", "circuit_closed"]
    server.route("GET", "/x", Reply(500, "down again"))
    session.get(server.url("/x"))
    assert [a.kind for a in alerts] == ["circuit_open", "circuit_closed", "circuit_open"]


# -- config masks the API key (finding 16) -------------------------------------------------


def test_config_shows_the_first_characters_of_the_api_key_only():
    env = {
        **NO_CREDENTIALS,
        "BLOXS_BASE_URL": "https://acme.bloxs.io",
        "BLOXS_API_KEY": "abcd-personal-key-0042",
        "BLOXS_API_SECRET": SECRET,
    }
    finished = run("config", env=env)
    assert finished.returncode == 0
    assert "abcd-personal-key-0042" not in finished.stdout
    assert "abcd\u2026" in finished.stdout
    assert SECRET not in finished.stdout
