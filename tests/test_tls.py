"""TLS over loopback with certificates the tests make: a failure that cannot
change on a retry comes back at once as requests' own SSLError; one that may
(a handshake broken off) is retried."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import requests
import trustme

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import SYSTEM, Clock, FakeClock

from .helpers.tlsserver import TLSServer


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def servers() -> Iterator[list[TLSServer]]:
    started: list[TLSServer] = []
    yield started
    for server in started:
        server.close()


def start(servers: list[TLSServer], *args, **kwargs) -> TLSServer:
    server = TLSServer(*args, **kwargs)
    servers.append(server)
    return server


def mounted(clock: Clock = SYSTEM) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    rbe.mount(session, "https://", max_retries=3, backoff_factor=0.2, clock=clock)
    return session


def test_a_trusted_certificate_works(ca, ca_file, servers):
    server = start(servers, ca, names=("127.0.0.1",))
    with mounted() as session:
        assert session.get(server.url(), verify=ca_file).text == "ok"


def test_an_untrusted_certificate_is_not_retried(ca, servers):
    server = start(servers, ca, names=("127.0.0.1",))
    clock = FakeClock()
    with mounted(clock) as session, pytest.raises(requests.exceptions.SSLError) as caught:
        session.get(server.url(), timeout=5)  # the system's CAs do not know the test CA
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert server.connections == 1  # one handshake attempt, as plain requests makes
    assert clock.sleeps == []  # no back-off slept
    assert [a.kind for a in rbe.attempts(caught.value)] == ["SSLError"]


def test_a_hostname_mismatch_is_not_retried(ca, ca_file, servers):
    server = start(servers, ca, names=("other.test",))
    with mounted() as session, pytest.raises(requests.exceptions.SSLError) as caught:
        session.get(server.url(), verify=ca_file, timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) or "match" in str(caught.value)
    assert server.connections == 1


def test_a_refused_client_certificate_is_not_retried(ca, ca_file, servers):
    server = start(servers, ca, names=("127.0.0.1",), mode="client_cert")
    with mounted() as session, pytest.raises(requests.exceptions.RequestException):
        session.get(server.url(), verify=ca_file, timeout=5)  # presents no certificate
    assert server.connections == 1


def test_a_client_certificate_the_server_trusts_works(ca, ca_file, servers, tmp_path):
    server = start(servers, ca, names=("127.0.0.1",), mode="client_cert")
    client = ca.issue_cert("client@example.test")
    pem = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(pem))
    with mounted() as session:
        assert session.get(server.url(), verify=ca_file, cert=str(pem)).text == "ok"


# urllib3 leaves the socket of a handshake that broke off to the garbage
# collector (plain requests does the same); collect it within this test
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_handshake_broken_off_is_retried_for_a_get(ca, ca_file, servers):
    server = start(servers, ca, names=("127.0.0.1",), mode="reset")
    with mounted() as session, pytest.raises(requests.ConnectionError) as caught:
        session.get(server.url(), verify=ca_file, timeout=5)
    assert server.connections == 4  # like any connection failure: 1 + 3 retries
    assert rbe.attempts(caught.value)[-1].decision == "gave up: retries exhausted"
    del caught
    gc.collect()
