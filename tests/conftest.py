from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import Simulator

from .server import ScriptServer


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
