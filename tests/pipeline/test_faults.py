"""The fault matrix: every transport fault ends in a documented outcome, in bounded time.

Outcomes: a typed ``BloxsError`` (on an error status) or a ``requests``
exception (when no usable response came); never a raw urllib3 or
http.client exception, never a hang. The faults are real sockets' and run in
real time, so every time bound is loose (:data:`HANG`): it catches a hang,
never a busy machine.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
import requests

import requests_bloxs_errors as rbe

from ..helpers import wait_until
from ..helpers.rawserver import RawServer, reset, respond, trickle

HANG = 15.0  # seconds: anything slower is a hang


@pytest.fixture
def raw_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        rbe.mount(session, "http://", max_retries=2, backoff_factor=0.01, raise_errors=True)
        yield session


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


def serve(servers: list[RawServer], *behaviours) -> RawServer:
    server = RawServer(*behaviours)
    servers.append(server)
    return server


class Untranslated(AssertionError):
    pass


def timed(call):
    """Run ``call``; fail on a hang or on an exception that is not a requests one."""
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except requests.RequestException:
        elapsed = time.monotonic() - started
        assert elapsed < HANG, f"took {elapsed:.1f}s"
        raise
    except Exception as exc:
        name = f"{type(exc).__module__}.{type(exc).__name__}"
        raise Untranslated(f"untranslated {name}") from exc


def test_connection_refused(raw_session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
    with pytest.raises(requests.ConnectionError):
        timed(lambda: raw_session.get(f"http://127.0.0.1:{port}/", timeout=2))


def test_reset_before_the_status_line_get_is_retried(raw_session, servers):
    server = serve(servers, lambda conn, _: reset(conn), respond(b"200 OK", b"fine"))
    response, _ = timed(lambda: raw_session.get(server.url(), timeout=2))
    assert response.text == "fine"
    assert len(server.requests) == 2


def test_reset_before_the_status_line_post_is_not_retried(raw_session, servers):
    server = serve(servers, lambda conn, _: reset(conn), respond(b"201 Created"))
    with pytest.raises(requests.ConnectionError):
        timed(lambda: raw_session.post(server.url(), data=b"once", timeout=2))
    assert not wait_until(lambda: len(server.requests) > 1, timeout=0.1)  # no resend came
    assert len(server.requests) == 1


def _head_then(body_sent: bytes, length: int, end) -> object:
    def behaviour(conn, _):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body_sent
        )
        end(conn)

    return behaviour


def test_reset_mid_body(raw_session, servers):
    server = serve(servers, _head_then(b"x" * 100, 1000, reset))
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        timed(lambda: raw_session.get(server.url(), timeout=2))


def test_truncated_body_with_a_larger_content_length(raw_session, servers):
    server = serve(servers, _head_then(b"x" * 100, 1000, lambda conn: conn.close()))
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        timed(lambda: raw_session.get(server.url(), timeout=2))


def test_truncated_error_body_is_still_a_typed_error(raw_session, servers):
    def behaviour(conn, _):
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 500\r\n\r\n" + b'{"title": "Not F')
        conn.close()

    server = serve(servers, behaviour)
    with pytest.raises(rbe.NotFoundError) as caught:
        timed(lambda: raw_session.get(server.url(), timeout=2))
    assert caught.value.response.content == b'{"title": "Not F'  # what arrived is kept


def test_read_timeout(raw_session, servers):
    server = serve(servers, lambda conn, _: time.sleep(1.0))
    with pytest.raises(requests.ReadTimeout):
        timed(lambda: raw_session.get(server.url(), timeout=(2, 0.2)))
    assert len(server.requests) == 3  # GET: retried twice, then the ReadTimeout


def test_slow_trickle_within_the_read_timeout_completes(raw_session, servers):
    payload = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow!"
    server = serve(servers, trickle(payload, 0.01))
    response, _ = timed(lambda: raw_session.get(server.url(), timeout=(2, 0.5)))
    assert response.text == "slow!"


def test_slow_trickle_beyond_the_read_timeout_times_out(raw_session, servers):
    payload = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nslow!"
    server = serve(servers, trickle(payload, 0.4))
    with pytest.raises((requests.ReadTimeout, requests.ConnectionError)):
        timed(lambda: raw_session.get(server.url(), timeout=(2, 0.1)))


def test_a_body_trickled_faster_than_the_read_timeout_can_outlast_the_deadline(servers):
    """Documented limitation: timeouts bound each socket read, not a whole attempt.

    The deadline caps each attempt's timeouts at the time left, stops waits and
    ends the wait for the response head (see test_head_deadline.py), but a body
    sent a byte every 0.1 s never trips a 1 s read timeout: requests reads a
    success body after the adapter returns it. The call still ends, when the
    server is done.
    """
    body = b"slow, but whole"

    def behaviour(conn, _):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        trickle(body, 0.1)(conn, b"")

    server = serve(servers, behaviour)
    with requests.Session() as session:
        rbe.mount(session, "http://", max_retries=5, deadline=1.0)
        response, elapsed = timed(lambda: session.get(server.url(), timeout=30))
    assert response.content == body
    assert elapsed > 1.0  # past the deadline (a lower bound: a busy machine only adds)
    assert elapsed < HANG  # and still ended


@pytest.mark.parametrize(
    "status_line", [b"HELLO WORLD", b"HTTP/1.1 abc Bad", b"HTTP/1.1 99999 Huge", b"\x00\xff\xfe"]
)
def test_malformed_status_line(raw_session, servers, status_line):
    server = serve(servers, lambda conn, _: (conn.sendall(status_line + b"\r\n\r\n"), conn.close()))
    with pytest.raises(requests.ConnectionError):
        timed(lambda: raw_session.get(server.url(), timeout=2))


def test_one_mebibyte_header(raw_session, servers):
    big = b"X-Big: " + b"a" * (1024 * 1024)
    server = serve(servers, respond(b"200 OK", b"ok", (big,)))
    with pytest.raises(requests.ConnectionError):
        timed(lambda: raw_session.get(server.url(), timeout=5))


def _endless_error(server_ref: list[RawServer], status: bytes) -> object:
    """A 100 MiB error body, streamed until the client hangs up."""

    def behaviour(conn, _):
        size = 100 * 1024 * 1024
        conn.sendall(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(size).encode()
            + b"\r\n\r\n"
        )
        chunk = b"E" * 65536
        sent = 0
        try:
            while sent < size:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            server_ref[0].count(sent)

    return behaviour


@pytest.mark.parametrize("status", [b"404 Not Found", b"503 Service Unavailable"])
def test_a_100_mib_error_body_is_not_read_beyond_the_cap(servers, status):
    ref: list[RawServer] = []
    server = serve(servers, _endless_error(ref, status))
    ref.append(server)
    with requests.Session() as session:
        rbe.mount(session, "http://", max_retries=2, backoff_factor=0.01)
        tracemalloc.start()
        try:
            # stream=True: the caller has not chosen to read the body (without it,
            # requests itself reads all 100 MiB, with the adapter or without)
            response, elapsed = timed(lambda: session.get(server.url(), timeout=5, stream=True))
            assert elapsed < HANG
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code in (404, 503)
        assert rbe.classify(response).body_truncated
        assert response.raw.read(rbe.BODY_CAP + 10) == b"E" * (rbe.BODY_CAP + 10)  # in order
        response.close()
    assert peak < 8 * 1024 * 1024  # bounded memory, far below 100 MiB
    wait_until(lambda: not (len(server.requests) and server.sent == 0))
    attempts = len(server.requests)
    # each attempt was cut short: the kernel buffers a few MiB at most
    assert server.sent < attempts * 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"\xff\xfe broken \xc3", b"text/plain", "\ufffd\ufffd broken \ufffd"),
        (b'{"title": "half', b"application/json", '{"title": "half'),
        (b'{"errors": {"Name": [1, null]}, "title": 5}', b"application/json", "5"),
    ],
)
def test_invalid_utf8_and_json_error_bodies(raw_session, servers, body, content_type, message):
    headers = (b"Content-Type: " + content_type,)
    server = serve(servers, respond(b"400 Bad Request", body, headers))
    with pytest.raises(rbe.BadRequestError) as caught:
        timed(lambda: raw_session.get(server.url(), timeout=2))
    assert caught.value.info.message == message


def test_html_error_page_from_a_proxy(raw_session, servers):
    page = (
        b"<html><head><title>502 Bad Gateway</title></head>"
        b"<body><center>nginx</center></body></html>"
    )
    server = serve(servers, respond(b"502 Bad Gateway", page, (b"Content-Type: text/html",)))
    with pytest.raises(rbe.ServerError) as caught:
        timed(lambda: raw_session.get(server.url(), timeout=2))
    assert caught.value.info.message == "502 Bad Gateway"
    assert caught.value.attempts == 3


def test_concurrent_faults_do_not_leak_connections(servers):
    server = serve(servers, lambda conn, _: reset(conn), respond(b"200 OK", b"ok"))
    with requests.Session() as session:
        rbe.mount(session, "http://", max_retries=3, backoff_factor=0.01, pool_maxsize=8)
        results = []

        def worker():
            results.append(session.get(server.url(), timeout=2).status_code)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG)
    assert results == [200] * 8
