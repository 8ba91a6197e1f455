"""Errors outside the table behave as without the adapter: refused proxies are
not retried, and error bodies reach the caller whole."""

from __future__ import annotations

import os

import pytest
import requests
from requests.adapters import HTTPAdapter

import requests_bloxs_errors as rbe

from ..helpers.proxy import ForwardProxy
from ..helpers.server import Reply


@pytest.fixture
def proxy():
    forward = ForwardProxy()
    yield forward
    forward.close()


def _through(proxy: ForwardProxy, session: requests.Session) -> None:
    session.trust_env = False
    refused = proxy.connect_status is not None
    expected = requests.exceptions.ProxyError if refused else requests.ConnectionError
    with pytest.raises(expected) as caught:
        session.get("https://127.0.0.1:9/x", proxies={"https": proxy.url()}, timeout=5)
    assert ("Tunnel connection failed" in str(caught.value)) is refused


def test_a_proxy_refusing_the_tunnel_is_not_retried(proxy, session, clock):
    """407 to CONNECT: one CONNECT and requests' own ProxyError, as plain requests does."""
    rbe.mount(session, "https://", backoff_factor=0.5, clock=clock)
    _through(proxy, session)
    assert [method for method, *_ in proxy.seen] == ["CONNECT"]
    assert clock.sleeps == []  # no back-off was slept: plain requests also sends one CONNECT


@pytest.mark.parametrize("status", [403, 502])
def test_a_proxy_refusing_the_tunnel_with_another_status_is_not_retried(proxy, session, status):
    proxy.connect_status = status
    rbe.mount(session, "https://", backoff_factor=0.01)
    _through(proxy, session)
    assert len(proxy.seen) == 1


def test_a_proxy_resetting_the_tunnel_is_retried_as_a_connection_failure(proxy, session):
    proxy.connect_status = None
    rbe.mount(session, "https://", max_retries=2, backoff_factor=0.01)
    _through(proxy, session)
    assert [method for method, *_ in proxy.seen] == ["CONNECT"] * 3


@pytest.mark.parametrize("size", [100 * 1000, 10 * 1024 * 1024])
def test_error_bodies_arrive_whole_as_without_the_adapter(server, size):
    body = os.urandom(size)
    server.route("GET", "/big", Reply(404, body, {"Content-Type": "application/octet-stream"}))
    sessions = {}
    for name, adapter in (("plain", HTTPAdapter()), ("bloxs", rbe.BloxsAdapter())):
        sessions[name] = requests.Session()
        sessions[name].mount("http://", adapter)
    seen: dict[str, list[bytes]] = {}
    for name, session in sessions.items():
        url = server.url("/big")
        content = session.get(url).content
        text = session.get(url).text
        with session.get(url, stream=True) as response:
            chunks = b"".join(response.iter_content(1000))
        with session.get(url, stream=True) as response:
            raw = response.raw.read()
        with session.get(url, stream=True) as response:
            pieces = []
            while piece := response.raw.read(7777):
                pieces.append(piece)
        seen[name] = [
            content,
            text.encode("utf-8", "surrogateescape"),
            chunks,
            raw,
            b"".join(pieces),
        ]
        session.close()
    assert seen["bloxs"] == seen["plain"]
    assert seen["bloxs"][0] == body


def test_an_error_body_read_in_part_by_the_caller_continues_where_it_stopped(server, session):
    body = b"".join(b"%08d\n" % n for n in range(20000))  # 180 KB, every line numbered
    server.route("GET", "/lines", Reply(500, body, {"Content-Type": "text/plain"}))
    rbe.mount(session, "http://", max_retries=0)
    with session.get(server.url("/lines"), stream=True) as response:
        assert rbe.classify(response).body_truncated
        first = response.raw.read(100)
        rest = b"".join(response.iter_content(4096))
    assert first + rest == body
