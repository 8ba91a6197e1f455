"""Storage URLs: where state shared between threads, processes and hosts lives.

One module owns the URL forms and opening what they name, for every feature
that shares state (the rate limiter today, the token cache next):

``memory://``
    this process only (its threads share it); nothing to open.
``sqlite:///path/to/file.db``
    every process on one host; the file is created readable by its owner
    only (0600), in WAL mode, with a short busy timeout.
``redis://[:password@]host:port/db`` and ``rediss://...``
    every process on every host that reaches the server; needs the
    ``redis`` extra (``pip install 'requests-bloxs-errors[redis]'``).

A URL is parsed, and an unknown or malformed one refused with a
``ValueError``, when the feature is configured: never at the first request.
Connections are opened lazily, in the process that uses them (a forked
child opens its own).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .events import logger
from .urls import safe_for_message

__all__ = [
    "Outage",
    "ProcessLock",
    "RedisConnection",
    "SQLiteFile",
    "StorageURL",
    "StoreBusy",
    "check_private",
    "missing_extra",
    "open_redis",
    "open_sqlite",
    "parse",
    "store_timeout",
    "when_unlocked",
]

SCHEMES = ("memory", "sqlite", "redis", "rediss")
#: Seconds a store may take before the caller gives up on it and falls back.
STORE_TIMEOUT = 1.0
#: The share of a call's time left that a store may take: the rest is the request's.
STORE_SHARE = 0.5
#: Below this many seconds a store is not asked at all: the caller falls back at once.
STORE_MIN_TIME = 0.01
#: Seconds between attempts to reach a failed store again.
RETRY_STORE_AFTER = 5.0
#: The files SQLite keeps beside a database in WAL mode (and the rollback journal).
SIDE_FILES = ("-wal", "-shm", "-journal")


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


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL.

    :ivar scheme: ``"memory"``, ``"sqlite"``, ``"redis"`` or ``"rediss"``.
    :ivar url: the URL as given (it may hold a Redis password: never print it;
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


def parse(url: object, *, what: str = "storage") -> StorageURL:
    """Parse a storage URL; see the module docstring for the forms.

    :param what: the argument's name, for the error message.
    :raises ValueError: for an unknown scheme or a malformed URL (the message
        never shows a password).
    :raises ImportError: for a Redis URL when the ``redis`` package is missing.
    """
    if not isinstance(url, str):
        raise TypeError(f"{what} must be a URL string such as 'sqlite:///path', not {url!r}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"{what} must be 'memory://', 'sqlite:///path', 'redis://host:port/db' "
            f"or 'rediss://...'; got {safe_for_message(url)}"
        )
    if scheme == "memory":
        if rest:
            raise ValueError(f"{what} 'memory://' takes nothing after '//'")
        return StorageURL("memory", url)
    if scheme == "sqlite":
        path = unquote(rest.partition("?")[0])
        if not path.startswith("/") or path.endswith("/") or "\0" in path:
            raise ValueError(
                f"{what} must name a file by its absolute path, such as "
                f"'sqlite:////var/lib/app/rbe.db' or 'sqlite:///tmp/rbe.db'; "
                f"got {safe_for_message(url)}"
            )
        return StorageURL("sqlite", url, path=path)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} is not a valid Redis URL: {safe_for_message(url)}") from None
    if not parts.hostname:
        raise ValueError(f"{what} must name the Redis host: {safe_for_message(url)}")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError(
            f"{what}: the Redis database must be a number, as in "
            f"'redis://{parts.hostname}:{port or 6379}/0'; got {safe_for_message(url)}"
        )
    redis_module()  # a missing extra is a configuration error: say so now
    return StorageURL(scheme, url)


def missing_extra(extra: str, package: str, feature: str) -> ImportError:
    """The one-line error for a feature whose optional package is not installed."""
    return ImportError(
        f"{feature} needs the {package!r} package: pip install 'requests-bloxs-errors[{extra}]'"
    )


def redis_module() -> Any:
    """The ``redis`` package, or the one-line error naming the extra."""
    try:
        import redis  # noqa: PLC0415 - an optional extra
    except ImportError:
        raise missing_extra("redis", "redis", "a redis:// storage URL") from None
    return redis


def open_redis(storage: StorageURL, *, timeout: float = STORE_TIMEOUT) -> Any:
    """A Redis client for ``storage`` whose connecting and reading each take at most
    ``timeout`` seconds, without redis-py's own retries (a store must not hang a call)."""
    redis = redis_module()
    from redis.backoff import NoBackoff  # noqa: PLC0415 - an optional extra
    from redis.retry import Retry  # noqa: PLC0415

    return redis.Redis.from_url(
        storage.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
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


class StoreBusy(OSError):
    """A store could not be had in the time given: this process's connection stayed
    busy, or the call had too little time left to ask it."""


def _budget(timeout: float | None) -> float:
    """The seconds a store operation may take; :class:`StoreBusy` when too few."""
    if timeout is None:
        return STORE_TIMEOUT
    if timeout < STORE_MIN_TIME:
        raise StoreBusy(f"{timeout:.3f}s left: too little to ask the store")
    return min(timeout, STORE_TIMEOUT)


class SQLiteFile:
    """One SQLite file of a store: a connection per process, shared by its threads
    under a lock, and write transactions that are atomic across processes.

    Every operation takes a ``timeout`` (seconds, default :data:`STORE_TIMEOUT`):
    waiting for this process's other threads and for another process's lock on
    the file together stay within it (see :func:`store_timeout`).

    :param schema: ``CREATE ... IF NOT EXISTS`` statements, applied on opening.
    """

    def __init__(self, storage: StorageURL, schema: str) -> None:
        self._storage = storage
        self._schema = schema
        self._lock = ProcessLock()
        self._connection: sqlite3.Connection | None = None
        self._pid = 0
        self._busy_ms = 0  # the busy timeout the connection has now

    @property
    def shown(self) -> str:
        """The file's URL, fit for a log line."""
        return self._storage.shown

    def _db(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            # a forked child opens its own: a connection must not cross a fork
            self._connection = open_sqlite(self._storage, self._schema)
            self._pid = os.getpid()
            self._busy_ms = int(STORE_TIMEOUT * 1000)
        return self._connection

    @contextmanager
    def _held(self, timeout: float | None) -> Iterator[sqlite3.Connection]:
        """This process's connection, to one thread at a time, within ``timeout``.

        A thread waits for the others no longer than that (then
        :class:`StoreBusy`): behind a file that another process keeps locked,
        threads would otherwise queue here and each wait out SQLite's own busy
        timeout in turn. What is left of it becomes SQLite's busy timeout.
        """
        budget = _budget(timeout)
        give_up = time.monotonic() + budget
        if not self._lock.acquire(timeout=budget):
            raise StoreBusy(f"{self._storage.shown} stayed busy for {budget:g}s")
        try:
            db = self._db()
            if timeout is None:  # the usual case: no deadline, no PRAGMA
                busy_ms = int(STORE_TIMEOUT * 1000)
            else:
                busy_ms = max(1, int((give_up - time.monotonic()) * 1000))
            if busy_ms != self._busy_ms:
                db.execute(f"PRAGMA busy_timeout = {busy_ms}")
                self._busy_ms = busy_ms
            yield db
        finally:
            self._lock.release()

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: SQLite's write lock makes the block
        atomic across processes (a waiting writer gives up after ``timeout``)."""
        with self._held(timeout) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def read(self, sql: str, parameters: tuple[Any, ...], timeout: float | None = None) -> Any:
        """The first row of a query, outside any transaction (or None)."""
        with self._held(timeout) as db:
            return db.execute(sql, parameters).fetchone()

    def read_all(
        self, sql: str, parameters: tuple[Any, ...] = (), timeout: float | None = None
    ) -> list[Any]:
        """Every row of a query, outside any transaction."""
        with self._held(timeout) as db:
            return db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


#: Timeouts a Redis client is made for: an operation uses the longest that fits its
#: time (socket timeouts belong to a connection, so each gets a pool of its own).
_REDIS_TIMEOUTS = (1.0, 0.5, 0.25, 0.1, 0.05, 0.02, STORE_MIN_TIME)


class RedisConnection:
    """A Redis client per process, opened on first use, with Lua scripts registered.

    Each operation takes a ``timeout`` (seconds, default :data:`STORE_TIMEOUT`)
    that bounds connecting, sending and reading: a server that accepts and
    never answers costs no more. redis-py's own retries are off (a store that
    fails is the caller's fallback to handle, at once).

    :param scripts: name to Lua source; each runs with ``EVALSHA`` (one round trip).
    """

    def __init__(self, storage: StorageURL, scripts: dict[str, str]) -> None:
        self._storage = storage
        self._sources = scripts
        self._lock = ProcessLock()
        self._clients: dict[float, tuple[Any, dict[str, Any]]] = {}
        self._pid = 0

    def _for(self, timeout: float | None) -> tuple[Any, dict[str, Any]]:
        budget = _budget(timeout)
        bound = next(t for t in _REDIS_TIMEOUTS if t <= budget + 1e-9)
        found = self._clients.get(bound) if self._pid == os.getpid() else None
        if found is None:
            with self._lock:
                if self._pid != os.getpid():
                    self._clients = {}  # a forked child opens its own
                    self._pid = os.getpid()
                found = self._clients.get(bound)
                if found is None:
                    client = open_redis(self._storage, timeout=bound)
                    scripts = {
                        name: client.register_script(text) for name, text in self._sources.items()
                    }
                    found = self._clients[bound] = (client, scripts)
        return found

    def client(self, timeout: float | None = None) -> Any:
        """The client of this process whose socket timeouts fit ``timeout``."""
        return self._for(timeout)[0]

    def run(self, name: str, keys: list[str], args: list[Any], timeout: float | None = None) -> Any:
        """Run the script ``name`` within ``timeout`` seconds."""
        return self._for(timeout)[1][name](keys=keys, args=args)

    def close(self) -> None:
        """Close this process's clients."""
        with self._lock:
            if self._pid == os.getpid():
                for client, _ in self._clients.values():
                    client.close()
            self._clients = {}


def open_sqlite(storage: StorageURL, schema: str) -> sqlite3.Connection:
    """A connection to the SQLite file of ``storage``, created 0600, with ``schema`` applied.

    The connection runs in autocommit mode (callers open their own ``BEGIN
    IMMEDIATE`` transactions) and may be used from any thread that holds the
    caller's lock. Processes that open the file at the same moment wait for
    each other (up to :data:`STORE_TIMEOUT`), whichever creates the tables.
    """
    path = storage.path
    # create it owner-only before SQLite does; then its side files, or refuse the
    # ones another user planted: SQLite would write what it keeps into them
    _private_file(path, create=True)
    for suffix in SIDE_FILES:
        _private_file(path + suffix, create=suffix != "-journal")  # a journal means data
    connection = sqlite3.connect(
        path, timeout=STORE_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    try:
        when_unlocked(lambda: connection.execute("PRAGMA journal_mode=WAL"))
        connection.execute("PRAGMA synchronous=NORMAL")
        when_unlocked(lambda: _apply(connection, schema))
    except BaseException:
        connection.close()
        raise
    return connection


def _private_file(path: str, *, create: bool) -> None:
    """Open ``path`` without following a symlink (creating it 0600 when ``create``)
    and refuse it unless it is this user's own and private; absent is fine when
    it is not to be created."""
    flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        if create:
            raise
        return
    try:
        check_private(fd, path)
    finally:
        os.close(fd)


def check_private(fd: int, path: str) -> None:
    """Refuse a file this user does not own, or that others may read or write:
    someone else could read what is kept there, or have planted what is read."""
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PermissionError(
            f"{path} must belong to this user and be readable by it alone (mode 0600); "
            f"it is mode {info.st_mode & 0o777:o}, owner uid {info.st_uid}"
        )


def _apply(connection: sqlite3.Connection, schema: str) -> None:
    """Run ``schema`` in one write transaction (a schema check that upgrades to a
    write outside one may fail at once with "database is locked")."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.split(";"):
            if statement.strip():
                connection.execute(statement)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def when_unlocked(step: Any, *, give_up_after: float = STORE_TIMEOUT, pause: float = 0.01) -> None:
    """Run ``step``, again while the file is locked by another process or busy in
    this one (:class:`StoreBusy`), until ``give_up_after`` seconds have passed.

    SQLite returns "locked" at once, without its busy wait, for a journal-mode
    change or a schema check that turns into a write.
    """
    give_up = time.monotonic() + give_up_after
    while True:
        try:
            step()
            return
        except (sqlite3.OperationalError, StoreBusy) as exc:
            busy = isinstance(exc, StoreBusy) or "locked" in str(exc)
            if not busy or time.monotonic() >= give_up:
                raise
            time.sleep(pause)


class Outage:
    """The health of one shared store, as a feature that falls back sees it.

    A store that fails (unreachable, locked, corrupt) never fails a call: the
    feature works within the process instead. This keeps the bookkeeping:
    one WARNING when the store fails, none while it stays down, a new try
    every :data:`RETRY_STORE_AFTER` seconds, and one INFO when it answers.

    :param feature: what uses the store, for the log lines ("Rate limit storage").
    :param fallback: what happens meanwhile, for the WARNING.
    """

    def __init__(self, feature: str, storage: StorageURL, fallback: str) -> None:
        self.feature = feature
        self.storage = storage
        self.fallback = fallback
        self._lock = ProcessLock()
        self._failing = False
        self._retry_at = 0.0

    @property
    def failing(self) -> bool:
        """Whether the store failed and has not answered since."""
        return self._failing

    def usable(self) -> bool:
        """Whether to use the store now: it works, or it is time to try it again.

        After an outage one caller tries it; the others keep to the fallback
        until that one reports (a store that takes :data:`STORE_TIMEOUT` to fail
        must not cost every concurrent call that long).
        """
        if not self._failing:
            return True
        with self._lock:
            if time.monotonic() < self._retry_at:
                return False
            self._retry_at = time.monotonic() + RETRY_STORE_AFTER  # this caller tries it
            return True

    def failed(self, exc: BaseException) -> None:
        """Record a failure (logs the first of an outage; never the exception's text,
        which may quote a URL with its password)."""
        with self._lock:
            first = not self._failing
            self._failing = True
            self._retry_at = time.monotonic() + RETRY_STORE_AFTER
        if first:
            logger.warning(
                "%s %s failed (%s); %s until it answers again (tried every %gs)",
                self.feature,
                self.storage.shown,
                type(exc).__name__,
                self.fallback,
                RETRY_STORE_AFTER,
            )

    def answered(self) -> None:
        """Record a success; logs the end of an outage."""
        if not self._failing:
            return
        with self._lock:
            was, self._failing = self._failing, False
        if was:
            logger.info("%s %s answers again; sharing resumed", self.feature, self.storage.shown)
