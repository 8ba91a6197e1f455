"""Sliding-window permit logs: the rate limiter's counting, in memory, SQLite or Redis.

Every store keeps, per key, the times of the permits it gave out and
answers one question atomically: *when may the next request go?* It then
records that time at once (a reservation), so concurrent callers line up
one behind the other instead of waking together and racing for one slot.

The rule for ``limit`` requests per ``period`` seconds: a new permit is no
earlier than

* now, and the end of any pause a server asked for;
* the ``limit``-th most recent permit plus the period plus a small margin
  (:func:`margin`), so that at most ``limit`` permits fall in ANY interval
  of the period, whatever the phase of the server's own windows;
* the latest permit (permits are handed out in order).

A server-stated rule learned for a key (:meth:`Windows.learn`) takes
precedence over the configured one until it expires.

Nothing a store keeps can hold a key for long:

* a pause lasts at most :func:`longest_pause` of the key's configured rule
  (its period; :data:`MAX_PAUSE` without one), whatever it was asked for;
* a permit or pause lying further ahead than any could (a host whose wall
  clock was stepped back, a value from elsewhere) is stale: dropped, not
  waited for (:func:`ahead_limit`);
* ended pauses, expired rules and idle permit logs are forgotten (SQLite
  deletes their rows every :data:`SWEEP_EVERY` seconds, memory drops them,
  Redis keys expire).

SQLite and Redis measure time by their own clocks (the host's wall clock;
the Redis server's ``TIME``), so processes and hosts share one timeline;
the caller only ever sees seconds to wait. The SQLite store notices a wall
clock stepped back (its latest reading is kept in the file) and moves every
time it keeps back with it.

Every operation takes a ``timeout``: the seconds the store may take (see
:func:`~requests_bloxs_errors.storage.store_timeout`).
"""

from __future__ import annotations

import os
import sqlite3
from collections import deque
from typing import Any, Protocol

from .clock import SYSTEM, Clock
from .events import logger
from .storage import ProcessLock, RedisConnection, SQLiteFile, StorageURL

__all__ = [
    "MAX_PAUSE",
    "MemoryWindows",
    "RedisWindows",
    "SQLiteWindows",
    "Windows",
    "ahead_limit",
    "longest_pause",
    "margin",
    "open_windows",
]

#: ``(limit, period_seconds)``
RuleValue = tuple[int, float]
#: Keys a memory store keeps before it forgets the idle ones.
MEMORY_KEYS = 10_000
#: The longest pause any store keeps, in seconds, and the longest wait for a permit.
MAX_PAUSE = 24 * 3600.0
#: Seconds between sweeps of what has ended (memory and SQLite).
SWEEP_EVERY = 60.0
#: A wall clock that reads this many seconds less than the latest reading kept
#: in an SQLite store was stepped back.
CLOCK_STEP = 1.0


def margin(period: float) -> float:
    """Seconds added to each period: covers the spread between a permit and the
    request reaching the server (2 % of the period, within 20 ms and 1 s)."""
    return min(max(0.02 * period, 0.02), 1.0)


def learned_ttl(period: float) -> float:
    """How long a rule stated by the server is kept before it must be stated again."""
    return max(3600.0, 10 * period)


def longest_pause(rule: RuleValue | None) -> float:
    """The longest pause a key with the configured ``rule`` may be held for.

    A server that asks a client keeping to N per P to wait longer than P
    contradicts the rule the client was given: once P has passed, its window
    has surely turned over. Without a configured rule, :data:`MAX_PAUSE`.
    """
    return min(rule[1], MAX_PAUSE) if rule is not None else MAX_PAUSE


def ahead_limit(period: float) -> float:
    """How far ahead of now a permit may lie at most; one further is stale.

    A permit is reserved at most ``max_wait`` ahead (never more than
    :data:`MAX_PAUSE`, whatever the process that reserved it was configured
    with), and a period (with its margin) spaces it from the one it waits for.
    """
    return period + margin(period) + MAX_PAUSE


class Windows(Protocol):
    """What the limiter asks of a store. Every method is one atomic step."""

    def acquire(
        self, key: str, rule: RuleValue | None, max_wait: float, timeout: float | None = None
    ) -> tuple[float, Any]:
        """Reserve the next permit for ``key`` if it comes within ``max_wait`` seconds.

        :param rule: the configured rule; a learned one for ``key`` wins. With
            neither, only pauses apply.
        :param timeout: seconds the store may take (None: its default).
        :return: ``(wait, stamp)``: seconds until the permit, and the
            reservation's stamp for :meth:`cancel` (None when nothing was
            reserved: the wait is over ``max_wait``, or there is no rule).
        """

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        """Give back a reservation that will not be used."""

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send nothing for ``key`` for ``seconds`` (an existing longer pause stays);
        at most :func:`longest_pause` of the configured ``rule``."""

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        """Seconds left of ``key``'s pause (0 when none, or stale)."""

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        """Use ``limit`` per ``period`` for ``key`` from now on (the server said so)."""

    def close(self) -> None:
        """Release connections."""


class MemoryWindows:
    """Permit logs of this process, shared by its threads (``memory://``).

    :param clock: where time comes from (its ``monotonic()``).
    """

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self._clock = clock
        self._lock = ProcessLock()
        self._logs: dict[str, deque[float]] = {}
        self._periods: dict[str, float] = {}  # each log's last period, to forget it in time
        self._pauses: dict[str, float] = {}
        self._learned: dict[str, tuple[int, float, float]] = {}
        self._sweep_at = clock.monotonic() + SWEEP_EVERY

    def acquire(
        self, key: str, rule: RuleValue | None, max_wait: float, timeout: float | None = None
    ) -> tuple[float, Any]:
        with self._lock:
            now = self._now()
            configured = rule
            learned = self._learned.get(key)
            if learned is not None:
                if learned[2] > now:
                    rule = learned[:2]
                else:
                    del self._learned[key]
            start = max(now, self._pause_until(key, now, configured))
            if rule is None:
                return start - now, None
            limit, period = rule
            extra = margin(period)
            log = self._logs.get(key)
            if log is None:
                if len(self._logs) >= MEMORY_KEYS:
                    self._forget(now)
                log = self._logs[key] = deque()
            self._periods[key] = period + extra
            horizon = now - period - extra
            while log and log[0] <= horizon:
                log.popleft()
            if log and log[-1] > now + ahead_limit(period):
                log.clear()  # stale: no permit can lie that far ahead
            if len(log) >= limit:
                start = max(start, log[-limit] + period + extra)
            if log:
                start = max(start, log[-1])
            wait = start - now
            if wait > max_wait:
                return wait, None
            log.append(start)
            return wait, start

    def _now(self) -> float:
        """The time, after forgetting what has ended when a sweep is due (under the lock)."""
        now = self._clock.monotonic()
        if now >= self._sweep_at:
            self._forget(now)
        return now

    def _pause_until(self, key: str, now: float, configured: RuleValue | None) -> float:
        until = self._pauses.get(key, 0.0)
        if until > now + longest_pause(configured):
            del self._pauses[key]  # stale
            return 0.0
        return until

    def _forget(self, now: float) -> None:
        """Drop what can no longer matter: logs whose last permit is a period old,
        pauses and learned rules that have ended. The dictionaries are built anew,
        so the memory of what they held is given back too."""
        self._sweep_at = now + SWEEP_EVERY
        self._logs = {
            key: log
            for key, log in self._logs.items()
            if log and log[-1] > now - self._periods.get(key, 0.0)
        }
        self._periods = {key: p for key, p in self._periods.items() if key in self._logs}
        self._pauses = {key: until for key, until in self._pauses.items() if until > now}
        self._learned = {key: rule for key, rule in self._learned.items() if rule[2] > now}

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        with self._lock:
            log = self._logs.get(key)
            if log is not None and stamp in log:
                log.remove(stamp)

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        with self._lock:
            now = self._now()
            until = now + min(seconds, longest_pause(rule))
            if until > self._pause_until(key, now, rule):
                self._pauses[key] = until

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        with self._lock:
            now = self._now()
            return max(0.0, self._pause_until(key, now, rule) - now)

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        with self._lock:
            now = self._now()
            self._learned[key] = (limit, period, now + learned_ttl(period))

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rbe_permit_log (
    key TEXT NOT NULL, at REAL NOT NULL, forget REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rbe_permit_log_key_at ON rbe_permit_log (key, at);
CREATE TABLE IF NOT EXISTS rbe_pauses (key TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rbe_rules (
    key TEXT PRIMARY KEY, max_calls INTEGER NOT NULL, period REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rbe_clock (id INTEGER PRIMARY KEY CHECK (id = 0), seen REAL NOT NULL);
"""


class SQLiteWindows:
    """Permit logs in an SQLite file, shared by the processes of one host (``sqlite:///``).

    Each permit is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock
    makes read-decide-write atomic across processes.

    :param clock: where time comes from (its ``time()``: the host's wall clock,
        which every process on the host shares).
    """

    def __init__(self, storage: StorageURL, clock: Clock = SYSTEM) -> None:
        self._file = SQLiteFile(storage, _SCHEMA)
        self._clock = clock
        self._sweep_at = 0.0  # (this process's monotonic clock)
        self._step_warned = False

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
            db.execute("DELETE FROM rbe_permit_log WHERE forget <= ?", (now,))
            db.execute("DELETE FROM rbe_pauses WHERE until <= ?", (now,))
            db.execute("DELETE FROM rbe_rules WHERE expires <= ?", (now,))
        return now

    def _stepped_back(self, db: sqlite3.Connection, step: float) -> None:
        db.execute("UPDATE rbe_permit_log SET at = at - ?, forget = forget - ?", (step, step))
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
        self, key: str, rule: RuleValue | None, max_wait: float, timeout: float | None = None
    ) -> tuple[float, Any]:
        with self._file.transaction(timeout) as db:
            now = self._now(db)
            configured = rule
            row = db.execute(
                "SELECT max_calls, period FROM rbe_rules WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
            if row is not None:
                rule = (int(row[0]), float(row[1]))
            start = max(now, self._pause_until(db, key, now, configured))
            if rule is None:
                return start - now, None
            limit, period = rule
            extra = margin(period)
            db.execute(
                "DELETE FROM rbe_permit_log WHERE key = ? AND (at <= ? OR at > ?)",
                (key, now - period - extra, now + ahead_limit(period)),
            )
            row = db.execute(
                "SELECT at FROM rbe_permit_log WHERE key = ? ORDER BY at DESC LIMIT 1 OFFSET ?",
                (key, limit - 1),
            ).fetchone()
            if row is not None:
                start = max(start, row[0] + period + extra)
            (last,) = db.execute(
                "SELECT max(at) FROM rbe_permit_log WHERE key = ?", (key,)
            ).fetchone()
            if last is not None:
                start = max(start, last)
            wait = start - now
            if wait > max_wait:
                return wait, None
            cursor = db.execute(
                "INSERT INTO rbe_permit_log (key, at, forget) VALUES (?, ?, ?)",
                (key, start, start + period + extra),
            )
            return wait, cursor.lastrowid

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            db.execute("DELETE FROM rbe_permit_log WHERE rowid = ? AND key = ?", (stamp, key))

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

    def close(self) -> None:
        self._file.close()


# One round trip per permit: the whole decision runs inside Redis, on its clock.
# KEYS: permit log (sorted set), pause, learned rule (hash).
# ARGV: limit (0: none), period, max_wait, a unique suffix for the member, the
# longest pause of the configured rule, MAX_PAUSE (permits further ahead are stale).
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local longest = tonumber(ARGV[5])
local learned = redis.call('HMGET', KEYS[3], 'limit', 'period')
if learned[1] then
  limit = tonumber(learned[1])
  period = tonumber(learned[2])
end
local start = now
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now + longest then
  redis.call('DEL', KEYS[2])  -- stale
elseif paused > start then
  start = paused
end
if limit <= 0 then return {tostring(start - now), ''} end
local extra = math.min(math.max(0.02 * period, 0.02), 1.0)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period - extra)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. (now + period + extra + ARGV[6]), '+inf')
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local kth = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  start = math.max(start, tonumber(kth[2]) + period + extra)
end
if n > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  start = math.max(start, tonumber(last[2]))
end
local wait = start - now
if wait > max_wait then return {tostring(wait), ''} end
local member = string.format('%.6f', start) .. ':' .. ARGV[4]
redis.call('ZADD', KEYS[1], start, member)
redis.call('PEXPIRE', KEYS[1], math.ceil((wait + period + extra) * 1000) + 1000)
return {tostring(wait), member}
"""

# KEYS: pause. ARGV: seconds (already at most the longest pause). The later end wins.
_PAUSE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current > now + tonumber(ARGV[2]) then current = 0 end  -- stale
if untl > current then
  local ttl = math.ceil(tonumber(ARGV[1]) * 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.6f', untl), 'PX', ttl)
end
return 1
"""

# KEYS: pause. ARGV: the longest pause. Returns seconds left, as text.
_PAUSED_FOR = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > now + tonumber(ARGV[1]) then return '0' end  -- stale
return tostring(math.max(0, untl - now))
"""


class RedisWindows:
    """Permit logs in Redis, shared by every host that reaches it (``redis://``).

    A permit is one Lua script (``EVALSHA``): one round trip, atomic on the server.
    Keys share a hash tag per limiter key, so a Redis Cluster keeps them together.
    """

    def __init__(self, storage: StorageURL) -> None:
        self._redis = RedisConnection(
            storage, {"acquire": _ACQUIRE, "pause": _PAUSE, "paused_for": _PAUSED_FOR}
        )

    @staticmethod
    def _keys(key: str) -> list[str]:
        tag = "rbe:{" + key.replace("}", ")") + "}"
        return [f"{tag}:log", f"{tag}:pause", f"{tag}:rule"]

    def acquire(
        self, key: str, rule: RuleValue | None, max_wait: float, timeout: float | None = None
    ) -> tuple[float, Any]:
        limit, period = rule if rule is not None else (0, 0.0)
        bound = min(float(max_wait), MAX_PAUSE)
        suffix = os.urandom(6).hex()
        wait, member = self._redis.run(
            "acquire",
            self._keys(key),
            [
                limit,
                repr(float(period)),
                repr(bound),
                suffix,
                repr(longest_pause(rule)),
                repr(MAX_PAUSE),
            ],
            timeout,
        )
        return float(wait), (member.decode() if member else None)

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        self._redis.client(timeout).zrem(self._keys(key)[0], stamp)

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        longest = longest_pause(rule)
        self._redis.run(
            "pause",
            [self._keys(key)[1]],
            [repr(float(min(seconds, longest))), repr(longest)],
            timeout,
        )

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        return float(
            self._redis.run(
                "paused_for", [self._keys(key)[1]], [repr(longest_pause(rule))], timeout
            )
        )

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        rule_key = self._keys(key)[2]
        pipe = self._redis.client(timeout).pipeline(transaction=True)
        pipe.hset(rule_key, mapping={"limit": limit, "period": repr(float(period))})
        pipe.pexpire(rule_key, int(learned_ttl(period) * 1000))
        pipe.execute()

    def close(self) -> None:
        self._redis.close()


def open_windows(storage: StorageURL, clock: Clock = SYSTEM) -> Windows:
    """The permit store for ``storage`` (nothing connects until first use)."""
    if storage.scheme == "sqlite":
        return SQLiteWindows(storage, clock)
    if storage.scheme in ("redis", "rediss"):
        return RedisWindows(storage)
    return MemoryWindows(clock)
