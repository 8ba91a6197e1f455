"""Helpers for the tests: loopback servers (HTTP, raw sockets, a proxy, TLS, Redis) and the
client scripts the fleet tests run as subprocesses."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held.

    For what another thread or process does on its own time (a server recording
    a request, a subprocess starting): timing rules are checked on a fake clock.
    """
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= give_up:
            return False
        time.sleep(0.005)
    return True
