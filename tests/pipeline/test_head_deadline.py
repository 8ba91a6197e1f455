"""Issue 26, point 8: the deadline covers the wait for the response head.

Socket timeouts bound each read, so a server that sends its status line and
headers one byte every 0.1 s never trips them: it held a ``deadline=0.5``
call for about 6.5 s. The adapter's own wait for the head now ends by the
deadline (the body stays the caller's to read, under the read timeout).

Every test goes through real loopback sockets: plain, TLS (trustme), a
forward proxy and a CONNECT tunnel. They run in real time, as the watchdog
does (it shuts sockets down at a moment on the real clock): each bound on a
duration is loose (:data:`BOUND`, against the 6.4 s a trickled head took),
and a lower bound only says the deadline was not cut early.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import trustme
import urllib3

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import SYSTEM, FakeClock

from ..helpers.rawserver import Listener, RawServer, read_request, respond, trickle
from ..helpers.server import Reply, ScriptServer

#: A head of 64 bytes: 6.4 s at one byte every 0.1 s.
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
PAYLOAD = HEAD + b"slow!"
BYTE_EVERY = 0.1
DEADLINE = 0.5
#: Loose: the old behaviour took len(HEAD) * BYTE_EVERY = 6.4 s at least (a busy
#: machine only makes it longer), ten times the deadline.
BOUND = 5.0


class CountingServer(RawServer):
    """A raw server that counts the TCP connections it accepts."""

    connections = 0

    def accepted(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1


class TLSTrickleServer(Listener):
    """A TLS server whose every answer is ``payload``, one byte every ``interval``."""

    def __init__(self, ca: trustme.CA, payload: bytes, interval: float) -> None:
        self.payload, self.interval = payload, interval
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(self.context)
        super().__init__()

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                request = read_request(tls)
                if b"\r\n\r\n" in request:
                    trickle(self.payload, self.interval)(tls, request)
        except OSError:  # the client hung up (ssl.SSLError is an OSError)
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()


class TunnelProxy(Listener):
    """A proxy that opens CONNECT tunnels to loopback ports and splices the bytes."""

    def __init__(self) -> None:
        self.tunnels = 0
        super().__init__()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            request = read_request(conn)
            line = request.split(b"\r\n", 1)[0].decode()
            method, target, _ = line.split(" ")
            host, _, port = target.rpartition(":")
            assert method == "CONNECT"
            assert host in ("127.0.0.1", "localhost"), "the test proxy tunnels to loopback only"
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                with self._lock:
                    self.tunnels += 1
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._splice(conn, upstream)
        except (OSError, AssertionError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    @staticmethod
    def _splice(a: socket.socket, b: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([a, b], [], [], 10)
            if not ready:
                return
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (b if source is a else a).sendall(data)


@pytest.fixture
def started() -> Iterator[list[Listener]]:
    servers: list[Listener] = []
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Any) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def session_with(**options: Any) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment
    rbe.mount(session, "http://", **options)
    rbe.mount(session, "https://", **options)
    return session


def timed(call: Callable[[], object]) -> tuple[BaseException | object, float]:
    """Run ``call``: what it returned or raised, and how long it took."""
    began = time.monotonic()
    try:
        outcome: BaseException | object = call()
    except requests.RequestException as exc:
        outcome = exc
    return outcome, time.monotonic() - began


def assert_deadline_error(outcome: object, elapsed: float) -> None:
    assert isinstance(outcome, rbe.DeadlineExceeded), f"{outcome!r} after {elapsed:.2f}s"
    # still what a read timeout raises: code written for plain requests handles it
    assert isinstance(outcome, requests.exceptions.ReadTimeout)
    assert DEADLINE * 0.9 <= elapsed < BOUND, f"took {elapsed:.2f}s"


# -- the trickled head ends at the deadline ----------------------------------------


def test_8_a_trickled_head_ends_at_the_deadline(started):
    server = CountingServer(trickle(PAYLOAD, BYTE_EVERY))
    started.append(server)
    with session_with(deadline=DEADLINE) as session:
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=30))
    assert_deadline_error(outcome, elapsed)
    # the deadline ended the call: no retry was begun after it
    assert [a.kind for a in rbe.attempts(outcome)] == ["ReadTimeoutError"]
    assert len(server.requests) == 1


def test_8_a_trickled_head_ends_at_the_deadline_over_tls(started, ca, ca_file):
    server = TLSTrickleServer(ca, PAYLOAD, BYTE_EVERY)
    started.append(server)
    with session_with(deadline=DEADLINE) as session:
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=30, verify=ca_file))
    assert_deadline_error(outcome, elapsed)


def test_8_a_trickled_head_ends_at_the_deadline_with_stream(started):
    server = CountingServer(trickle(PAYLOAD, BYTE_EVERY))
    started.append(server)
    with session_with(deadline=DEADLINE) as session:
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=30, stream=True))
    assert_deadline_error(outcome, elapsed)


def test_8_a_proxy_that_trickles_the_head_is_cut_at_the_deadline(started):
    proxy = CountingServer(trickle(PAYLOAD, BYTE_EVERY))  # answers the forwarded request
    started.append(proxy)
    proxies = {"http": proxy.url()}
    with session_with(deadline=DEADLINE) as session:
        outcome, elapsed = timed(
            lambda: session.get("http://127.0.0.1:9/x", timeout=30, proxies=proxies)
        )
    assert_deadline_error(outcome, elapsed)
    assert proxy.requests[0].startswith(b"GET http://127.0.0.1:9/x ")  # it went by the proxy


def test_8_a_trickled_head_through_a_tunnel_is_cut_at_the_deadline(started, ca, ca_file):
    server = TLSTrickleServer(ca, PAYLOAD, BYTE_EVERY)
    proxy = TunnelProxy()
    started += [server, proxy]
    proxies = {"https": proxy.url()}
    with session_with(deadline=DEADLINE) as session:
        outcome, elapsed = timed(
            lambda: session.get(server.url(), timeout=30, verify=ca_file, proxies=proxies)
        )
    assert_deadline_error(outcome, elapsed)
    assert proxy.tunnels == 1


def test_8_the_next_call_gets_a_fresh_connection(started):
    server = CountingServer(trickle(PAYLOAD, BYTE_EVERY), respond(b"200 OK", b"ok"))
    started.append(server)
    with session_with(deadline=DEADLINE, max_retries=0) as session:
        outcome, _ = timed(lambda: session.get(server.url(), timeout=30))
        assert isinstance(outcome, rbe.DeadlineExceeded)
        # the connection whose head was cut off is not handed out again
        assert session.get(server.url(), timeout=30).text == "ok"
    assert server.connections == 2


def test_8_a_fake_clock_deadline_is_measured_from_the_attempt(started):
    server = CountingServer(trickle(PAYLOAD, BYTE_EVERY))
    started.append(server)
    clock = FakeClock()
    with session_with(deadline=DEADLINE, max_retries=0, clock=clock) as session:
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=30))
    assert_deadline_error(outcome, elapsed)


def test_8_a_silent_server_gets_the_same_error_at_the_deadline(started):
    """A server that sends nothing trips the read timeout (capped at the time
    left) as the deadline passes: whichever notices first, the caller gets the
    same error."""
    server = CountingServer(lambda conn, _: time.sleep(3))
    started.append(server)
    with session_with(deadline=DEADLINE, max_retries=0) as session:
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=30))
    assert_deadline_error(outcome, elapsed)


def test_8_a_read_timeout_before_the_deadline_stays_a_read_timeout(started):
    server = CountingServer(lambda conn, _: time.sleep(3))
    started.append(server)
    with session_with(deadline=5.0, max_retries=0) as session:
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=(5, 0.3)))
    assert type(outcome) is requests.exceptions.ReadTimeout, outcome
    assert elapsed < BOUND


# -- what it leaves alone ------------------------------------------------------------


def test_8_a_slow_but_timely_server_is_unaffected():
    server = ScriptServer()
    try:
        server.route("GET", "/r", Reply(200, "late but in time", delay=0.3))
        with session_with(deadline=2.0) as session:
            outcome, _ = timed(lambda: session.get(server.url("/r"), timeout=30))
        assert isinstance(outcome, requests.Response), outcome  # (not cut at the deadline)
        assert outcome.text == "late but in time"
    finally:
        server.close()


def test_8_a_head_trickled_within_the_deadline_is_read_whole(started):
    server = CountingServer(trickle(PAYLOAD, 0.005), respond(b"200 OK", b"again"))
    started.append(server)
    with session_with(deadline=3.0) as session:
        assert session.get(server.url(), timeout=30).text == "slow!"
        assert session.get(server.url(), timeout=30).text == "again"
    assert server.connections == 1  # the connection went back to the pool and was reused


def test_8_the_body_is_not_cut_at_the_deadline(started):
    """The head arrives at once; the body trickles past the deadline, each byte
    well within the read timeout: the caller reads it whole, as before."""
    body = b"0123456789"

    def behaviour(conn: socket.socket, _: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        trickle(body, BYTE_EVERY)(conn, b"")

    server = CountingServer(behaviour)
    started.append(server)
    with session_with(deadline=DEADLINE) as session:
        response = session.get(server.url(), timeout=30)
    assert response.content == body


def test_8_a_call_without_a_deadline_arms_nothing(started, monkeypatch):
    from requests_bloxs_errors.pipeline import headwait

    def refuse(*args: object) -> None:
        raise AssertionError("a call without a deadline armed the watchdog")

    monkeypatch.setattr(headwait.WATCHDOG, "arm", refuse)
    server = CountingServer(trickle(PAYLOAD, 0.002))
    started.append(server)
    with session_with() as session:
        assert session.get(server.url(), timeout=30).text == "slow!"
    # (and the adapter's context manager for it is one shared no-op)
    assert headwait.head_deadline(None, SYSTEM) is headwait.head_deadline(None, SYSTEM)


def test_8_many_concurrent_calls_share_one_watchdog(started):
    server = CountingServer(trickle(PAYLOAD, BYTE_EVERY))
    started.append(server)
    outcomes: list[tuple[object, float]] = []

    def one() -> None:
        with session_with(deadline=DEADLINE, max_retries=0) as session:
            outcomes.append(timed(lambda: session.get(server.url(), timeout=30)))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(outcomes) == 8
    for outcome, elapsed in outcomes:
        assert_deadline_error(outcome, elapsed)
    from requests_bloxs_errors.pipeline import headwait

    watchdogs = [t for t in threading.enumerate() if t.name == headwait.THREAD_NAME]
    assert len(watchdogs) <= 1  # one thread for every call's deadline, not one per call


def test_8_a_connection_class_swapped_in_urllib3_later_is_still_used(started, monkeypatch):
    """urllib3's HTTP/2 support and test libraries swap ``ConnectionCls`` on its
    pool classes: the watched pools follow, even when the swap comes after."""
    made: list[object] = []

    class Swapped(urllib3.connection.HTTPConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    server = CountingServer(trickle(PAYLOAD, BYTE_EVERY))
    started.append(server)
    with session_with(deadline=DEADLINE) as session:
        monkeypatch.setattr(urllib3.connectionpool.HTTPConnectionPool, "ConnectionCls", Swapped)
        outcome, elapsed = timed(lambda: session.get(server.url(), timeout=30))
    assert_deadline_error(outcome, elapsed)
    assert len(made) == 1
    assert isinstance(made[0], Swapped)


# -- the watchdog itself, on a socket pair -------------------------------------------------


def test_8_the_watchdog_wakes_a_blocked_read_at_its_time_and_not_before():
    from requests_bloxs_errors.pipeline.headwait import Watchdog

    watchdog = Watchdog(idle=0.5)
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(30)
        began = time.monotonic()
        alarm = watchdog.arm(began + 0.3, a)
        assert a.recv(1) == b""  # woken by the shutdown, not by the 30 s timeout
        assert 0.3 - 1e-6 <= time.monotonic() - began < BOUND  # not before its time
        assert watchdog.disarm(alarm) is True

    c, d = socket.socketpair()
    with c, d:
        c.settimeout(5)
        alarm = watchdog.arm(time.monotonic() + 0.1, c)
        assert watchdog.disarm(alarm) is False
        time.sleep(0.3)
        d.sendall(b"x")
        assert c.recv(1) == b"x"  # disarmed in time: the socket was left alone


def test_8_disarmed_deadlines_do_not_pile_up():
    from requests_bloxs_errors.pipeline.headwait import Watchdog

    watchdog = Watchdog(idle=0.5)
    a, b = socket.socketpair()
    with a, b:
        far = time.monotonic() + 3600
        for _ in range(1000):
            watchdog.disarm(watchdog.arm(far, a))
        assert len(watchdog._heap) <= 130  # compacted as it went
