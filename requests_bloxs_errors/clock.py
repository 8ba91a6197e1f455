"""Time as a parameter: :class:`Clock`, the real one, and :class:`FakeClock` for tests.

Everything in this package that waits or measures time (the breaker, the
permit logs, the outage bookkeeping, pacing, the credentials) reads it from
a clock object it is given, real by default. A test hands the same objects a
:class:`FakeClock` and checks a timing rule as a value, without sleeping.

A clock has three readings, as the :mod:`time` module has them:

``monotonic()``
    seconds on a clock that never goes back, for intervals within a process;
``time()``
    seconds since the epoch, for what other processes and hosts compare
    (a shared store's timestamps, a token's expiry);
``sleep(seconds)``
    wait that long (the real clock sleeps in pieces :func:`time.sleep`
    accepts, so a wait of 1e20 s raises no ``OverflowError``).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM", "Clock", "FakeClock", "SystemClock"]

#: The longest single :func:`time.sleep` (larger values overflow on some platforms).
_LONGEST_SLEEP = 24 * 3600.0


@runtime_checkable
class Clock(Protocol):
    """What code that waits or measures time asks of its clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def time(self) -> float:
        """Seconds since the epoch (the wall clock)."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (0 or less: return at once)."""


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and a sleep that
    wakes at its target however long it is."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    @staticmethod
    def sleep(seconds: float) -> None:
        """Sleep ``seconds``, in pieces :func:`time.sleep` accepts."""
        if not seconds > 0:  # also NaN
            return
        until = time.monotonic() + seconds
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, _LONGEST_SLEEP))

    def __repr__(self) -> str:
        return "requests_bloxs_errors.clock.SYSTEM"


#: The clock every object uses unless it is given another.
SYSTEM: Clock = SystemClock()


class FakeClock:
    """A clock that moves only when told to: by :meth:`advance`, or by a ``sleep``.

    ``sleep(s)`` advances the clock by ``s`` at once and records ``s`` in
    :attr:`sleeps`, so code that waits runs to completion instantly and a
    test reads how long it waited from the clock. Both readings move
    together; :meth:`step_wall` moves the wall clock alone (a host whose clock
    is set back or forward). It is thread-safe: one fake clock may be shared
    by the simulator's server thread, an adapter and a credential.

    By default it starts at fixed readings (monotonic 1000, wall clock
    2023-11-14), so a test's readings are the same on every run;
    :meth:`starting_now` starts it at the real clock's readings instead, so
    that dates from hosts on the real clock and the fake clock's agree.

    Usage::

        >>> clock = FakeClock()
        >>> breaker = rbe.CircuitBreaker(failures=1, open_for=30, clock=clock)
        >>> clock.advance(30)   # the circuit's probe is now due

    :param start: the monotonic reading to start from.
    :param wall: the wall-clock reading to start from.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._monotonic = float(start)
        self._wall = float(wall)
        #: Every ``sleep`` asked of this clock, in order, as asked (0 and
        #: negative waits too): what the code under test would have waited.
        self.sleeps: list[float] = []

    @classmethod
    def starting_now(cls, real: Clock = SYSTEM) -> FakeClock:
        """A fake clock that starts at ``real``'s readings and then moves only when told.

        Usage::

            >>> clock = FakeClock.starting_now()
            >>> abs(clock.time() - time.time()) < 60
            True

        :param real: the clock whose readings to start from.
        """
        return cls(start=real.monotonic(), wall=real.time())

    def monotonic(self) -> float:
        """The fake monotonic reading."""
        return self._monotonic

    def time(self) -> float:
        """The fake wall-clock reading."""
        return self._wall

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance by it (0 or less: record only)."""
        with self._lock:
            self.sleeps.append(seconds)
        if seconds > 0:
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds``."""
        with self._lock:
            self._monotonic += seconds
            self._wall += seconds

    def step_wall(self, seconds: float) -> None:
        """Move the wall clock alone (negative: set back), as an operator or NTP would."""
        with self._lock:
            self._wall += seconds

    def __repr__(self) -> str:
        return f"FakeClock(monotonic={self._monotonic:g}, wall={self._wall:g})"
