"""What every store shares: parsed URLs, time budgets, locks, lease owners, and the
protocols that say what each feature asks of a backend.

A backend is one class per kind of store (``memory``, ``sqlite``, ``redis``,
or one of your own, see :func:`~requests_bloxs_errors.storage.register_backend`);
it offers any of three capabilities, each a protocol here:

:class:`PermitLog`
    the rate limit's sliding-window permit logs, pauses and learned rules;
:class:`TokenStore`
    the token cache's sealed entries and their locks;
:class:`OutboxStore`
    the outbox's durable queue of sealed writes.

Every operation takes a ``timeout``: the seconds it may take, connecting and
waiting for locks included (None: :data:`STORE_TIMEOUT`). A backend that
cannot answer in time raises; the feature then falls back (see
:mod:`.fallback`) or, for the outbox, logs that nothing was kept.

Time comes from the clock a backend is made with
(:mod:`~requests_bloxs_errors.clock`): what a store keeps is dated on it, what
is left of a ``timeout`` is measured on it, and a pause between tries is slept
on it. The waits no clock can stand in for are real time, each bounded by the
operation's ``timeout``: a thread waiting for a lock (a :class:`ProcessLock`'s
or a connection's timed ``acquire``), SQLite's busy timeout, a Redis socket's.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..urls import safe_for_message

__all__ = [
    "DEFAULT_HOLD",
    "RECORD_TIMEOUT",
    "RETRY_STORE_AFTER",
    "STORE_MIN_TIME",
    "STORE_SHARE",
    "STORE_TIMEOUT",
    "WAIT_LEASE",
    "WAIT_RENEW",
    "Backend",
    "CircuitBoard",
    "CircuitRecord",
    "Grant",
    "NoTimeLeft",
    "OutboxRow",
    "OutboxStore",
    "PermitHolder",
    "PermitLog",
    "PermitState",
    "ProcessLock",
    "StorageURL",
    "StoreBusy",
    "TokenEntry",
    "TokenStore",
    "budget",
    "check_private",
    "check_private_stat",
    "holder",
    "lease_owner",
    "missing_extra",
    "record_timeout",
    "store_timeout",
]

#: Seconds a store may take before the caller gives up on it and falls back.
STORE_TIMEOUT = 1.0
#: The share of a call's time left that a store may take: the rest is the request's.
STORE_SHARE = 0.5
#: Below this many seconds a store is not asked at all: the caller falls back at once.
STORE_MIN_TIME = 0.01
#: The least a store gets to record what has already happened (see :func:`record_timeout`).
RECORD_TIMEOUT = 0.2
#: Seconds between attempts to reach a failed store again.
RETRY_STORE_AFTER = 5.0
#: Seconds a reservation whose request has not been sent yet (its holder is
#: waiting for its time) is kept without being renewed: a process that dies
#: while waiting holds nobody for longer than this.
WAIT_LEASE = 3.0
#: Seconds between renewals of a waiting reservation (:meth:`PermitLog.confirm`).
WAIT_RENEW = 1.0

#: ``(limit, period_seconds)``
RuleValue = tuple[int, float]
#: Seconds after its time that a permit whose request has no timeout counts as
#: ended, if its holder never says (see :func:`~.windows.permit_hold`).
DEFAULT_HOLD = 60.0


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL.

    :ivar scheme: ``"memory"``, ``"sqlite"``, ``"redis"``, ``"rediss"`` or a
        registered one.
    :ivar url: the URL as given (it may hold a password: never print it;
        print :attr:`shown`).
    :ivar path: the SQLite file's path, else ``""``.
    """

    scheme: str
    url: str
    path: str = ""

    @property
    def shared(self) -> bool:
        """Whether other processes see this store."""
        return self.scheme != "memory"

    @property
    def shown(self) -> str:
        """The URL fit for a log line: no password, no query string."""
        return safe_for_message(self.url).strip("'\"")

    def __repr__(self) -> str:
        return f"StorageURL({self.shown!r})"


def store_timeout(time_left: float | None) -> float:
    """How long a store may take for a call with ``time_left`` seconds (None: no deadline).

    At most :data:`STORE_TIMEOUT`, and at most :data:`STORE_SHARE` of the time
    left, so that a store that hangs (a file another process keeps locked, a
    Redis that accepts and never answers) costs the call a part of its time
    and the request still goes with the rest.
    """
    if time_left is None:
        return STORE_TIMEOUT
    return min(STORE_TIMEOUT, time_left * STORE_SHARE)


def record_timeout(time_left: float | None) -> float:
    """How long a store may take to record what has already happened (a permit's
    end, a pause a 429 taught) for a call with ``time_left`` seconds: as
    :func:`store_timeout`, but never less than :data:`RECORD_TIMEOUT`, so that a
    call that ran out of time still tells the fleet what it used and learned."""
    return max(store_timeout(time_left), RECORD_TIMEOUT)


class StoreBusy(OSError):
    """A store could not be had in the time given: this process's connection stayed
    busy, or the call had too little time left to ask it."""


class NoTimeLeft(StoreBusy):
    """The call had too little time left to ask the store at all: the store was not
    asked, so this says nothing of its health (no outage is recorded)."""


def budget(timeout: float | None) -> float:
    """The seconds a store operation may take; :class:`StoreBusy` when too few."""
    if timeout is None:
        return STORE_TIMEOUT
    if timeout < STORE_MIN_TIME:
        raise NoTimeLeft(f"{timeout:.3f}s left: too little to ask the store")
    return min(timeout, STORE_TIMEOUT)


_HOSTNAME: list[str] = []


def holder() -> tuple[str, int]:
    """``(host, pid)`` of this process, as a store names a permit's holder."""
    if not _HOSTNAME:
        _HOSTNAME.append(socket.gethostname() or "localhost")
    return _HOSTNAME[0], os.getpid()


def lease_owner() -> str:
    """A name for one hold of a lock or lease: this process, and this hold only."""
    return f"{os.getpid()}:{os.urandom(8).hex()}"


def missing_extra(extra: str, package: str, feature: str) -> ImportError:
    """The one-line error for a feature whose optional package is not installed."""
    return ImportError(
        f"{feature} needs the {package!r} package: pip install 'requests-bloxs-errors[{extra}]' "
        f"(from a checkout: pip install '.[{extra}]')"
    )


def check_private(fd: int, path: str) -> None:
    """Refuse a file this user does not own, or that others may read or write:
    someone else could read what is kept there, or have planted what is read."""
    check_private_stat(os.fstat(fd), path)


def check_private_stat(info: os.stat_result, path: str) -> None:
    """:func:`check_private` on what ``os.lstat`` (or ``os.fstat``) said of ``path``.

    Opening and closing a descriptor of a file drops every POSIX lock the
    process holds on it (SQLite's included): a file that may be open is
    checked from its ``lstat``. A symlink or a directory is refused with the
    error opening it would have raised.
    """
    if stat.S_ISLNK(info.st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{path} must belong to this user and be readable by it alone (mode 0600); "
            f"it is mode {info.st_mode & 0o777:o}, owner uid {info.st_uid}"
        )


class ProcessLock:
    """A ``threading.Lock`` that a forked child gets anew.

    A child forked while another thread of its parent held the lock would
    otherwise wait for it forever; here the first use in a new process
    replaces it. ``acquire(timeout)`` as ``threading.Lock``'s.
    """

    __slots__ = ("_lock", "_pid")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _current(self) -> threading.Lock:
        if self._pid != os.getpid():
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    def acquire(self, timeout: float = -1) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds (-1: no limit)."""
        return self._current().acquire(timeout=timeout)

    def release(self) -> None:
        """Release it."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self._current().acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


# -- what the features ask of a backend -------------------------------------------------


@runtime_checkable
class Backend(Protocol):
    """Every backend: made from its URL (and a clock), checked before it is made.

    Whatever it keeps, a backend says whether its store exists, proves that it
    answers, and tells an outage from a bug: ``status`` and ``config --check``
    read a store through these (and the capability it has), and
    :mod:`.fallback` rides out only what :meth:`unreachable` calls an outage.
    Each capability below includes them. The class may also refuse a
    malformed URL before it is made, in a classmethod ``check_url(parsed_url,
    what) -> parsed_url`` that raises ``ValueError``.
    """

    def exists(self, timeout: float | None = None) -> bool:
        """Whether the store has been made: False for an SQLite file nobody created
        yet; True for a store that is there once its server answers (Redis) or that
        lives in the process (memory). Creates nothing: ``status`` reads no store
        that does not exist."""

    def check(self, timeout: float | None = None) -> None:
        """Prove that the store answers, in one cheap round trip: the health check of
        a ``limits`` storage, but a store that does not answer raises its own error
        (which says why) instead of returning False. Creates nothing: for a store
        that does not exist yet, it checks that it could be made (SQLite: that the
        file's directory would take it)."""

    def unreachable(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by one of this backend's operations, means that the
        store cannot be had now (down, locked, full, corrupt, slower than the time
        given): the feature then works within its process and tries the store again
        later. Anything else (a ``TypeError``, a script the server refused) is a
        bug: :mod:`.fallback` logs it with its traceback (see there)."""

    def close(self) -> None:
        """Release this process's connections (reopened on the next use)."""


class Grant(NamedTuple):
    """A store's answer to a request for a permit.

    :ivar wait: seconds until the permit's time (when ``stamp`` is None and
        the wait is over ``max_wait``: until it would have come).
    :ivar stamp: the reservation, for :meth:`~PermitLog.finish`,
        :meth:`~PermitLog.cancel` and :meth:`~PermitLog.confirm`; None when
        nothing was reserved (the wait is over ``max_wait``, or no rule
        applies and the wait is a pause's).
    :ivar firm: the permit may be used at its time. When False, ``limit``
        permits reserved before it were in flight, and its time is only the
        earliest it could be: :meth:`~PermitLog.confirm` it then.
    """

    wait: float
    stamp: Any = None
    firm: bool = True


@dataclass(frozen=True)
class PermitHolder:
    """One permit that is not over, and who holds it, as a store's snapshot shows it.

    :ivar state: ``"sending"`` (its request was sent, or is being sent, and has
        not ended) or ``"waiting"`` (reserved; its holder waits for its time and
        has sent nothing).
    :ivar host: the holder's host name.
    :ivar pid: the holder's process id on that host.
    :ivar since: when it was reserved (``"waiting"``) or sent (``"sending"``),
        seconds since the epoch on the store's clock.
    :ivar at: the permit's time (the earliest it may be sent), seconds since the
        epoch on the store's clock.
    """

    state: str
    host: str
    pid: int
    since: float
    at: float


@dataclass(frozen=True)
class PermitState:
    """What a store holds for one rate-limit key, as :meth:`PermitLog.snapshot` sees it.

    :ivar key: the key (``namespace|category``).
    :ivar learned: the rule the server stated for it, while it lasts, else None.
    :ivar learned_for: seconds that rule still holds (0 without one).
    :ivar paused_for: seconds left of its pause (0 when none).
    :ivar in_flight: permits whose request was sent and has not ended.
    :ivar ended: permits that ended recently enough to still count.
    :ivar waiting: permits reserved whose request has not been sent (their
        holders wait for their time).
    :ivar holders: the in-flight and waiting permits, each with its holder,
        oldest first (empty from a backend that does not say).
    :ivar now: the store's time when it was read, seconds since the epoch (0:
        unknown), against which :attr:`PermitHolder.since` is measured.
    """

    key: str
    learned: RuleValue | None = None
    learned_for: float = 0.0
    paused_for: float = 0.0
    in_flight: int = 0
    ended: int = 0
    waiting: int = 0
    holders: tuple[PermitHolder, ...] = ()
    now: float = 0.0


@runtime_checkable
class PermitLog(Backend, Protocol):
    """The rate limit's store. Every method is one atomic step.

    Times are the store's own (the host's wall clock for SQLite, the Redis
    server's ``TIME``, the process's monotonic clock in memory); callers
    only ever see seconds. See :mod:`~requests_bloxs_errors.storage.windows`
    for the rule every backend applies.
    """

    def acquire(
        self,
        key: str,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        """Reserve the next permit for ``key`` if it comes within ``max_wait`` seconds.

        A permit granted firm with no wait is *sending* from then on: its holder
        sends at once. Any other is *waiting*, held for :data:`WAIT_LEASE` seconds
        unless :meth:`confirm` renews it; a waiting permit that lapses is given
        back (its holder died before sending: nothing was sent). Either is
        recorded with its holder (:func:`holder`) and since when.

        :param rule: the configured rule; a learned one for ``key`` wins. With
            neither, only pauses apply.
        :param hold: seconds after it is sent at which a permit counts as ended
            if :meth:`finish` never comes (its holder died).
        """

    def confirm(
        self,
        key: str,
        stamp: Any,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        """Look again at a waiting reservation: it moves to the earliest time the
        permits reserved before it (and any pause) now allow, and its lease is
        renewed (its holder calls this at least every :data:`WAIT_RENEW` seconds
        while it waits). Granted firm with no wait, it is *sending* from then on.
        Over ``max_wait``, it is given back (the grant's stamp is None). A
        reservation the store no longer has (it lapsed) is made anew, with
        ``hold``."""

    def finish(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        """Stamp the permit's end: its attempt got a response, or failed, now.
        A stamp that ended already, or that the store forgot, is ignored."""

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        """Give back a reservation that will not be used (nothing was sent)."""

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send nothing for ``key`` for ``seconds`` (an existing longer pause stays); at
        most :func:`~requests_bloxs_errors.storage.windows.longest_pause` of ``rule``."""

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        """Seconds left of ``key``'s pause (0 when none, or stale)."""

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        """Use ``limit`` per ``period`` for ``key`` from now on (the server said so)."""

    def snapshot(self, timeout: float | None = None) -> list[PermitState]:
        """What the store holds now, one :class:`PermitState` per key that has a
        permit, a pause or a learned rule, sorted by key (not one atomic step)."""

    def survey(
        self, timeout: float | None = None
    ) -> tuple[list[PermitState], list[tuple[str, str]]]:
        """:meth:`snapshot`, and the entries it skipped as ``(name, why)``: what the
        store holds that this package does not write there (a stray key, a value
        of another type). ``status`` shows both; a store that keeps nothing but
        its own entries skips none."""

    def close(self) -> None:
        """Release connections."""


class TokenEntry(NamedTuple):
    """One entry of a token cache, as :meth:`TokenStore.token_entries` lists it.

    :ivar name: the entry's opaque name (an HMAC: see
        :mod:`~requests_bloxs_errors.credentials.tokencache`).
    :ivar seconds_left: seconds until the store forgets it.
    """

    name: str
    seconds_left: float


@runtime_checkable
class TokenStore(Backend, Protocol):
    """The token cache's store: sealed entries under opaque names, and their locks."""

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        """The sealed entry, or None."""

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        """Replace the entry; it disappears after ``ttl`` seconds."""

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        """Take the entry's lock for ``ttl`` seconds; False when someone holds it."""

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        """Release the lock if ``owner`` still holds it."""

    def token_entries(self, timeout: float | None = None) -> list[TokenEntry]:
        """Every entry that has not expired, sorted by name, its sealed contents
        unread (``status`` lists them)."""

    def close(self) -> None:
        """Release connections."""


class OutboxRow(NamedTuple):
    """One outbox entry as a store keeps it (a tuple, in this order, too).

    :ivar id: the entry's id (ids are never reused).
    :ivar created: when it was kept, seconds since the epoch.
    :ivar method: the request's method.
    :ivar shown_url: its URL fit for a log line (no query string, no password).
    :ivar host: the API's ``scheme://host[:port]``.
    :ivar sealed: the request (URL, headers, body), sealed (:mod:`.sealing`).
    :ivar kind: why it was kept (the failure's kind).
    :ivar status: the status it got, or None (no response).
    :ivar trace_id: the error's trace id, or None.
    :ivar uncertain: whether it may have reached the server.
    :ivar state: ``"queued"`` or ``"dead"``.
    :ivar last_error: why its last replay failed, or None.
    :ivar tries: replays tried.
    """

    id: int
    created: float
    method: str
    shown_url: str
    host: str
    sealed: bytes
    kind: str
    status: int | None
    trace_id: str | None
    uncertain: bool
    state: str
    last_error: str | None
    tries: int


@runtime_checkable
class OutboxStore(Backend, Protocol):
    """The outbox's store: a durable queue whose entries are claimed under a lease.

    What an entry carries is sealed under a key the store never holds: the
    backend names the file that keeps it in :attr:`key_path` (an attribute or
    a property). An outbox on a backend without one is refused when it is
    configured.
    """

    @property
    def key_path(self) -> str:
        """The absolute path of the file that keeps the outbox's sealing key (made
        0600 on the first write): one that every process that replays this store
        reads, outside the store (SQLite's: the database's path and ``.key``)."""

    def add_entry(
        self,
        *,
        created: float,
        method: str,
        shown_url: str,
        host: str,
        sealed: bytes,
        kind: str,
        status: int | None,
        trace_id: str | None,
        uncertain: bool,
    ) -> int:
        """Keep one entry, durably before it returns; its id."""

    def entry_rows(
        self, entry_id: int | None = None, timeout: float | None = None
    ) -> list[OutboxRow]:
        """Every entry's row, oldest first (or only ``entry_id``'s)."""

    def queued(self, timeout: float | None = None) -> list[tuple[int, bool]]:
        """``(id, uncertain)`` of the entries waiting for a replay, oldest first."""

    def drop_entry(self, entry_id: int, timeout: float | None = None) -> bool:
        """Remove an entry; False when there was none."""

    def claim(
        self, entry_id: int, owner: str, now: float, lease: float, timeout: float | None = None
    ) -> bool:
        """Lease a queued entry to ``owner`` until ``now + lease``; False when it is
        leased to another or no longer queued."""

    def settle(self, entry_id: int, owner: str, outcome: tuple[str, bool] | None) -> None:
        """Record a replay by the lease's ``owner``: None removes the entry (sent);
        ``(error, dead)`` keeps it, dead or queued again, with the error."""

    def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class CircuitRecord:
    """One process's circuit for one host, as it publishes it for display.

    Decisions stay in each process; what is published only shows an operator
    what every process sees (``status``).

    :ivar host: the API host the circuit guards (``scheme://host[:port]``).
    :ivar state: ``"closed"``, ``"open"`` or ``"half-open"``.
    :ivar since: when it entered that state, seconds since the epoch.
    :ivar failures: the failures it counts now.
    :ivar holder_host: the publishing process's host name.
    :ivar pid: the publishing process's id.
    :ivar published: when it was published, seconds since the epoch.
    """

    host: str
    state: str
    since: float
    failures: int
    holder_host: str
    pid: int
    published: float


@runtime_checkable
class CircuitBoard(Protocol):
    """Where processes publish their circuits' states for ``status`` to show."""

    def publish_circuit(
        self, record: CircuitRecord, ttl: float, timeout: float | None = None
    ) -> None:
        """Keep ``record`` (replacing the one of the same host, holder host and pid)
        for ``ttl`` seconds."""

    def circuit_records(self, timeout: float | None = None) -> list[CircuitRecord]:
        """Every record not yet expired, sorted by host, then holder."""

    def close(self) -> None:
        """Release connections."""
