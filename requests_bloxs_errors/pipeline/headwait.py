"""The deadline over the wait for a response's head: :func:`head_deadline` and :func:`watch_heads`.

Socket timeouts bound each read, not a wait: a server that sends its status
line and headers one byte at a time, each within the read timeout, would
hold an attempt as long as it liked, whatever the call's ``deadline``. So
while a call with a deadline waits for the head of a response, a watchdog
holds the connection's socket and shuts it down (``shutdown(SHUT_RDWR)``,
which wakes the blocked read) when the deadline passes. The read fails; the
connection raises :class:`TimeoutError`, which urllib3 turns into the read
timeout it raises for a silent server, and discards the connection (it
never goes back to the pool). :func:`head_deadline`, around the attempt,
then raises :class:`HeadTimeout`: both an
:class:`~requests_bloxs_errors.DeadlineExceeded` and requests'
:class:`~requests.exceptions.ReadTimeout`.

Three parts:

* :func:`watch_heads` gives a urllib3 pool manager (the adapter's own and
  each proxy manager) pool classes whose connections' ``getresponse()``
  consults the current attempt: http and https (TLS, TLS through a tunnel
  or an HTTPS proxy, SOCKS), urllib3 1.26 and 2.x;
* :func:`head_deadline` is the context manager the adapter puts around each
  attempt: it tells this thread's ``getresponse()`` when the head is due;
* :data:`WATCHDOG` is one daemon thread for the whole process, with a heap
  of deadlines; it starts at the first deadline armed and ends after a
  while without any.

A call without a deadline pays nothing: the context manager is a shared
no-op, no deadline is armed and no thread starts. The body is not covered:
a caller that streams reads it at its own pace, and each read keeps the
attempt's read timeout (capped at the time left when the attempt began).

May import: :mod:`..clock`, :mod:`..exceptions`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from requests.exceptions import ReadTimeout, RequestException
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.poolmanager import PoolManager

from ..clock import Clock
from ..exceptions import DeadlineExceeded

__all__ = ["THREAD_NAME", "WATCHDOG", "HeadTimeout", "Watchdog", "head_deadline", "watch_heads"]

#: The name of the watchdog's thread.
THREAD_NAME = "rbe-head-deadline"

#: What the connection raises when the watchdog cut its wait short.
_LATE = "the call's deadline passed while waiting for the response's status line and headers"


class HeadTimeout(DeadlineExceeded, ReadTimeout):
    """The call's deadline passed while the adapter waited for the response head.

    Raised when a server (or a proxy) had not sent the status line and
    headers in full by the deadline, whether it stayed silent or trickled
    them steadily. A
    :class:`~requests_bloxs_errors.DeadlineExceeded` and a
    :class:`requests.ReadTimeout` (what a server that stays silent past the
    read timeout raises), so code written for either handles it. ``args``
    and ``request`` are those of the read timeout it replaces.
    """

    def __str__(self) -> str:
        return f"{_LATE} ({super().__str__()})"


# -- the watchdog ---------------------------------------------------------------------


class _Alarm:
    """One armed deadline: the socket to shut down, until disarmed or fired."""

    __slots__ = ("fired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self.fired = False


class Watchdog:
    """Shuts down the socket of each armed wait whose time comes first.

    One daemon thread for every wait in the process, sleeping until the
    earliest deadline in its heap; started by the first :meth:`arm`, ended
    after ``idle`` seconds with nothing armed. A disarmed wait stays in the
    heap, inert, until its time (the heap is compacted when most of it is
    inert), so disarming costs no search.

    :param idle: seconds without any wait armed after which the thread ends.
    """

    def __init__(self, idle: float = 30.0) -> None:
        self._idle = idle
        self._reset()

    def _reset(self) -> None:
        """Start empty, without a thread (also in a forked child, whose copy of the
        parent's lock may be held by a thread it does not have)."""
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._inert = 0
        self._thread: threading.Thread | None = None

    def arm(self, when: float, sock: socket.socket) -> _Alarm:
        """Shut ``sock`` down at ``when`` (a :func:`time.monotonic` reading),
        unless :meth:`disarm` comes first.

        :return: the alarm, for :meth:`disarm`.
        """
        alarm = _Alarm(sock)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is alarm:  # earlier than what the thread sleeps towards
                self._cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> bool:
        """Stop ``alarm``: once this returns, its socket will not be shut down.

        :return: whether it had fired (the socket is shut down).
        """
        with self._cond:
            if alarm.sock is None:
                return alarm.fired
            alarm.sock = None
            self._inert += 1
            if self._inert > 64 and 2 * self._inert > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2].sock is not None]
                heapq.heapify(self._heap)
                self._inert = 0
            return False

    def _run(self) -> None:
        cond = self._cond
        with cond:
            while True:
                heap = self._heap
                while heap and heap[0][2].sock is None:
                    heapq.heappop(heap)
                    self._inert -= 1
                if not heap:
                    if cond.wait(self._idle) or self._heap:
                        continue
                    self._thread = None  # idle: the next arm() starts another
                    return
                when, _, alarm = heap[0]
                left = when - time.monotonic()
                if left > 0:
                    cond.wait(left)
                    continue
                heapq.heappop(heap)
                _fire(alarm)


def _fire(alarm: _Alarm) -> None:
    """Shut the alarm's socket down, which wakes a read blocked on it (run under the
    watchdog's lock: the owner cannot close the socket meanwhile)."""
    sock = alarm.sock
    alarm.sock, alarm.fired = None, True
    if sock is not None:
        with contextlib.suppress(OSError):
            # the plain socket's own shutdown: an SSLSocket's would also drop its TLS
            # state under the reader's feet
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


#: The process's watchdog.
WATCHDOG = Watchdog()

if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=WATCHDOG._reset)


def _socket_of(sock: object) -> socket.socket | None:
    """The OS socket under a connection's ``sock``: the socket itself, an
    :class:`ssl.SSLSocket`, or the socket inside urllib3's ``SSLTransport``
    (TLS through an HTTPS proxy) or pyOpenSSL's ``WrappedSocket``."""
    for _ in range(4):
        if isinstance(sock, socket.socket):
            return sock
        sock = getattr(sock, "socket", None)
    return None


# -- the attempt's side -------------------------------------------------------------------


class _Local(threading.local):
    head: _HeadWait | None = None


_current = _Local()


class _HeadWait:
    """The context manager :func:`head_deadline` returns for an attempt with a deadline."""

    __slots__ = ("_outer", "fired", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        #: Whether the watchdog cut this attempt's wait for a head short.
        self.fired = False
        self._outer: _HeadWait | None = None

    def __enter__(self) -> None:
        self._outer = _current.head
        _current.head = self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _current.head = self._outer
        if not isinstance(exc, RequestException) or isinstance(exc, HeadTimeout):
            return
        # the watchdog cut the wait short, or a silent server's read timeout (capped
        # at the time left) beat it to the deadline: the same error either way
        if self.fired or (isinstance(exc, ReadTimeout) and time.monotonic() >= self.when):
            raise HeadTimeout(*exc.args, request=exc.request, response=exc.response) from exc

    def getresponse(self, conn: Any, plain: Callable[[Any], Any]) -> Any:
        """``plain(conn)``, with the deadline armed while it waits for the head."""
        sock = _socket_of(getattr(conn, "sock", None))
        if sock is None:  # not connected (getresponse raises) or unknown: no watch
            return plain(conn)
        alarm = WATCHDOG.arm(self.when, sock)
        try:
            response = plain(conn)
        except Exception as exc:  # (the read the shutdown woke: an EOF, a bad status line)
            if WATCHDOG.disarm(alarm):
                self.fired = True
                raise TimeoutError(_LATE) from exc
            raise
        except BaseException:  # KeyboardInterrupt and the like go on as they are
            WATCHDOG.disarm(alarm)
            raise
        if WATCHDOG.disarm(alarm):  # the head came as the deadline passed: the socket is gone
            self.fired = True
            response.close()
            raise TimeoutError(_LATE)
        return response


#: What :func:`head_deadline` gives an attempt without a deadline.
_NO_DEADLINE: AbstractContextManager[None] = contextlib.nullcontext()


def head_deadline(deadline: float | None, clock: Clock) -> AbstractContextManager[None]:
    """Around one attempt: its wait for a response head ends by ``deadline``.

    Usage::

        >>> with head_deadline(call.deadline, call.clock):
        ...     response = HTTPAdapter.send(view, request, timeout=attempt_timeout)

    Applies to the connections of pools that :func:`watch_heads` set up, used
    by this thread inside the block. When the deadline ended a wait for a
    head (the watchdog cut it short, or a read timeout capped at the time
    left expired at the deadline), the request exception leaving the block
    is raised again as a :class:`HeadTimeout`, with the same ``args`` and
    ``request``; a read timeout of the caller's that expired earlier stays
    as it is.

    :param deadline: a ``clock.monotonic()`` reading, or None (a shared
        no-op: nothing is armed).
    :param clock: the call's clock; the time left is measured on it now and
        counted in real seconds from here.
    """
    if deadline is None:
        return _NO_DEADLINE
    return _HeadWait(time.monotonic() + (deadline - clock.monotonic()))


# -- the pools ------------------------------------------------------------------------------

#: Watched subclasses by the class they watch, and the watched classes themselves.
_WATCHED: dict[type[Any], type[Any]] = {}
_WATCHING: set[type[Any]] = set()
_WATCHED_LOCK = threading.Lock()


def _watched(base: type[Any], members: Callable[[], dict[str, Any]]) -> type[Any]:
    """The watched subclass of ``base`` (the same name, so messages read as without
    it), made once with ``members``; a watched class is its own."""
    found = _WATCHED.get(base)
    if found is not None or base in _WATCHING:
        return found or base
    with _WATCHED_LOCK:
        found = _WATCHED.get(base)
        if found is None:
            found = type(base.__name__, (base,), members())
            _WATCHED[base] = found
            _WATCHING.add(found)
        return found


def _watched_connection(base: type[Any]) -> type[Any]:
    """A subclass of the connection class ``base`` whose ``getresponse()`` keeps
    :func:`head_deadline`'s deadline."""

    def members() -> dict[str, Any]:
        # no other parameter: urllib3 1.26 first tries getresponse(buffering=True),
        # which must fail at once with a TypeError, before any deadline is armed
        def getresponse(self: Any) -> Any:
            head = _current.head
            if head is None:
                return base.getresponse(self)  # (looked up now: it may be patched)
            return head.getresponse(self, base.getresponse)

        getresponse.__doc__ = base.getresponse.__doc__
        return {"getresponse": getresponse}

    return _watched(base, members)


def _watched_pool(base: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """A subclass of the pool class ``base`` whose connections are made from the
    watched subclass of ``base.ConnectionCls``, as it is when each is made
    (urllib3's HTTP/2 or emscripten support, or a test library, may swap it)."""

    def members() -> dict[str, Any]:
        def connection_class(self: HTTPConnectionPool) -> type[Any]:
            chosen = self.__dict__.get("ConnectionCls", base.ConnectionCls)
            return _watched_connection(chosen)

        def choose_connection_class(self: HTTPConnectionPool, value: type[Any]) -> None:
            self.__dict__["ConnectionCls"] = value

        return {"ConnectionCls": property(connection_class, choose_connection_class)}

    watched: type[HTTPConnectionPool] = _watched(base, members)
    return watched


def watch_heads(manager: PoolManager) -> None:
    """Let ``manager``'s new pools keep :func:`head_deadline`'s deadline.

    Replaces the manager's ``pool_classes_by_scheme`` (its own copy; urllib3's
    module-wide one is left alone) by subclasses of the same classes; pools
    it already made stay as they are. Idempotent and cheap when done.

    :param manager: a urllib3 ``PoolManager``, ``ProxyManager`` or
        ``SOCKSProxyManager``.
    """
    classes: dict[str, type[HTTPConnectionPool]] = manager.pool_classes_by_scheme
    if all(cls in _WATCHING for cls in classes.values()):
        return
    manager.pool_classes_by_scheme = {scheme: _watched_pool(cls) for scheme, cls in classes.items()}
