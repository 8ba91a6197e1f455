"""Circuits are visible (issue 28): each process publishes its circuits' states to the
shared store, with an expiry, for display only; a store that fails never touches a call.

Real loopback servers, a real SQLite file, a real ``redis-server``; a fake clock for
every expiry and throttle the code measures (Redis's own expiry is its clock's).
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
import time

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors import storage
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.resilience.breaker import PUBLISH_EVERY
from requests_bloxs_errors.storage import CircuitBoard, CircuitRecord, open_backend, parse

from ..helpers import refused, wait_until
from ..helpers.rawserver import Listener
from ..helpers.redisserver import free_port
from ..helpers.server import Reply, json_reply

HOST = socket.gethostname() or "localhost"


def _board(url: str, clock: FakeClock | None = None):
    """The store at ``url`` as ``status`` reads it (a backend of its own)."""
    backend = open_backend(parse(url, capability=CircuitBoard), clock or rbe.clock.SYSTEM)
    assert isinstance(backend, CircuitBoard)
    return backend


def _record(host: str, pid: int, state: str = "open", at: float = 1000.0) -> CircuitRecord:
    return CircuitRecord(host, state, at - 5, 3, HOST, pid, at)


@pytest.fixture(params=["memory", "sqlite"])
def timed_board(request, tmp_path, clock):
    """A store whose expiry runs on the fake clock: memory, and an SQLite file."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/board.db"
    backend = _board(url, clock)
    yield backend
    backend.close()


def test_a_record_is_kept_replaced_sorted_and_gone_at_its_expiry(timed_board, clock):
    timed_board.publish_circuit(_record("https://b.example:443", 20), ttl=10)
    timed_board.publish_circuit(_record("https://a.example:443", 30), ttl=30)
    timed_board.publish_circuit(_record("https://a.example:443", 10), ttl=10)
    # the same host, holder host and pid: replaced
    timed_board.publish_circuit(_record("https://b.example:443", 20, "half-open"), ttl=10)
    found = timed_board.circuit_records(timeout=1.0)
    assert [(r.host, r.pid, r.state) for r in found] == [
        ("https://a.example:443", 10, "open"),
        ("https://a.example:443", 30, "open"),
        ("https://b.example:443", 20, "half-open"),
    ]
    assert found[0] == _record("https://a.example:443", 10)
    clock.advance(9.9)
    assert len(timed_board.circuit_records()) == 3
    clock.advance(0.2)  # 10.1 s: the two records of 10 s are gone
    assert [(r.host, r.pid) for r in timed_board.circuit_records()] == [
        ("https://a.example:443", 30)
    ]
    clock.advance(20)
    assert timed_board.circuit_records() == []


def test_redis_keeps_a_record_until_its_expiry(redis_url):
    board = _board(redis_url)
    try:
        board.publish_circuit(_record("https://a.example:443", 10), ttl=60)
        board.publish_circuit(_record("https://a.example:443", 10, "closed"), ttl=60)
        board.publish_circuit(_record("http://127.0.0.1:8080", 11), ttl=1.0)
        found = board.circuit_records(timeout=1.0)
        assert found == [
            _record("http://127.0.0.1:8080", 11),
            _record("https://a.example:443", 10, "closed"),
        ]
        import redis

        client = redis.Redis.from_url(redis_url)
        key = f"rbe:circuit:https://a.example:443|{HOST}|10".encode()
        assert 59_000 < client.pttl(key) <= 60_000  # it expires: nothing outlives its use
        client.set(b"rbe:circuit:stray", b"not json")  # not one of ours: skipped
        client.close()
        # Redis expires by its own clock: the short one goes within a loose bound
        assert wait_until(lambda: len(board.circuit_records()) == 1, timeout=5)
        assert board.circuit_records()[0].pid == 10
    finally:
        board.close()


# -- the breaker publishes ---------------------------------------------------------------


def _failing_then(server, *statuses: int) -> None:
    replies = [json_reply(status, '{"traceId": "00-abc-01"}') for status in statuses]
    server.route("GET", "/x", *replies)


def test_the_breaker_publishes_each_change_and_a_closed_circuit_lapses(
    server, session, clock, tmp_path
):
    url = f"sqlite:///{tmp_path}/rbe.db"
    _failing_then(server, 500, 500, 200)
    breaker = rbe.CircuitBreaker(failures=2, open_for=30, clock=clock, storage=url)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, clock=clock)
    board = _board(url, clock)
    host = f"http://127.0.0.1:{server.port}"
    assert session.get(server.url("/x")).status_code == 500
    first = clock.time()
    (record,) = board.circuit_records()
    assert record == CircuitRecord(host, "closed", first, 1, HOST, os.getpid(), first)
    clock.advance(PUBLISH_EVERY + 1)
    assert session.get(server.url("/x")).status_code == 500
    opened = clock.time()
    (record,) = board.circuit_records()
    assert record == CircuitRecord(host, "open", opened, 2, HOST, os.getpid(), opened)
    assert record.since > first  # since it entered this state
    clock.advance(31)  # the probe goes, and succeeds
    assert session.get(server.url("/x")).status_code == 200
    closed = clock.time()
    (record,) = board.circuit_records()
    assert record == CircuitRecord(host, "closed", closed, 0, HOST, os.getpid(), closed)
    for _ in range(3):  # healthy: nothing more is published
        assert session.get(server.url("/x")).ok
        clock.advance(10)
    assert board.circuit_records()[0].published == closed
    clock.advance(breaker.publish_ttl - 30)  # a closed circuit's record lapses
    assert board.circuit_records() == []
    board.close()


def test_a_host_that_never_failed_is_never_published(server, session, clock, tmp_path):
    url = f"sqlite:///{tmp_path}/rbe.db"
    server.route("GET", "/x", Reply(200, "ok"))
    breaker = rbe.CircuitBreaker(clock=clock, storage=url)
    rbe.mount(session, "http://", circuit_breaker=breaker, clock=clock)
    for _ in range(3):
        assert session.get(server.url("/x")).ok
    assert _board(url, clock).circuit_records() == []


def test_an_open_circuit_is_published_again_at_most_every_so_often_and_outlives_its_probe(
    server, session, clock, tmp_path
):
    url = f"sqlite:///{tmp_path}/rbe.db"
    server.route("GET", "/m", Reply(503, "maintenance", {"Retry-After": "600"}))
    breaker = rbe.CircuitBreaker(open_for=30, clock=clock, storage=url)
    rbe.mount(
        session, "http://", circuit_breaker=breaker, max_retry_after=60, max_retries=0, clock=clock
    )
    board = _board(url, clock)
    assert session.get(server.url("/m")).status_code == 503  # announced: open for 600 s
    opened = clock.time()
    assert board.circuit_records()[0].state == "open"
    clock.advance(1)
    refused(session.get(server.url("/m")), rbe.CircuitOpenError)
    assert board.circuit_records()[0].published == opened  # nothing changed: not yet again
    clock.advance(breaker.publish_ttl / 3)
    refused(session.get(server.url("/m")), rbe.CircuitOpenError)
    (record,) = board.circuit_records()
    assert (record.state, record.since, record.published) == ("open", opened, clock.time())
    # nobody calls the host any more: the record lasts publish_ttl past the probe time
    clock.advance(opened + 600 + breaker.publish_ttl - 1 - clock.time())
    assert board.circuit_records() != []
    clock.advance(2)
    assert board.circuit_records() == []
    assert len(server.seen()) == 1


def test_redis_holds_the_circuits_of_the_breaker_and_never_a_secret(server, session, redis_url):
    _failing_then(server, 500)
    breaker = rbe.CircuitBreaker(failures=1, open_for=30, storage=redis_url)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    secret_url = f"http://user:pw-s3cret@127.0.0.1:{server.port}/x?token=q-s3cret"
    assert session.get(secret_url).status_code == 500
    board = _board(redis_url)
    (record,) = board.circuit_records()
    assert (record.host, record.state, record.pid) == (
        f"http://127.0.0.1:{server.port}",
        "open",
        os.getpid(),
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    kept = b"".join(key + (client.get(key) or b"") for key in client.scan_iter())
    client.close()
    board.close()
    assert b"s3cret" not in kept
    assert b"/x" not in kept


def test_sqlite_keeps_no_path_query_or_password(server, session, tmp_path):
    url = f"sqlite:///{tmp_path}/rbe.db"
    _failing_then(server, 500)
    breaker = rbe.CircuitBreaker(failures=1, storage=url)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    assert session.get(f"http://u:pw-s3cret@127.0.0.1:{server.port}/x?k=q-s3cret").status_code
    assert _board(url).circuit_records()[0].host == f"http://127.0.0.1:{server.port}"
    kept = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("rbe.db"))
    assert b"s3cret" not in kept


# -- where the store comes from ----------------------------------------------------------


def test_the_breaker_takes_the_rate_limits_shared_store(server, session, tmp_path):
    url = f"sqlite:///{tmp_path}/limit.db"
    _failing_then(server, 500)
    limit = rbe.RateLimit({"*": "100/second"}, storage=url)
    breaker = rbe.CircuitBreaker(failures=1)
    assert breaker.storage is None
    rbe.mount(session, "http://", circuit_breaker=breaker, rate_limit=limit, max_retries=0)
    assert breaker.storage is not None
    assert breaker.storage.url == url
    assert session.get(server.url("/x")).status_code == 500
    assert [r.state for r in _board(url).circuit_records()] == ["open"]
    limit.close()


def test_a_memory_rate_limit_or_a_storage_of_its_own_is_kept(tmp_path):
    own = f"sqlite:///{tmp_path}/own.db"
    alone = rbe.CircuitBreaker()
    rbe.BloxsAdapter(circuit_breaker=alone, rate_limit=rbe.RateLimit({"*": "5/second"}))
    assert alone.storage is None  # memory:// is this process's: nothing to show anyone
    given = rbe.CircuitBreaker(storage=own)
    limit = rbe.RateLimit({"*": "5/second"}, storage=f"sqlite:///{tmp_path}/limit.db")
    rbe.BloxsAdapter(circuit_breaker=given, rate_limit=limit)
    assert given.storage is not None
    assert given.storage.url == own


def test_install_publishes_through_the_rate_limits_store(server, tmp_path):
    url = f"sqlite:///{tmp_path}/limit.db"
    _failing_then(server, 500)
    rbe.install(
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=1),
        rate_limit=rbe.RateLimit({"*": "100/second"}, storage=url),
        max_retries=0,
    )
    try:
        assert requests.get(server.url("/x"), timeout=5).status_code == 500
    finally:
        rbe.uninstall()
    assert [(r.state, r.pid) for r in _board(url).circuit_records()] == [("open", os.getpid())]


def test_a_storage_that_keeps_no_circuits_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^storage must be memory://, sqlite") as caught:
        rbe.CircuitBreaker(storage="ftp://somewhere")
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="relative path") as caught:
        rbe.CircuitBreaker(storage="sqlite:///relative.db?password=s3cret")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(TypeError, match="must be a URL string"):
        rbe.CircuitBreaker(storage=5)  # type: ignore[arg-type]


# -- a store that fails never touches a call ---------------------------------------------


class _Silent(Listener):
    """Accepts connections and never answers (a Redis that hangs); counts them."""

    def __init__(self) -> None:
        self.connections = 0
        super().__init__()

    def accepted(self, conn: socket.socket) -> None:
        self.connections += 1

    def _connection(self, conn: socket.socket) -> None:
        self._stop.wait()
        conn.close()


def test_a_store_that_is_down_costs_no_call_and_warns_once(server, session, clock, caplog):
    caplog.set_level(logging.WARNING, logger="requests_bloxs_errors")
    _failing_then(server, 500)
    breaker = rbe.CircuitBreaker(
        failures=2, clock=clock, storage=f"redis://127.0.0.1:{free_port()}/0"
    )
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, clock=clock)
    for _ in range(2):
        assert session.get(server.url("/x")).status_code == 500
        clock.advance(PUBLISH_EVERY + 1)
    refused(session.get(server.url("/x")), rbe.CircuitOpenError)
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "open"  # decisions go on
    warnings = [r for r in caplog.records if "Circuit breaker storage" in r.getMessage()]
    assert len(warnings) == 1
    assert "circuits are not published" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


def test_a_store_that_hangs_costs_one_call_its_share_then_is_left_alone_a_while(
    server, session, clock
):
    silent = _Silent()
    try:
        _failing_then(server, 500)
        breaker = rbe.CircuitBreaker(
            failures=1, clock=clock, storage=f"redis://127.0.0.1:{silent.port}/0"
        )
        rbe.mount(
            session, "http://", circuit_breaker=breaker, max_retries=0, deadline=0.4, clock=clock
        )
        started = time.monotonic()
        assert session.get(server.url("/x")).status_code == 500  # publishing: at most 0.2 s
        first = time.monotonic() - started
        assert wait_until(lambda: silent.connections == 1)
        started = time.monotonic()
        for _ in range(5):  # the store failed: not asked again for a while
            refused(session.get(server.url("/x")), rbe.CircuitOpenError)
        others = time.monotonic() - started
        assert silent.connections == 1
        clock.advance(storage.RETRY_STORE_AFTER)
        refused(session.get(server.url("/x")), rbe.CircuitOpenError)  # one tries it again
        assert wait_until(lambda: silent.connections == 2)
    finally:
        silent.close()
    assert first < 2.0  # (loosely bounded: a busy machine)
    assert others < 1.0


class _Board:
    """A backend of one's own that keeps circuits (in a list)."""

    def __init__(self, parsed, clock) -> None:
        self.published: list[CircuitRecord] = []

    def publish_circuit(self, record, ttl, timeout=None):
        self.published.append(record)

    def circuit_records(self, timeout=None):
        return list(self.published)

    def exists(self, timeout=None):
        return True

    def check(self, timeout=None):
        pass

    def unreachable(self, exc):
        return isinstance(exc, OSError)

    def close(self) -> None:
        pass


class _Broken(_Board):
    """One whose publishing has a bug."""

    calls = 0

    def publish_circuit(self, record, ttl, timeout=None):
        type(self).calls += 1
        raise TypeError("a bug in publish_circuit")


@pytest.fixture
def broken_scheme():
    storage.register_backend("brokenboard", _Broken)
    yield "brokenboard://x"
    storage.unregister_backend("brokenboard")


def test_a_bug_in_a_store_shows_its_traceback_once_and_the_call_goes_on(
    server, session, clock, caplog, broken_scheme
):
    caplog.set_level(logging.WARNING, logger="requests_bloxs_errors")
    _failing_then(server, 500, 500, 200)
    breaker = rbe.CircuitBreaker(failures=1, open_for=1, clock=clock, storage=broken_scheme)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, clock=clock)
    assert session.get(server.url("/x")).status_code == 500
    for _ in range(3):
        clock.advance(10)  # past the store's retry: asked again
        session.get(server.url("/x"))
    assert _Broken.calls >= 2
    bugs = [r for r in caplog.records if r.exc_info is not None]
    assert len(bugs) == 1
    assert "TypeError" in bugs[0].getMessage()
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "closed"


def test_threads_publish_one_change_once(server, clock):
    _failing_then(server, 500)
    published: list[CircuitRecord] = []

    class Counting(_Board):
        def publish_circuit(self, record, ttl, timeout=None):
            published.append(record)

    storage.register_backend("countingboard", Counting)
    try:
        breaker = rbe.CircuitBreaker(failures=1, clock=clock, storage="countingboard://")
        sessions = [requests.Session() for _ in range(8)]
        for each in sessions:
            rbe.mount(each, "http://", circuit_breaker=breaker, max_retries=0, clock=clock)
        barrier = threading.Barrier(8)

        def call(each: requests.Session) -> None:
            barrier.wait()
            each.get(server.url("/x"))

        threads = [threading.Thread(target=call, args=(each,)) for each in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        storage.unregister_backend("countingboard")
    assert [r.state for r in published] == ["open"]


def test_a_pickled_breaker_keeps_its_store_and_opens_its_own_connection(tmp_path):
    url = f"sqlite:///{tmp_path}/rbe.db"
    breaker = rbe.CircuitBreaker(failures=1, storage=url)
    breaker.record("https://a.example:443", failed=True)
    breaker.publish("https://a.example:443")
    copy = pickle.loads(pickle.dumps(breaker))
    assert copy.storage == breaker.storage
    assert copy.states() == {}  # circuits belong to a process: the copy starts afresh
    copy.record("https://b.example:443", failed=True)
    copy.publish("https://b.example:443")
    assert [(r.host, r.state) for r in _board(url).circuit_records()] == [
        ("https://a.example:443", "open"),
        ("https://b.example:443", "open"),
    ]
