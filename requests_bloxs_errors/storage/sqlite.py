"""``sqlite:////absolute/path.db``: state every process on one host shares, in one file.

:class:`SQLiteBackend` keeps the rate limit's permit logs, the token cache's
sealed entries and the outbox's queue; each feature's step is one
``BEGIN IMMEDIATE`` transaction, which SQLite's write lock makes atomic
across processes.

The file and its side files (``-wal``, ``-shm``, ``-journal``) are created
readable by their owner only, and refused when they exist and are not the
user's own and private: SQLite would otherwise write into a file another
local user planted. Those checks read ``lstat``, never a descriptor opened
and closed: closing one drops every POSIX lock the process holds on the
file, SQLite's included. A process opens each file once, whatever URL names
it (:class:`SQLiteFile`). Times are the host's wall clock, which every
process on the host shares; when it was stepped back (an NTP correction)
the file notices and every time it keeps moves back with it.

Every wait here is measured on the backend's clock (its ``monotonic()``), and
the retries of a step SQLite refuses at once sleep on it (:func:`when_unlocked`).
Two waits are real time whatever the clock, as they happen outside Python's
reach: a thread waiting for this process's other threads (a lock's timed
``acquire``) and SQLite waiting for another process's lock on the file (its
busy timeout). Both are bounded by the operation's ``timeout``, and what the
first took (on the clock) is taken from the second.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from ..clock import SYSTEM, Clock
from ..events import logger
from ..urls import safe_for_message
from .base import (
    DEFAULT_HOLD,
    STORE_TIMEOUT,
    WAIT_LEASE,
    CircuitRecord,
    Grant,
    OutboxRow,
    PermitHolder,
    PermitState,
    ProcessLock,
    RuleValue,
    StorageURL,
    StoreBusy,
    TokenEntry,
    budget,
    check_private_stat,
    holder,
)
from .windows import (
    CLOCK_STEP,
    MAX_PAUSE,
    SWEEP_EVERY,
    ahead_limit,
    earliest,
    learned_ttl,
    longest_pause,
)

__all__ = ["SIDE_FILES", "SQLiteBackend", "SQLiteFile", "open_sqlite", "when_unlocked"]

#: The files SQLite keeps beside a database in WAL mode (and the rollback journal).
SIDE_FILES = ("-wal", "-shm", "-journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rbe_permits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL, at REAL NOT NULL, ended REAL, expires REAL NOT NULL,
    forget REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rbe_permits_key_ended ON rbe_permits (key, ended);
ALTER TABLE rbe_permits ADD COLUMN lease REAL;
ALTER TABLE rbe_permits ADD COLUMN hold REAL;
ALTER TABLE rbe_permits ADD COLUMN host TEXT;
ALTER TABLE rbe_permits ADD COLUMN pid INTEGER;
ALTER TABLE rbe_permits ADD COLUMN since REAL;
CREATE TABLE IF NOT EXISTS rbe_pauses (key TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rbe_rules (
    key TEXT PRIMARY KEY, max_calls INTEGER NOT NULL, period REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rbe_clock (id INTEGER PRIMARY KEY CHECK (id = 0), seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rbe_tokens (
    name TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rbe_token_locks (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rbe_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    method TEXT NOT NULL,
    shown_url TEXT NOT NULL,
    host TEXT NOT NULL,
    sealed BLOB NOT NULL,
    kind TEXT NOT NULL,
    status INTEGER,
    trace_id TEXT,
    uncertain INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    last_error TEXT,
    tries INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL
);
CREATE TABLE IF NOT EXISTS rbe_circuits (
    host TEXT NOT NULL, holder_host TEXT NOT NULL, pid INTEGER NOT NULL,
    state TEXT NOT NULL, since REAL NOT NULL, failures INTEGER NOT NULL,
    published REAL NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (host, holder_host, pid)
);
"""
_OUTBOX_COLUMNS = (
    "id, created, method, shown_url, host, sealed, kind, status, trace_id, uncertain, "
    "state, last_error, tries"
)
#: Above every permit's id (ids are never reused): a new permit comes after all the others.
_NO_LATER = 2**63 - 1
#: Seconds a replayer retries recording what it sent while the file is busy: a sent
#: entry that stayed queued would be sent again by the next replay.
SETTLE_FOR = 30.0


#: SQLite's primary result codes that mean the file cannot be had now (an outage, not
#: a bug): PERM, BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN,
#: PROTOCOL, NOTADB.
_OUTAGE_CODES = frozenset({3, 5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
#: How SQLite words those errors, for a Python (3.10) whose exceptions carry no code.
_OUTAGE_MESSAGES = (
    "access permission denied",
    "database is locked",
    "database table is locked",
    "out of memory",
    "attempt to write a readonly database",
    "disk i/o error",
    "database disk image is malformed",
    "database or disk is full",
    "unable to open database",
    "locking protocol",
    "file is not a database",
)

#: An SQLite URL for messages: ``sqlite:///`` then the path ``/var/lib/app/rbe.db``.
EXAMPLE = "sqlite:////var/lib/app/rbe.db"


def check_url(storage: StorageURL, what: str) -> StorageURL:
    """``sqlite:///`` then the absolute path of the file, as SQLAlchemy writes it:
    ``sqlite:////var/lib/app/rbe.db`` is the file ``/var/lib/app/rbe.db``.

    A relative path (``sqlite:///rbe.db``) is refused: processes that share a
    store start in different working directories (cron starts jobs in the
    home directory), so each would find a file of its own.
    """
    rest = storage.url.partition("://")[2].partition("?")[0]
    host, slash, path = rest.partition("/")
    path = unquote(path)
    if host or not slash:
        raise ValueError(
            f"{what} must be 'sqlite:///' then the absolute path of the file, such as "
            f"{EXAMPLE!r}; got {safe_for_message(storage.url)}"
        )
    if not path:
        raise ValueError(
            f"{what} names no file: write 'sqlite:///' then the absolute path, such as {EXAMPLE!r}"
        )
    if not path.startswith("/"):
        raise ValueError(
            f"{what} names the relative path {safe_for_message(path)}: processes that "
            "share a store start in different directories, so write 'sqlite:///' then the "
            f"absolute path, such as {safe_for_message('sqlite:////' + path)}"
        )
    if path.endswith("/") or "\0" in path:
        raise ValueError(
            f"{what} must name a file, such as {EXAMPLE!r}; got {safe_for_message(storage.url)}"
        )
    return StorageURL("sqlite", storage.url, path=path)


class _Shared:
    """This process's one connection to one SQLite file, and what goes with it: the
    lock its threads take turns under, its busy timeout, the schemas applied, and
    the :class:`SQLiteFile` objects using it (held weakly: one dropped without
    :meth:`~SQLiteFile.close` stops counting)."""

    __slots__ = ("__weakref__", "busy_ms", "connection", "key", "lock", "pid", "schemas", "users")

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.connection: sqlite3.Connection | None = None
        self.busy_ms = 0  # the busy timeout the connection has now
        self.schemas: set[str] = set()
        self.users: weakref.WeakSet[SQLiteFile] = weakref.WeakSet()


#: This process's SQLite files by the file itself, ``(st_dev, st_ino)``, whatever
#: path or URL names it. Weak: a file nobody uses any more is closed with its last
#: user (or when that is garbage-collected).
_FILES: weakref.WeakValueDictionary[tuple[int, int], _Shared] = weakref.WeakValueDictionary()
_FILES_LOCK = ProcessLock()
#: What a forked child inherited from its parent: kept, never closed (closing them
#: would close descriptors of files the child opens anew).
_INHERITED: set[_Shared] = set()


class SQLiteFile:
    """One SQLite file: one connection per process, shared by its threads under a
    lock and by every :class:`SQLiteFile` that names the file (found by the file
    itself: another spelling of its path shares it too), and write transactions
    that are atomic across processes.

    A second connection would be harmless, but the checks of a second opening
    were not: closing any descriptor of a file drops every POSIX lock the
    process holds on it, and SQLite in another process then took itself for
    the file's last user and deleted the write-ahead log under the live
    connection. A forked child opens its own connection.

    Every operation takes a ``timeout`` (seconds, default :data:`STORE_TIMEOUT`):
    waiting for this process's other threads and for another process's lock on
    the file together stay within it (see
    :func:`~requests_bloxs_errors.storage.store_timeout`). Those two waits are
    real time; what is left of the timeout is measured on ``clock``.

    :param schema: ``CREATE ... IF NOT EXISTS`` statements, applied on opening.
    :param clock: where time comes from (:data:`~requests_bloxs_errors.clock.SYSTEM`):
        the time left of a timeout, and the pauses between retries of a step
        SQLite refuses at once (:func:`when_unlocked`).
    """

    __slots__ = ("__weakref__", "_clock", "_schema", "_shared", "_storage")

    def __init__(self, storage: StorageURL, schema: str, clock: Clock = SYSTEM) -> None:
        self._storage = storage
        self._schema = schema
        self._clock = clock
        self._shared: _Shared | None = None

    @property
    def shown(self) -> str:
        """The file's URL, fit for a log line."""
        return self._storage.shown

    def _attach(self) -> _Shared:
        """This process's :class:`_Shared` of the file, found (or made, and the file
        created) by its device and inode; nothing is connected here."""
        shared = self._shared
        if shared is not None and shared.pid == os.getpid():
            return shared  # (the usual case: no lock)
        with _FILES_LOCK:
            shared = self._shared
            if shared is not None and shared.pid == os.getpid():
                return shared
            if shared is not None:
                _INHERITED.add(shared)  # a forked child opens its own
                self._shared = None
            info = _private_file(self._storage.path, create=True)
            assert info is not None
            key = (info.st_dev, info.st_ino)
            shared = _FILES.get(key)
            if shared is None or shared.pid != os.getpid():
                if shared is not None:
                    _INHERITED.add(shared)
                shared = _FILES[key] = _Shared(key)
            shared.users.add(self)
            self._shared = shared
            return shared

    def _detach(self, shared: _Shared) -> None:
        """Stop using ``shared`` (the next use finds the file again)."""
        with _FILES_LOCK:
            shared.users.discard(self)
            if self._shared is shared:
                self._shared = None

    def _db(self, shared: _Shared, seconds: float) -> sqlite3.Connection:
        """The connection of ``shared`` (whose lock the caller holds), opened now when
        it is not, with this object's schema applied."""
        if shared.connection is None:
            try:
                shared.connection = _open(
                    self._storage, self._schema, seconds, shared.key, self._clock
                )
            except BaseException:
                self._detach(shared)  # (the file may be another by the next use)
                raise
            shared.busy_ms = int(seconds * 1000)
            shared.schemas = {self._schema}
        elif self._schema not in shared.schemas:
            connection = shared.connection
            when_unlocked(
                lambda: _apply(connection, self._schema), give_up_after=seconds, clock=self._clock
            )
            shared.schemas.add(self._schema)
        return shared.connection

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """This process's connection, to one thread at a time, within ``timeout``
        (outside any transaction: :meth:`transaction` opens one).

        A thread waits for the others no longer than that (then
        :class:`StoreBusy`): behind a file that another process keeps locked,
        threads would otherwise queue here and each wait out SQLite's own busy
        timeout in turn. What is left of it, on the clock, becomes SQLite's
        busy timeout. Both waits are real time (a lock's timed ``acquire``,
        SQLite's busy handler): no clock can stand in for them.

        :raises StoreBusy: when another thread of this process kept it longer.
        """
        seconds = budget(timeout)
        give_up = self._clock.monotonic() + seconds
        shared = self._attach()
        if not shared.lock.acquire(timeout=seconds):  # (real time: a thread's lock)
            raise StoreBusy(f"{self._storage.shown} stayed busy for {seconds:g}s")
        try:
            db = self._db(shared, seconds)
            if timeout is None:  # the usual case: no deadline, no PRAGMA
                busy_ms = int(STORE_TIMEOUT * 1000)
            else:
                busy_ms = max(1, int((give_up - self._clock.monotonic()) * 1000))
            if busy_ms != shared.busy_ms:
                db.execute(f"PRAGMA busy_timeout = {busy_ms}")
                shared.busy_ms = busy_ms
            yield db
        finally:
            shared.lock.release()

    @contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: SQLite's write lock makes the block
        atomic across processes (a waiting writer gives up after ``timeout``)."""
        with self.connection(timeout) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def read(self, sql: str, parameters: tuple[Any, ...], timeout: float | None = None) -> Any:
        """The first row of a query, outside any transaction (or None)."""
        with self.connection(timeout) as db:
            return db.execute(sql, parameters).fetchone()

    def read_all(
        self, sql: str, parameters: tuple[Any, ...] = (), timeout: float | None = None
    ) -> list[Any]:
        """Every row of a query, outside any transaction."""
        with self.connection(timeout) as db:
            return db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        """Stop using the file: this process's connection closes with its last user
        (the next use opens it again)."""
        with _FILES_LOCK:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            if shared.pid != os.getpid():
                _INHERITED.add(shared)  # (the parent's: never closed here)
                return
            shared.users.discard(self)
        with shared.lock:
            with _FILES_LOCK:
                idle = not shared.users
            if idle and shared.connection is not None:
                shared.connection.close()
                shared.connection = None


def open_sqlite(
    storage: StorageURL, schema: str, *, timeout: float = STORE_TIMEOUT, clock: Clock = SYSTEM
) -> sqlite3.Connection:
    """A new connection to the SQLite file of ``storage``, created 0600, with ``schema``
    applied. :class:`SQLiteFile` shares one per file in a process: use that.

    The connection runs in autocommit mode (callers open their own ``BEGIN
    IMMEDIATE`` transactions) and may be used from any thread that holds the
    caller's lock. Processes that open the file at the same moment wait for
    each other (up to ``timeout``, on ``clock``), whichever creates the tables.
    """
    return _open(storage, schema, timeout, None, clock)


def _open(
    storage: StorageURL,
    schema: str,
    timeout: float,
    key: tuple[int, int] | None,
    clock: Clock = SYSTEM,
) -> sqlite3.Connection:
    """:func:`open_sqlite`, refused unless the file opened is the file ``key`` names
    (None: the one the path names as it is checked)."""
    path = storage.path
    # create it owner-only before SQLite does; then its side files, or refuse the
    # ones another user planted: SQLite would write what it keeps into them
    info = _private_file(path, create=True)
    assert info is not None
    for suffix in SIDE_FILES:
        _private_file(path + suffix, create=suffix != "-journal")  # a journal means data
    connection = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    try:
        opened = os.lstat(path)  # (the file checked, still: not swapped meanwhile)
        expected = key or (info.st_dev, info.st_ino)
        if expected != (info.st_dev, info.st_ino) or expected != (opened.st_dev, opened.st_ino):
            raise PermissionError(f"{path} was replaced while it was being opened")
        when_unlocked(
            lambda: connection.execute("PRAGMA journal_mode=WAL"),
            give_up_after=timeout,
            clock=clock,
        )
        connection.execute("PRAGMA synchronous=NORMAL")
        when_unlocked(lambda: _apply(connection, schema), give_up_after=timeout, clock=clock)
    except BaseException:
        connection.close()
        raise
    return connection


def _private_file(path: str, *, create: bool) -> os.stat_result | None:
    """What ``lstat`` says of ``path``, refused unless it is this user's own and
    private (a symlink is refused, never followed); made 0600 first when it is
    missing and ``create``, else absent is fine (None).

    A file that exists is never opened here: SQLite may have it open in this
    process, and closing any descriptor of it would drop SQLite's locks.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return None
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:  # another process made it first: theirs is checked
            info = os.lstat(path)
        else:
            try:  # (a file this call made: nobody held a lock on it)
                info = os.fstat(fd)
            finally:
                os.close(fd)
    check_private_stat(info, path)
    return info


def _apply(connection: sqlite3.Connection, schema: str) -> None:
    """Run ``schema`` in one write transaction (a schema check that upgrades to a
    write outside one may fail at once with "database is locked").

    An ``ALTER TABLE ... ADD COLUMN`` of a column the table has already is
    skipped: that is how a file made by an earlier version gains a column.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.split(";"):
            if not statement.strip():
                continue
            try:
                connection.execute(statement)
            except sqlite3.OperationalError as exc:
                if not (statement.strip().startswith("ALTER") and "duplicate column" in str(exc)):
                    raise
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def when_unlocked(
    step: Callable[[], object],
    *,
    give_up_after: float = STORE_TIMEOUT,
    pause: float = 0.01,
    clock: Clock = SYSTEM,
) -> None:
    """Run ``step``, again while the file is locked by another process or busy in
    this one (:class:`StoreBusy`), until ``give_up_after`` seconds have passed.

    SQLite returns "locked" at once, without its busy wait, for a journal-mode
    change or a schema check that turns into a write.

    :param pause: seconds between tries, slept on ``clock``.
    :param clock: where the time given and the pauses are measured (a
        :class:`~requests_bloxs_errors.clock.FakeClock` gives up after
        ``give_up_after / pause`` tries, at once).
    """
    give_up = clock.monotonic() + give_up_after
    while True:
        try:
            step()
            return
        except (sqlite3.OperationalError, StoreBusy) as exc:
            busy = isinstance(exc, StoreBusy) or "locked" in str(exc)
            if not busy or clock.monotonic() >= give_up:
                raise
            clock.sleep(pause)


class SQLiteBackend:
    """Permit logs, token entries and the outbox in one SQLite file
    (``sqlite:///`` then its absolute path).

    :param storage: the parsed URL.
    :param clock: where time comes from: its ``time()`` dates what the file keeps
        (the host's wall clock), and every wait for the file is measured on it
        (see :class:`SQLiteFile`).
    """

    def __init__(self, storage: StorageURL, clock: Clock = SYSTEM) -> None:
        self.storage = storage
        self._file = SQLiteFile(storage, SCHEMA, clock)
        self._clock = clock
        self._sweep_at = 0.0  # (this process's monotonic clock)
        self._step_warned = False

    @classmethod
    def check_url(cls, storage: StorageURL, what: str) -> StorageURL:
        """Refuse a URL that does not name a file by its absolute path."""
        return check_url(storage, what)

    def exists(self, timeout: float | None = None) -> bool:
        """Whether the file is there (a symlink or another user's file counts: reading
        it is refused, with the reason)."""
        return os.path.lexists(self.storage.path)

    def check(self, timeout: float | None = None) -> None:
        """Open the file and read its schema; for a file not made yet, only check that
        its directory would take it (:class:`PermissionError` if not): nothing is
        created."""
        if self.exists():
            self._file.read("SELECT count(*) FROM sqlite_master", (), timeout)
            return
        directory = os.path.dirname(self.storage.path) or "."
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "its directory cannot take the file", directory)

    def unreachable(self, exc: BaseException) -> bool:
        """An outage: the file cannot be opened, is locked past the time given, full,
        read-only, corrupt or not a database, or this process's connection stayed busy
        (:class:`~.base.StoreBusy`), or any other :class:`OSError`. SQLite's own
        errors tell by their result code (Python 3.11 and later) or their message
        (3.10). Another error (a missing table or column, a wrong binding) is a bug,
        or a file this package did not write."""
        if isinstance(exc, OSError):
            return True
        if type(exc) not in (sqlite3.OperationalError, sqlite3.DatabaseError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF in _OUTAGE_CODES
        return str(exc).lower().startswith(_OUTAGE_MESSAGES)

    def close(self) -> None:
        self._file.close()

    @property
    def file(self) -> SQLiteFile:
        """The :class:`SQLiteFile` the tables are in: its :meth:`~SQLiteFile.transaction`
        runs a write transaction on this process's connection to it (to read or mend
        the tables with SQL, as the command line and the tests do)."""
        return self._file

    @property
    def key_path(self) -> str:
        """The outbox's sealing key: beside the database, ``<path>.key``."""
        return self.storage.path + ".key"

    # -- permits ------------------------------------------------------------------

    def _now(self, db: sqlite3.Connection) -> float:
        """The wall clock, inside a write transaction: when it went back since the
        file last saw it, every time kept goes back with it; ended rows go when a
        sweep is due."""
        now = self._clock.time()
        row = db.execute("SELECT seen FROM rbe_clock WHERE id = 0").fetchone()
        if row is None:
            db.execute("INSERT INTO rbe_clock (id, seen) VALUES (0, ?)", (now,))
        elif now < row[0] - CLOCK_STEP:
            self._stepped_back(db, row[0] - now)
            db.execute("UPDATE rbe_clock SET seen = ? WHERE id = 0", (now,))
        elif now > row[0] + CLOCK_STEP / 2:  # (kept roughly: one write a second at most)
            db.execute("UPDATE rbe_clock SET seen = ? WHERE id = 0", (now,))
        if self._clock.monotonic() >= self._sweep_at:
            self._sweep_at = self._clock.monotonic() + SWEEP_EVERY
            db.execute("DELETE FROM rbe_permits WHERE forget <= ?", (now,))
            db.execute("DELETE FROM rbe_pauses WHERE until <= ?", (now,))
            db.execute("DELETE FROM rbe_rules WHERE expires <= ?", (now,))
        return now

    def _stepped_back(self, db: sqlite3.Connection, step: float) -> None:
        db.execute(
            "UPDATE rbe_permits SET at = at - ?1, ended = ended - ?1, expires = expires - ?1, "
            "forget = forget - ?1, lease = lease - ?1, since = since - ?1",
            (step,),
        )
        db.execute("UPDATE rbe_pauses SET until = until - ?", (step,))
        db.execute("UPDATE rbe_rules SET expires = expires - ?", (step,))
        if not self._step_warned:
            self._step_warned = True
            logger.warning(
                "The wall clock went back %.1fs; the rate limit's permits and pauses in %s "
                "moved back with it",
                step,
                self._file.shown,
            )

    @staticmethod
    def _pause_until(
        db: sqlite3.Connection, key: str, now: float, configured: RuleValue | None
    ) -> float:
        row = db.execute("SELECT until FROM rbe_pauses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return 0.0
        if row[0] > now + longest_pause(configured):
            db.execute("DELETE FROM rbe_pauses WHERE key = ?", (key,))  # stale
            return 0.0
        return float(row[0])

    def acquire(
        self,
        key: str,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        with self._file.transaction(timeout) as db:
            return self._reserve(db, key, rule, max_wait, hold=hold, stamp=None)

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
        with self._file.transaction(timeout) as db:
            return self._reserve(db, key, rule, max_wait, hold=hold, stamp=stamp)

    def _reserve(
        self,
        db: sqlite3.Connection,
        key: str,
        configured: RuleValue | None,
        max_wait: float,
        *,
        hold: float,
        stamp: Any,
    ) -> Grant:
        """A new permit (``stamp`` None), or a new time for the reservation ``stamp``:
        the earliest the permits reserved before it allow (see :mod:`.windows`)."""
        now = self._now(db)
        rule = configured
        row = db.execute(
            "SELECT max_calls, period FROM rbe_rules WHERE key = ? AND expires > ?", (key, now)
        ).fetchone()
        if row is not None:
            rule = (int(row[0]), float(row[1]))
        start = max(now, self._pause_until(db, key, now, configured))
        # a holder that died waiting sent nothing: its reservation lapses
        db.execute(
            "DELETE FROM rbe_permits WHERE key = ? AND ended IS NULL AND lease <= ?", (key, now)
        )
        # a holder that never said: its permit ended at its expiry
        db.execute(
            "UPDATE rbe_permits SET ended = expires WHERE key = ? AND ended IS NULL "
            "AND lease IS NULL AND expires <= ?",
            (key, now),
        )
        if stamp is not None:
            row = db.execute(
                "SELECT lease FROM rbe_permits WHERE id = ? AND key = ? AND ended IS NULL",
                (stamp, key),
            ).fetchone()
            if row is None:
                stamp = None  # forgotten, or lapsed: reserve anew
            elif row[0] is None:
                return Grant(0.0, stamp)  # sent already
        if rule is None:
            return Grant(start - now, stamp)
        limit, period = rule
        # ended a period ago; in flight from a time no clock that was right could give
        db.execute("DELETE FROM rbe_permits WHERE key = ? AND ended <= ?", (key, now - period))
        db.execute(
            "DELETE FROM rbe_permits WHERE key = ? AND ended IS NULL AND at > ?",
            (key, now + ahead_limit(period)),
        )
        before = _NO_LATER if stamp is None else stamp  # only those reserved before it
        (flying,) = db.execute(
            "SELECT count(*) FROM rbe_permits WHERE key = ? AND ended IS NULL AND id < ?",
            (key, before),
        ).fetchone()
        firm = True
        if flying >= limit:  # a guess until one of them ends
            starts = db.execute(
                "SELECT at FROM rbe_permits WHERE key = ? AND ended IS NULL AND id < ?",
                (key, before),
            ).fetchall()
            guess, firm = earliest((), [at for (at,) in starts], now, limit, period)
            start = max(start, guess)
        else:  # the (limit - flying)-th latest end, on the index
            row = db.execute(
                "SELECT ended FROM rbe_permits WHERE key = ? AND ended IS NOT NULL AND id < ? "
                "ORDER BY ended DESC LIMIT 1 OFFSET ?",
                (key, before, limit - flying - 1),
            ).fetchone()
            if row is not None:
                start = max(start, row[0] + period)
        wait = start - now
        if wait > max_wait:
            if stamp is not None:
                db.execute("DELETE FROM rbe_permits WHERE id = ?", (stamp,))
            return Grant(wait)
        if firm and wait <= 0:  # sent from now: it counts until it ends, or its hold
            at, lease, expires = now, None, now + hold
        else:  # waiting: held while its holder renews it
            at, lease, expires = start, now + WAIT_LEASE, start + hold
        if stamp is not None:
            db.execute(  # (a permit sent now is "since" now; a waiting one keeps its)
                "UPDATE rbe_permits SET at = ?1, lease = ?2, expires = ?3, forget = ?3 + ?4, "
                "hold = ?5, since = CASE WHEN ?2 IS NULL THEN ?6 ELSE since END WHERE id = ?7",
                (at, lease, expires, period, hold, now, stamp),
            )
            return Grant(wait, stamp, firm)
        host, pid = holder()
        cursor = db.execute(
            "INSERT INTO rbe_permits (key, at, expires, forget, lease, hold, host, pid, since) "
            "VALUES (?1, ?2, ?3, ?3 + ?4, ?5, ?6, ?7, ?8, ?9)",
            (key, at, expires, period, lease, hold, host, pid, now),
        )
        return Grant(wait, cursor.lastrowid, firm)

    def finish(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            now = self._now(db)
            # (forget moves with the end: it was the expiry plus a period)
            db.execute(
                "UPDATE rbe_permits SET ended = ?1, forget = ?1 + forget - expires "
                "WHERE id = ?2 AND key = ?3 AND ended IS NULL",
                (now, stamp, key),
            )

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            db.execute("DELETE FROM rbe_permits WHERE id = ? AND key = ?", (stamp, key))

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        with self._file.transaction(timeout) as db:
            now = self._now(db)
            current = self._pause_until(db, key, now, rule)
            until = now + min(seconds, longest_pause(rule))
            if until > current:
                db.execute(
                    "INSERT OR REPLACE INTO rbe_pauses (key, until) VALUES (?, ?)", (key, until)
                )

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        row = self._file.read("SELECT until FROM rbe_pauses WHERE key = ?", (key,), timeout)
        if row is None:
            return 0.0
        left = row[0] - self._clock.time()
        return 0.0 if left > longest_pause(rule) else max(0.0, left)  # (stale: none)

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            now = self._now(db)
            db.execute(
                "INSERT OR REPLACE INTO rbe_rules (key, max_calls, period, expires) "
                "VALUES (?, ?, ?, ?)",
                (key, limit, period, now + learned_ttl(period)),
            )

    def survey(
        self, timeout: float | None = None
    ) -> tuple[list[PermitState], list[tuple[str, str]]]:
        """:meth:`snapshot`; nothing is skipped (every row is this package's)."""
        return self.snapshot(timeout), []

    def snapshot(self, timeout: float | None = None) -> list[PermitState]:
        now = self._clock.time()
        found: dict[str, dict[str, Any]] = {}
        rows = self._file.read_all(
            "SELECT key, total(ended IS NULL AND lease IS NULL AND expires > ?1), "
            "total(ended IS NULL AND lease > ?1), "
            "total(ended IS NOT NULL OR (lease IS NULL AND expires <= ?1)) FROM rbe_permits "
            "WHERE forget > ?1 GROUP BY key",
            (now,),
            timeout,
        )
        for key, flying, waiting, ended in rows:
            found.setdefault(key, {}).update(
                in_flight=int(flying), waiting=int(waiting), ended=int(ended), now=now
            )
        holders: dict[str, list[PermitHolder]] = {}
        for key, sent, host, pid, since, at in self._file.read_all(
            "SELECT key, lease IS NULL, host, pid, coalesce(since, at), at FROM rbe_permits "
            "WHERE ended IS NULL AND ((lease IS NULL AND expires > ?1) OR lease > ?1) "
            "ORDER BY coalesce(since, at), id",
            (now,),
            timeout,
        ):
            holders.setdefault(key, []).append(
                PermitHolder(
                    "sending" if sent else "waiting",
                    host or "?",  # (a row an earlier version wrote names nobody)
                    int(pid or 0),
                    since=float(since),
                    at=float(at),
                )
            )
        for key, held in holders.items():
            found.setdefault(key, {})["holders"] = tuple(held)
        for key, until in self._file.read_all(
            "SELECT key, until FROM rbe_pauses WHERE until > ?", (now,), timeout
        ):
            found.setdefault(key, {})["paused_for"] = min(until - now, MAX_PAUSE)
        for key, limit, period, expires in self._file.read_all(
            "SELECT key, max_calls, period, expires FROM rbe_rules WHERE expires > ?",
            (now,),
            timeout,
        ):
            found.setdefault(key, {}).update(
                learned=(int(limit), float(period)), learned_for=expires - now
            )
        return [PermitState(key, **found[key]) for key in sorted(found)]

    # -- tokens -------------------------------------------------------------------

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        row = self._file.read(
            "SELECT value FROM rbe_tokens WHERE name = ? AND expires > ?",
            (name, self._clock.time()),
            timeout,
        )
        return bytes(row[0]) if row else None

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            now = self._clock.time()
            db.execute("DELETE FROM rbe_tokens WHERE expires <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO rbe_tokens (name, value, expires) VALUES (?, ?, ?)",
                (name, blob, now + ttl),
            )

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        with self._file.transaction(timeout) as db:
            now = self._clock.time()
            row = db.execute(
                "SELECT owner FROM rbe_token_locks WHERE name = ? AND until > ?", (name, now)
            ).fetchone()
            if row is not None:
                return False
            db.execute(
                "INSERT OR REPLACE INTO rbe_token_locks (name, owner, until) VALUES (?, ?, ?)",
                (name, owner, now + ttl),
            )
            return True

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            db.execute("DELETE FROM rbe_token_locks WHERE name = ? AND owner = ?", (name, owner))

    def token_entries(self, timeout: float | None = None) -> list[TokenEntry]:
        """Every entry not expired, by name, sealed contents unread."""
        now = self._clock.time()
        rows = self._file.read_all(
            "SELECT name, expires FROM rbe_tokens WHERE expires > ? ORDER BY name", (now,), timeout
        )
        return [TokenEntry(name, expires - now) for name, expires in rows]

    # -- the outbox ---------------------------------------------------------------

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
        with self._file.transaction() as db:
            cursor = db.execute(
                "INSERT INTO rbe_outbox (created, method, shown_url, host, sealed, kind, status, "
                "trace_id, uncertain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (created, method, shown_url, host, sealed, kind, status, trace_id, uncertain),
            )
            entry_id = cursor.lastrowid
        assert entry_id is not None
        return entry_id

    def entry_rows(
        self, entry_id: int | None = None, timeout: float | None = None
    ) -> list[OutboxRow]:
        if entry_id is None:
            rows = self._file.read_all(
                f"SELECT {_OUTBOX_COLUMNS} FROM rbe_outbox ORDER BY id", (), timeout
            )
        else:
            rows = self._file.read_all(
                f"SELECT {_OUTBOX_COLUMNS} FROM rbe_outbox WHERE id = ?", (entry_id,), timeout
            )
        return [_outbox_row(row) for row in rows]

    def queued(self, timeout: float | None = None) -> list[tuple[int, bool]]:
        rows = self._file.read_all(
            "SELECT id, uncertain FROM rbe_outbox WHERE state = 'queued' ORDER BY id", (), timeout
        )
        return [(entry_id, bool(uncertain)) for entry_id, uncertain in rows]

    def drop_entry(self, entry_id: int, timeout: float | None = None) -> bool:
        with self._file.transaction(timeout) as db:
            return db.execute("DELETE FROM rbe_outbox WHERE id = ?", (entry_id,)).rowcount == 1

    def claim(
        self, entry_id: int, owner: str, now: float, lease: float, timeout: float | None = None
    ) -> bool:
        with self._file.transaction(timeout) as db:
            claimed = db.execute(
                "UPDATE rbe_outbox SET lease_owner = ?, lease_until = ? WHERE id = ? AND "
                "state = 'queued' AND (lease_until IS NULL OR lease_until < ?)",
                (owner, now + lease, entry_id, now),
            ).rowcount
        return claimed == 1

    def settle(self, entry_id: int, owner: str, outcome: tuple[str, bool] | None) -> None:
        def record() -> None:
            with self._file.transaction() as db:
                if outcome is None:
                    db.execute(
                        "DELETE FROM rbe_outbox WHERE id = ? AND lease_owner = ?",
                        (entry_id, owner),
                    )
                    return
                error, dead = outcome
                db.execute(
                    "UPDATE rbe_outbox SET state = ?, last_error = ?, tries = tries + 1, "
                    "lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
                    ("dead" if dead else "queued", error[:500], entry_id, owner),
                )

        when_unlocked(record, give_up_after=SETTLE_FOR, pause=0.2, clock=self._clock)

    # -- circuits -----------------------------------------------------------------

    def publish_circuit(
        self, record: CircuitRecord, ttl: float, timeout: float | None = None
    ) -> None:
        """Keep ``record`` for ``ttl`` seconds of the host's wall clock (the expired
        records of every process go meanwhile)."""
        with self._file.transaction(timeout) as db:
            now = self._clock.time()
            db.execute("DELETE FROM rbe_circuits WHERE expires <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO rbe_circuits (host, holder_host, pid, state, since, "
                "failures, published, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.host,
                    record.holder_host,
                    record.pid,
                    record.state,
                    record.since,
                    record.failures,
                    record.published,
                    now + ttl,
                ),
            )

    def circuit_records(self, timeout: float | None = None) -> list[CircuitRecord]:
        """Every record not yet expired, sorted by host, then holder."""
        rows = self._file.read_all(
            "SELECT host, state, since, failures, holder_host, pid, published FROM rbe_circuits "
            "WHERE expires > ? ORDER BY host, holder_host, pid",
            (self._clock.time(),),
            timeout,
        )
        return [
            CircuitRecord(
                host=str(host),
                state=str(state),
                since=float(since),
                failures=int(failures),
                holder_host=str(holder_host),
                pid=int(pid),
                published=float(published),
            )
            for host, state, since, failures, holder_host, pid, published in rows
        ]


def _outbox_row(row: tuple[Any, ...]) -> OutboxRow:
    """A row of ``rbe_outbox`` (:data:`_OUTBOX_COLUMNS`) as an :class:`OutboxRow`."""
    (entry_id, created, method, shown, host, sealed, kind, status, trace, uncertain) = row[:10]
    state, last_error, tries = row[10:13]
    return OutboxRow(
        entry_id,
        created,
        method,
        shown,
        host,
        bytes(sealed),
        kind,
        status,
        trace,
        bool(uncertain),
        state,
        last_error,
        tries,
    )
