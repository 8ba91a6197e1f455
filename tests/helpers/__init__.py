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

__all__ = ["Countdown", "refused", "wait_until"]


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


class Countdown:
    """Equal to a wait a store computed on its own real clock (Redis's ``TIME``), of
    ``expected`` seconds had no time passed: no longer than that, and shorter by at
    most the real seconds since ``since`` (a :func:`time.monotonic` reading taken
    before the store was first asked), as every time the store keeps was taken
    after it. It measures the drift instead of hoping a busy machine keeps it under
    a fixed tolerance: the one place a test reads the real clock to check a wait,
    because Redis's clock cannot be faked.
    """

    #: Rounding of seconds since the epoch in doubles (a Lua script's arithmetic).
    ROUNDING = 1e-5

    def __init__(self, expected: float, since: float) -> None:
        self.expected = expected
        self.since = since
        self.slack = 0.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (int, float)):
            return NotImplemented
        self.slack = time.monotonic() - self.since  # (real time: Redis's clock runs on)
        return self.expected - self.slack - self.ROUNDING <= other <= self.expected + self.ROUNDING

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{self.expected:g} (less up to {self.slack:.3f}s that Redis's clock ran on)"
