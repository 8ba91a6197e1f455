"""A pytest plugin for running requests' own test suite with the adapter installed.

``nox -s requests_suite`` loads it (``-p rbe_suite_plugin``) into requests'
suite, fetched from the sdist of the installed requests version. It:

* calls ``rbe.install(prefix)`` before any test runs, ``prefix`` from
  ``RBE_SUITE_PREFIX`` (``http://`` or ``https://``), so every
  ``requests.Session`` the suite makes goes through the adapter;
* guards the network: name resolution of anything but loopback names, and
  connections to anything but 127.0.0.0/8 and ::1, are refused before a
  packet leaves; each refusal is recorded, and a run that recorded one
  fails, so the deselection list in ``noxfile.py`` stays complete.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest

import requests_bloxs_errors as rbe

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

#: requests' tests that would leave this machine, deselected: a test id
#: (every parametrization) or an exact parametrized id, and why.
OFF_MACHINE = {
    "tests/test_requests.py::TestTimeout::test_connect_timeout": "dials 10.255.255.1",
    "tests/test_requests.py::TestTimeout::test_total_timeout_connect": "dials 10.255.255.1",
    "tests/test_requests.py::TestRequests::test_errors[http://doesnotexist.google.com-"
    "ConnectionError]": "resolves doesnotexist.google.com",
    "tests/test_requests.py::TestRequests::test_proxy_error": "resolves a proxy name in DNS",
}
_blocked: list[str] = []
_original_getaddrinfo = socket.getaddrinfo
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _is_loopback(host: Any) -> bool:
    if host is None or host == "":
        return True  # a local wildcard, never a remote peer
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host):
        _blocked.append(f"resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "refused by the loopback guard")
    return _original_getaddrinfo(host, *args, **kwargs)


def _peer(address: Any) -> Any:
    return address[0] if isinstance(address, tuple) else None


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(_peer(address)):
        _blocked.append(f"connect {_peer(address)!r}")
        raise ConnectionRefusedError("refused by the loopback guard")
    return _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(_peer(address)):
        _blocked.append(f"connect {_peer(address)!r}")
        return 111  # ECONNREFUSED
    return _original_connect_ex(self, address)


def pytest_configure(config: pytest.Config) -> None:
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    prefix = os.environ.get("RBE_SUITE_PREFIX", "http://")
    rbe.install(prefix)
    config.stash[_PREFIX] = prefix


_PREFIX = pytest.StashKey[str]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        off = item.nodeid in OFF_MACHINE or item.nodeid.split("[")[0] in OFF_MACHINE
        (dropped if off else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    return f"requests-bloxs-errors installed for {config.stash[_PREFIX]!r}; loopback guard on"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _blocked and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _blocked:
        terminalreporter.write_line(
            f"the loopback guard refused {len(_blocked)} attempt(s) to leave this machine: "
            + ", ".join(sorted(set(_blocked))),
            red=True,
        )
