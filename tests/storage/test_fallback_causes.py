"""The fallback keeps a failure's cause (issue 28): a store that is out of reach is an
outage, one WARNING; a bug (a ``TypeError`` in a backend, a Redis script's error, a
table this package did not make) is logged at ERROR with its traceback, once per
operation and type, and the call still goes on within the process.

Every store here fails for real: an SQLite file whose table another program made,
a real ``redis-server`` holding a key of another type, a server that is not there,
a registered backend with a bug.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator

import pytest

from requests_bloxs_errors import storage
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import RETRY_STORE_AFTER, open_backend, parse
from requests_bloxs_errors.storage.fallback import Fallback
from requests_bloxs_errors.storage.memory import MemoryBackend

from ..helpers.redisserver import free_port


def _fallback(url: str, clock: FakeClock) -> Fallback:
    return Fallback(
        open_backend(parse(url), clock),
        feature="Token cache",
        meanwhile="each process fetches its own token",
        clock=clock,
    )


def _told(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "requests_bloxs_errors"]


@pytest.fixture
def foreign_table(tmp_path) -> str:
    """An SQLite file whose ``rbe_tokens`` another program made, without ``expires``."""
    path = tmp_path / "tokens.db"
    made = sqlite3.connect(path)
    made.execute("CREATE TABLE rbe_tokens (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
    made.commit()
    made.close()
    path.chmod(0o600)
    return f"sqlite:///{path}"


def test_a_bug_is_logged_with_its_traceback_once_and_the_call_goes_on(foreign_table, caplog):
    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    clock = FakeClock()
    tokens = _fallback(foreign_table, clock)
    assert tokens.read("entry", timeout=1.0) is None  # (the call goes on, in memory)
    (error,) = _told(caplog)
    assert error.levelno == logging.ERROR
    assert error.getMessage().startswith(
        f"Token cache {foreign_table}: read raised OperationalError, which is not an outage"
    )
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], sqlite3.OperationalError)
    assert "no such column: expires" in str(error.exc_info[1])
    assert tokens.failing
    # meanwhile the process keeps its entries itself
    tokens.write("entry", b"sealed", 60.0, timeout=1.0)
    assert tokens.read("entry", timeout=1.0) == b"sealed"
    caplog.clear()
    clock.advance(RETRY_STORE_AFTER)  # the store is tried again, and fails the same way
    assert tokens.read("other", timeout=1.0) is None
    assert tokens.failing
    assert _told(caplog) == []  # told once: no second traceback, no WARNING for it
    # another operation's bug is told once too
    clock.advance(RETRY_STORE_AFTER)
    tokens.write("entry", b"sealed", 60.0, timeout=1.0)
    (error,) = _told(caplog)
    assert error.levelno == logging.ERROR
    assert "write raised OperationalError" in error.getMessage()
    tokens.close()


def test_a_locked_file_is_an_outage_one_warning_and_no_traceback(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    clock = FakeClock()
    url = f"sqlite:///{tmp_path}/locked.db"
    tokens = _fallback(url, clock)
    tokens.write("entry", b"shared", 60.0, timeout=1.0)  # (creates the file)
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        tokens.write("entry", b"mine", 60.0, timeout=0.05)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (warning,) = _told(caplog)
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(f"Token cache {url} failed (OperationalError)")
    assert warning.exc_info is None
    assert tokens.read("entry", timeout=1.0) == b"mine"  # this process's, meanwhile
    clock.advance(RETRY_STORE_AFTER)
    assert tokens.read("entry", timeout=1.0) == b"shared"  # it answers again
    assert "answers again" in _told(caplog)[-1].getMessage()
    tokens.close()


def test_a_redis_that_is_not_there_is_an_outage(caplog):
    pytest.importorskip("redis")
    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    url = f"redis://:pw-secret@127.0.0.1:{free_port()}/0"
    tokens = _fallback(url, FakeClock())
    assert tokens.lock("entry", "me", 10.0, timeout=0.5)  # (this process's lock, meanwhile)
    (warning,) = _told(caplog)
    assert warning.levelno == logging.WARNING
    assert "failed (ConnectionError)" in warning.getMessage()
    assert "pw-secret" not in warning.getMessage()
    tokens.close()


def test_a_redis_script_error_is_a_bug_told_with_its_traceback(redis_url, caplog):
    import redis

    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    client = redis.Redis.from_url(redis_url)
    try:  # a key of another type where the unlock script reads the lock
        client.rpush("rbe:token:{entry}:lock", "not", "a", "string")
    finally:
        client.close()
    tokens = _fallback(redis_url, FakeClock())
    tokens.unlock("entry", "me", timeout=1.0)  # (the call goes on)
    (error,) = _told(caplog)
    assert error.levelno == logging.ERROR
    assert "unlock raised ResponseError, which is not an outage" in error.getMessage()
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], redis.ResponseError)
    assert "WRONGTYPE" in str(error.exc_info[1])
    tokens.close()


class BuggyBackend(MemoryBackend):
    """A user's backend whose ``read`` has a bug; reaching its store is never the problem."""

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        return self._tokens[name][0] + 1  # type: ignore[operator,no-any-return]

    def unreachable(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)


@pytest.fixture
def buggy() -> Iterator[str]:
    storage.register_backend("buggy", BuggyBackend)
    yield "buggy://"
    storage.unregister_backend("buggy")


def test_a_type_error_in_a_users_backend_surfaces_with_its_traceback(buggy, caplog):
    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    clock = FakeClock()
    tokens = _fallback(buggy, clock)
    tokens.write("entry", b"sealed", 60.0)  # goes to the backend: it works
    assert not tokens.failing
    assert tokens.read("entry") is None  # the bug: this process's memory answers
    (error,) = _told(caplog)
    assert error.levelno == logging.ERROR
    assert "read raised TypeError" in error.getMessage()
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], TypeError)
    assert "Traceback (most recent call last)" in caplog.text
    assert "return self._tokens[name][0] + 1" in caplog.text  # where the bug is
    tokens.close()


def test_a_permit_from_a_buggy_store_still_comes_from_memory(buggy, caplog):
    class NoPermits(BuggyBackend):
        def acquire(self, *args: object, **kwargs: object) -> storage.base.Grant:
            raise TypeError("acquire() got an unexpected keyword argument 'hold'")

    storage.register_backend("buggy", NoPermits)
    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    permits = Fallback(
        open_backend(parse(buggy), FakeClock()),
        feature="Rate limit storage",
        meanwhile="pacing within this process",
        clock=FakeClock(),
    )
    grant = permits.acquire("k|*", (2, 1.0), 10.0, timeout=1.0)
    assert grant.wait == 0
    assert grant.stamp is not None
    (error,) = _told(caplog)
    assert "acquire raised TypeError" in error.getMessage()
