"""Helpers for the tests: loopback servers (HTTP, raw sockets, a proxy, TLS, Redis) and the
client scripts the fleet tests run as subprocesses.

Importing this package needs no pytest: the benchmarks (``bench`` extra alone) start
their Redis server with :mod:`.redisserver`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

__all__ = ["refused", "wait_until"]


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


def refused(response: Any, error_class: type[BaseException]) -> pytest.ExceptionInfo[Any]:
    """Assert ``response`` is a local reply (the adapter refused the call, nothing was
    sent) whose ``raise_for_status()`` raises ``error_class``; what it raised, as
    ``pytest.raises`` gives it."""
    import pytest  # (here: importing the package must not need it)

    assert getattr(response, "local", False), f"not a local reply: {response.status_code}"
    assert response.request is not None
    assert not response.ok
    with pytest.raises(error_class) as caught:
        response.raise_for_status()
    return caught
