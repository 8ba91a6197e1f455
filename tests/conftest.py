from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.simulator import Simulator

from .helpers.server import ScriptServer


@pytest.fixture
def server() -> Iterator[ScriptServer]:
    srv = ScriptServer()
    yield srv
    srv.close()


@pytest.fixture
def other_server() -> Iterator[ScriptServer]:
    """A second host: reached as 'localhost' instead of '127.0.0.1', on another port."""
    srv = ScriptServer()
    srv.host = "localhost"
    yield srv
    srv.close()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock that starts at the real readings (so a server's real dates and
    the clock's agree) and then moves only when a test or a wait moves it."""
    return FakeClock(start=time.monotonic(), wall=time.time())


@pytest.fixture
def outbox_url(tmp_path: Path) -> str:
    """An outbox file of this test's own."""
    return f"sqlite:///{tmp_path}/outbox.db"


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def fast(session: requests.Session) -> rbe.BloxsAdapter:
    """An adapter with tiny back-offs mounted on http:// (the test servers)."""
    return rbe.mount(session, "http://", backoff_factor=0.01, backoff_max=0.05)


@pytest.fixture
def rbe_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture(autouse=True)
def _no_leftover_install() -> Iterator[None]:
    original = (requests.Session, requests.sessions.Session)
    yield
    rbe.uninstall()
    assert (requests.Session, requests.sessions.Session) == original


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator with short windows, for tests that exercise its limits."""
    with Simulator(window=1.0) as simulator:
        yield simulator


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-long", action="store_true", help="run the soak test ten times longer")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _secrets_scan(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs with DEBUG logging captured from every logger; afterwards no
    secret of any simulator it started (API and client secrets, issued tokens,
    credential headers and signatures) may appear in any record."""
    started: list[Simulator] = []
    original_start = Simulator.start

    def start(self: Simulator) -> Simulator:
        started.append(self)
        return original_start(self)

    monkeypatch.setattr(Simulator, "start", start)
    handler = _Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    secrets = {value for sim in started for value in sim.secret_values() if len(value) >= 8}
    for record in handler.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        leaked = [value for value in secrets if value in text]
        assert not leaked, f"a secret reached the log ({record.name}): {text[:200]!r}"


# -- a real redis-server, on a free loopback port ------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A ``redis-server`` of this test run: its ``redis://127.0.0.1:port`` URL.

    Without the program the tests that need it are skipped, except under
    ``CI=true``, where a missing server fails them: CI installs it.
    """
    from .helpers.redisserver import RedisServer, find_redis_server

    program = find_redis_server()
    if program is None:
        message = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; under CI=true it is required", pytrace=False)
        pytest.skip(message)
    with RedisServer(program) as server:
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server + "/0"
