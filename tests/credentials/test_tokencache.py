"""One token for a fleet (issue 8): a shared, encrypted token cache.

Real subprocesses against the package's simulator, a real ``redis-server``
(``conftest.redis_server``) and real SQLite files.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.credentials import tokencache
from requests_bloxs_errors.simulator import Simulator
from requests_bloxs_errors.storage import RETRY_STORE_AFTER, open_backend, parse
from requests_bloxs_errors.storage.sealing import KEY_BYTES, Sealer
from requests_bloxs_errors.tools import envconfig

from ..helpers.redisserver import RedisServer, find_redis_server, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "redis"])
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tokens.db"
    url: str = request.getfixturevalue("redis_url")
    return url


def _signed(auth: rbe.CachedTokenAuth) -> str:
    request = requests.Request("GET", "http://127.0.0.1/").prepare()
    auth(request)
    return request.headers["Authorization"]


def _counting(lifetime: float | None = 900.0):
    calls: list[str] = []

    def fetch() -> tuple[str, float | None]:
        calls.append(f"token-{len(calls) + 1}-{os.urandom(6).hex()}")
        return calls[-1], lifetime

    return fetch, calls


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- a fleet of processes --------------------------------------------------------------------


@pytest.mark.slow  # a fleet of processes
def test_a_fleet_fetches_one_token_at_start_and_one_after_a_revocation(cache):
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        start_at = time.time() + 2.0  # every process starts its threads at this moment
        command = [
            sys.executable,
            "-m",
            "tests.helpers.token_client",
            sim.url,
            key,
            secret,
            cache,
            "4",
        ]
        fleet = [
            subprocess.Popen(
                [*command, str(start_at)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        try:
            first = [json.loads(process.stdout.readline()) for process in fleet]
            assert first == [[200] * 4] * 6
            assert len(sim.token_requests()) == 1  # one for 24 threads in 6 processes
            sim.revoke_tokens()  # every thread of every process now gets 401
            for process in fleet:
                process.stdin.write("go\n")
                process.stdin.flush()
            second = [json.loads(process.stdout.readline()) for process in fleet]
            assert second == [[200] * 4] * 6
            assert len(sim.token_requests()) == 2  # one refresh for the whole fleet
            refused = [r for r in sim.requests if r.status == 401]
            assert len(refused) >= 6  # each process met the revocation itself
        finally:
            for process in fleet:
                process.stdin.close()
                process.wait(30)
                process.stdout.close()


@pytest.mark.slow  # processes, and a lock that must expire
def test_a_dead_lock_holder_blocks_nobody_past_the_lock_timeout(cache, monkeypatch):
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.token_client", "--hold", cache, "k3y-shared", "1.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "fetching"  # it holds the lock now
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        fetch, calls = _counting()
        auth = rbe.TokenAuth(fetch, cache=cache, cache_key="k3y-shared")
        # Real time: the dead process's lock expires on the store's clock (Redis's,
        # the SQLite file's), which no fake clock moves. The bound is loose: it only
        # catches a wait for the lock's default lifetime (or for ever).
        started = time.monotonic()
        assert _signed(auth) == f"Bearer {calls[0]}"
        assert time.monotonic() - started < tokencache.LOCK_TTL / 2  # the lock expired at 1.5 s
        assert len(calls) == 1
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()


def test_waiters_in_other_processes_use_the_token_one_of_them_fetched(cache):
    """The same through threads standing in for processes: separate credentials,
    one store. A slow fetch holds the lock; the others wait for its result."""
    calls: list[str] = []
    lock = threading.Lock()

    def slow_fetch() -> tuple[str, float]:
        time.sleep(0.5)  # (real time: a slow fetch holds the lock while the others wait)
        with lock:
            calls.append(f"tok-{len(calls)}")
            return calls[-1], 900.0

    credentials = [rbe.TokenAuth(slow_fetch, cache=cache, cache_key="k") for _ in range(5)]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda a=auth: results.append(_signed(a))) for auth in credentials
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert calls == ["tok-0"]
    assert results == ["Bearer tok-0"] * 5


def test_a_refusal_refreshes_only_if_the_cached_token_is_the_one_refused(cache):
    fetch, calls = _counting()
    first, second = (rbe.TokenAuth(fetch, cache=cache, cache_key="k") for _ in range(2))
    request = requests.Request("GET", "http://127.0.0.1/").prepare()
    first(request)
    assert _signed(second) == f"Bearer {calls[0]}"  # found in the cache: no fetch
    response = requests.Response()
    response.status_code = 401
    assert first.refresh(request, response)  # the cached token is the refused one: fetch
    assert len(calls) == 2
    assert second.refresh(request, response)  # refused the same old token: already replaced
    assert len(calls) == 2
    assert _signed(second) == f"Bearer {calls[1]}"


# -- at rest ----------------------------------------------------------------------------


def test_the_sqlite_entry_holds_no_token_key_or_secret_in_clear(tmp_path):
    path = tmp_path / "tokens.db"
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        auth = rbe.BloxsTokenAuth(sim.url, key, secret, cache=f"sqlite:///{path}")
        token = _signed(auth).removeprefix("Bearer ")
    files = [p for p in tmp_path.iterdir() if p.name.startswith("tokens.db")]
    assert {p.name for p in files} >= {"tokens.db", "tokens.db-wal"}
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
        data = file.read_bytes()
        for clear in (token, key, secret, sim.url):
            assert clear.encode() not in data, (file.name, clear[:4])
    with sqlite3.connect(path) as db:
        (name,) = db.execute("SELECT name FROM rbe_tokens").fetchone()
    assert len(name) == 40
    assert all(c in "0123456789abcdef" for c in name)


def test_the_redis_entry_holds_no_token_key_or_secret_in_clear(redis_url):
    client = redis.Redis.from_url(redis_url)
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        auth = rbe.BloxsTokenAuth(sim.url, key, secret, cache=redis_url)
        token = _signed(auth).removeprefix("Bearer ")
    (name,) = client.keys("*")
    value = client.get(name)
    for clear in (token, key, secret):
        assert clear.encode() not in name
        assert clear.encode() not in value
    assert 0 < client.pttl(name) <= 24 * 3600 * 1000  # expires with the token


def test_a_planted_or_altered_entry_is_not_used(cache, caplog):
    fetch, calls = _counting()
    auth = rbe.TokenAuth(fetch, cache=cache, cache_key="k")
    _signed(auth)
    name = auth.cache.name
    # a reader of the store without the secret writes a token of its choosing, sealed
    # under a key of its own
    store = open_backend(parse(cache))
    sealer = Sealer(os.urandom(KEY_BYTES), "a shared token cache")
    planted = {"token": "attacker-token", "expires": time.time() + 900, "lifetime": 900.0}
    store.write(name, sealer.seal(json.dumps(planted).encode(), name.encode()), 900)
    store.close()
    victim = rbe.TokenAuth(fetch, cache=cache, cache_key="k")
    assert _signed(victim) == f"Bearer {calls[1]}"
    assert len(calls) == 2
    (warning,) = [w for w in _warnings(caplog) if "does not authenticate" in w]
    assert "attacker-token" not in warning


def test_another_secret_never_uses_the_entry_and_a_refused_secret_still_raises(cache):
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        good = rbe.BloxsTokenAuth(sim.url, key, secret, cache=cache)
        _signed(good)
        wrong = rbe.BloxsTokenAuth(sim.url, key, "not-the-secret-0000", cache=cache)
        with pytest.raises(rbe.AuthenticationError):
            _signed(wrong)
        assert len(sim.token_requests()) == 2


def test_an_expiring_entry_is_never_used(cache, clock):
    fetch, calls = _counting(lifetime=1.0)  # renewed 0.1 s before it expires
    rbe.TokenAuth(fetch, cache=cache, cache_key="k", clock=clock)(
        requests.Request("GET", "http://127.0.0.1/").prepare()
    )
    clock.advance(0.85)
    before = rbe.TokenAuth(fetch, cache=cache, cache_key="k", clock=clock)
    assert _signed(before) == f"Bearer {calls[0]}"  # not yet inside the renewal margin
    clock.advance(0.1)
    fresh = rbe.TokenAuth(fetch, cache=cache, cache_key="k", clock=clock)
    assert _signed(fresh) == f"Bearer {calls[1]}"


# -- stores that fail ----------------------------------------------------------------------


def test_a_corrupt_sqlite_file_leaves_each_process_its_own_token(tmp_path, caplog):
    path = tmp_path / "broken.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    path.chmod(0o600)
    fetch, calls = _counting()
    auth = rbe.TokenAuth(fetch, cache=f"sqlite:///{path}", cache_key="k")
    assert _signed(auth) == f"Bearer {calls[0]}"
    assert _signed(auth) == f"Bearer {calls[0]}"  # held in the process
    (warning,) = [w for w in _warnings(caplog) if "Token cache" in w]
    assert "DatabaseError" in warning


def test_an_unreachable_redis_never_fails_a_call_and_sharing_resumes(redis_server, caplog, clock):
    port = free_port()
    url = f"redis://:hunter2-pw@127.0.0.1:{port}/0"
    fetch, calls = _counting()
    auth = rbe.TokenAuth(fetch, cache=url, cache_key="k", clock=clock)
    assert _signed(auth) == f"Bearer {calls[0]}"  # nobody listens there yet
    (warning,) = [w for w in _warnings(caplog) if "Token cache" in w]
    assert "hunter2" not in warning
    with RedisServer(find_redis_server() or "redis-server", port=port, password="hunter2-pw"):
        auth.invalidate()
        assert _signed(auth) == f"Bearer {calls[0]}"  # the store is not tried again yet:
        assert len(calls) == 1  # the process keeps the token it holds meanwhile...
        clock.advance(RETRY_STORE_AFTER)  # ...until the store's retry is due
        auth.invalidate()
        assert _signed(auth) == f"Bearer {calls[1]}"  # fetched, and now stored
        other = rbe.TokenAuth(fetch, cache=url, cache_key="k")
        assert _signed(other) == f"Bearer {calls[1]}"  # shared again
    assert any("answers again" in r.getMessage() for r in caplog.records)


# -- configuration ------------------------------------------------------------------------


def test_token_auth_needs_a_cache_key_for_a_shared_cache(tmp_path):
    with pytest.raises(ValueError, match="cache_key"):
        rbe.TokenAuth(lambda: "t", cache=f"sqlite:///{tmp_path}/t.db")
    assert rbe.TokenAuth(lambda: "t").cache is None


def test_a_shared_cache_without_cryptography_is_a_one_line_error(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "cryptography" or name.startswith("cryptography."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(ImportError) as caught:
        rbe.ClientCredentialsAuth(
            "http://127.0.0.1/token", "id", "secret", cache=f"sqlite:///{tmp_path}/t.db"
        )
    assert "requests-bloxs-errors[crypto]" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_cache_url_is_refused_when_the_credential_is_made():
    with pytest.raises(ValueError, match="cache"):
        rbe.BloxsTokenAuth("http://127.0.0.1", "k", "s", cache="memcached://x")


def test_the_environment_configures_the_cache(tmp_path):
    base = {"BLOXS_BASE_URL": "http://127.0.0.1:9", "BLOXS_API_KEY": "k", "BLOXS_API_SECRET": "s"}
    config = envconfig.config_from_env({**base, "RBE_TOKEN_CACHE": f"sqlite:///{tmp_path}/t.db"})
    assert isinstance(config.adapter_kwargs["auth"].cache, tokencache.SharedTokens)
    assert envconfig.config_from_env(base).adapter_kwargs["auth"].cache is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"RBE_TOKEN_CACHE": "sqlite:////tmp/t.db"}, "RBE_TOKEN_CACHE needs credentials"),
        (
            {"BLOXS_API_KEY": "k", "BLOXS_API_SECRET": "s", "BLOXS_HMAC": "1",
             "RBE_TOKEN_CACHE": "sqlite:////tmp/t.db"},
            "BLOXS_HMAC",
        ),
        (
            {"BLOXS_BASE_URL": "http://127.0.0.1:9", "BLOXS_API_KEY": "k",
             "BLOXS_API_SECRET": "s", "RBE_TOKEN_CACHE": "mongo://x"},
            "RBE_TOKEN_CACHE",
        ),
    ],
)  # fmt: skip
def test_a_bad_token_cache_variable_is_named(environ, named):
    with pytest.raises(rbe.ConfigError, match=named):
        envconfig.config_from_env(environ)


def test_a_cache_file_others_can_read_is_refused_not_used(tmp_path, caplog):
    path = tmp_path / "shared.db"
    path.write_bytes(b"")
    path.chmod(0o644)  # made by someone else's umask, or planted
    fetch, calls = _counting()
    auth = rbe.TokenAuth(fetch, cache=f"sqlite:///{path}", cache_key="k")
    assert _signed(auth) == f"Bearer {calls[0]}"  # the call still succeeds
    (warning,) = [w for w in _warnings(caplog) if "Token cache" in w]
    assert "PermissionError" in warning
    assert path.read_bytes() == b""  # nothing was written there
