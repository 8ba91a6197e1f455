"""What the credentials of this thread are doing: the scope around ``sign`` and ``refresh``.

While the adapter asks a credential for a token, the request it is signing
is in flight, and two facts must reach code that runs inside the credential:

* which credentials are busy, so that a token request made from inside one
  (a ``fetch_token`` that calls ``requests.post`` while :func:`install` is
  active, or that uses the very session the credential is mounted on) is
  sent unsigned instead of waiting on its own lock forever;
* the deadline of the call that needs the token, so that fetching it does
  not outlast the call: the token request's own retries, its timeouts, and
  threads waiting for another thread's fetch all end by then.

Both live in a :class:`contextvars.ContextVar` that is set only for the
duration of a ``sign()`` or ``refresh()`` call. Hooks and user code outside
those calls never see it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from ..clock import SYSTEM, Clock

__all__ = [
    "Scope",
    "current",
    "deadline",
    "earliest",
    "enter",
    "leave",
    "on_clock",
    "signing",
    "time_left",
]


@dataclass(frozen=True)
class Scope:
    """The credentials signing in this context, and the deadline they work for.

    :ivar credentials: ``id()`` of each credential whose ``sign``/``refresh``
        is running (a credential's token request may be signed by another).
    :ivar deadline: ``clock.monotonic()`` value by which the outermost call
        must end, or None.
    :ivar rate_limit: the rate limit of the adapter whose call needs the
        credential: its token requests are paced by it too.
    :ivar clock: the clock ``deadline`` is read on (the adapter's).
    """

    credentials: frozenset[int] = frozenset()
    deadline: float | None = None
    rate_limit: Any = None
    clock: Clock = SYSTEM


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "requests_bloxs_errors_signing", default=None
)


#: The scope of the credential calls running in this context, or None (the
#: context variable's own ``get``: it is read for every request).
current = _scope.get


class signing:
    """Mark ``credential`` busy (and ``deadline`` in force) for a ``with`` block.

    Scopes nest: an inner one keeps the outer credentials, the outer clock and
    the earlier deadline (an inner deadline read on another clock is carried
    over to the outer clock first). (A class rather than a generator: it runs on
    every signed request.)
    """

    __slots__ = ("_scope", "_token")

    def __init__(
        self,
        credential: object,
        deadline: float | None,
        rate_limit: Any = None,
        clock: Clock = SYSTEM,
    ) -> None:
        outer = _scope.get()
        if outer is None:
            self._scope = Scope(frozenset((id(credential),)), deadline, rate_limit, clock)
        else:
            self._scope = Scope(
                outer.credentials | {id(credential)},
                earliest(outer.deadline, on_clock(deadline, clock, outer.clock)),
                outer.rate_limit if rate_limit is None else rate_limit,
                outer.clock,
            )

    def __enter__(self) -> Scope:
        self._token = _scope.set(self._scope)
        return self._scope

    def __exit__(self, *exc: object) -> None:
        _scope.reset(self._token)


#: Put a ready :class:`Scope` in force (when :func:`current` is None) for a caller
#: that keeps one for its most frequent case (no outer scope, no deadline);
#: :func:`leave`, with what it returned, undoes it. (The context variable's own
#: ``set`` and ``reset``: they run for every signed request.)
enter = _scope.set
leave = _scope.reset


def deadline() -> float | None:
    """The deadline of the call a credential is working for, or None."""
    scope = _scope.get()
    return scope.deadline if scope is not None else None


def time_left() -> float | None:
    """Seconds until :func:`deadline` (0 when passed), or None without one."""
    scope = _scope.get()
    if scope is None or scope.deadline is None:
        return None
    return max(0.0, scope.deadline - scope.clock.monotonic())


def on_clock(deadline: float | None, clock: Clock, other: Clock) -> float | None:
    """``deadline``, a ``clock.monotonic()`` reading, as the same moment on ``other``:
    as many seconds from ``other``'s now (itself when both are one clock)."""
    if deadline is None or other is clock:
        return deadline
    return other.monotonic() + (deadline - clock.monotonic())


def earliest(first: float | None, second: float | None) -> float | None:
    """The earlier of two deadlines, either of which may be None."""
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)
