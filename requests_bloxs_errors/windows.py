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

SQLite and Redis measure time by their own clocks (the host's wall clock;
the Redis server's ``TIME``), so processes and hosts share one timeline;
the caller only ever sees seconds to wait.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Protocol

from .storage import ProcessLock, RedisConnection, SQLiteFile, StorageURL

__all__ = ["MemoryWindows", "RedisWindows", "SQLiteWindows", "Windows", "margin", "open_windows"]

#: ``(limit, period_seconds)``
RuleValue = tuple[int, float]
#: Keys a memory store keeps before it forgets the idle ones.
MEMORY_KEYS = 10_000


def margin(period: float) -> float:
    """Seconds added to each period: covers the spread between a permit and the
    request reaching the server (2 % of the period, within 20 ms and 1 s)."""
    return min(max(0.02 * period, 0.02), 1.0)


def learned_ttl(period: float) -> float:
    """How long a rule stated by the server is kept before it must be stated again."""
    return max(3600.0, 10 * period)


class Windows(Protocol):
    """What the limiter asks of a store. Every method is one atomic step."""

    def acquire(self, key: str, rule: RuleValue | None, max_wait: float) -> tuple[float, Any]:
        """Reserve the next permit for ``key`` if it comes within ``max_wait`` seconds.

        :param rule: the configured rule; a learned one for ``key`` wins. With
            neither, only pauses apply.
        :return: ``(wait, stamp)``: seconds until the permit, and the
            reservation's stamp for :meth:`cancel` (None when nothing was
            reserved: the wait is over ``max_wait``, or there is no rule).
        """

    def cancel(self, key: str, stamp: Any) -> None:
        """Give back a reservation that will not be used."""

    def pause(self, key: str, seconds: float) -> None:
        """Send nothing for ``key`` for ``seconds`` (an existing longer pause stays)."""

    def paused_for(self, key: str) -> float:
        """Seconds left of ``key``'s pause (0 when none)."""

    def learn(self, key: str, limit: int, period: float) -> None:
        """Use ``limit`` per ``period`` for ``key`` from now on (the server said so)."""

    def close(self) -> None:
        """Release connections."""


class MemoryWindows:
    """Permit logs of this process, shared by its threads (``memory://``)."""

    def __init__(self) -> None:
        self._lock = ProcessLock()
        self._logs: dict[str, deque[float]] = {}
        self._periods: dict[str, float] = {}  # each log's last period, to forget it in time
        self._pauses: dict[str, float] = {}
        self._learned: dict[str, tuple[int, float, float]] = {}

    def acquire(self, key: str, rule: RuleValue | None, max_wait: float) -> tuple[float, Any]:
        with self._lock:
            now = time.monotonic()
            learned = self._learned.get(key)
            if learned is not None:
                if learned[2] > now:
                    rule = learned[:2]
                else:
                    del self._learned[key]
            start = max(now, self._pauses.get(key, 0.0))
            if rule is None:
                return start - now, None
            limit, period = rule
            extra = margin(period)
            log = self._logs.get(key)
            if log is None:
                if len(self._logs) >= MEMORY_KEYS:
                    self._forget_idle(now)
                log = self._logs[key] = deque()
            self._periods[key] = period + extra
            horizon = now - period - extra
            while log and log[0] <= horizon:
                log.popleft()
            if len(log) >= limit:
                start = max(start, log[-limit] + period + extra)
            if log:
                start = max(start, log[-1])
            wait = start - now
            if wait > max_wait:
                return wait, None
            log.append(start)
            return wait, start

    def _forget_idle(self, now: float) -> None:
        """Drop what can no longer matter: logs whose last permit is a period old,
        pauses and learned rules that have ended."""
        for key, log in list(self._logs.items()):
            if not log or log[-1] <= now - self._periods.get(key, 0.0):
                del self._logs[key]
                self._periods.pop(key, None)
        for key, until in list(self._pauses.items()):
            if until < now:
                del self._pauses[key]
        for key, (_, _, expires) in list(self._learned.items()):
            if expires <= now:
                del self._learned[key]

    def cancel(self, key: str, stamp: Any) -> None:
        with self._lock:
            log = self._logs.get(key)
            if log is not None and stamp in log:
                log.remove(stamp)

    def pause(self, key: str, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + seconds
            if until > self._pauses.get(key, 0.0):
                self._pauses[key] = until

    def paused_for(self, key: str) -> float:
        with self._lock:
            return max(0.0, self._pauses.get(key, 0.0) - time.monotonic())

    def learn(self, key: str, limit: int, period: float) -> None:
        with self._lock:
            self._learned[key] = (limit, period, time.monotonic() + learned_ttl(period))

    def close(self) -> None:
        """Nothing to release."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rbe_permits (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rbe_permits_key_at ON rbe_permits (key, at);
CREATE TABLE IF NOT EXISTS rbe_pauses (key TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rbe_rules (
    key TEXT PRIMARY KEY, max_calls INTEGER NOT NULL, period REAL NOT NULL,
    expires REAL NOT NULL
);
"""


class SQLiteWindows:
    """Permit logs in an SQLite file, shared by the processes of one host (``sqlite:///``).

    Each permit is one ``BEGIN IMMEDIATE`` transaction: SQLite's write lock
    makes read-decide-write atomic across processes.
    """

    def __init__(self, storage: StorageURL) -> None:
        self._file = SQLiteFile(storage, _SCHEMA)

    def acquire(self, key: str, rule: RuleValue | None, max_wait: float) -> tuple[float, Any]:
        with self._file.transaction() as db:
            now = time.time()
            row = db.execute(
                "SELECT max_calls, period FROM rbe_rules WHERE key = ? AND expires > ?", (key, now)
            ).fetchone()
            if row is not None:
                rule = (int(row[0]), float(row[1]))
            row = db.execute("SELECT until FROM rbe_pauses WHERE key = ?", (key,)).fetchone()
            start = max(now, row[0] if row else 0.0)
            if rule is None:
                return start - now, None
            limit, period = rule
            extra = margin(period)
            db.execute(
                "DELETE FROM rbe_permits WHERE key = ? AND at <= ?", (key, now - period - extra)
            )
            row = db.execute(
                "SELECT at FROM rbe_permits WHERE key = ? ORDER BY at DESC LIMIT 1 OFFSET ?",
                (key, limit - 1),
            ).fetchone()
            if row is not None:
                start = max(start, row[0] + period + extra)
            (last,) = db.execute("SELECT max(at) FROM rbe_permits WHERE key = ?", (key,)).fetchone()
            if last is not None:
                start = max(start, last)
            wait = start - now
            if wait > max_wait:
                return wait, None
            cursor = db.execute("INSERT INTO rbe_permits (key, at) VALUES (?, ?)", (key, start))
            return wait, cursor.lastrowid

    def cancel(self, key: str, stamp: Any) -> None:
        with self._file.transaction() as db:
            db.execute("DELETE FROM rbe_permits WHERE rowid = ? AND key = ?", (stamp, key))

    def pause(self, key: str, seconds: float) -> None:
        with self._file.transaction() as db:
            db.execute(
                "INSERT INTO rbe_pauses (key, until) VALUES (?, ?) ON CONFLICT (key) "
                "DO UPDATE SET until = max(until, excluded.until)",
                (key, time.time() + seconds),
            )

    def paused_for(self, key: str) -> float:
        row = self._file.read("SELECT until FROM rbe_pauses WHERE key = ?", (key,))
        return max(0.0, row[0] - time.time()) if row else 0.0

    def learn(self, key: str, limit: int, period: float) -> None:
        with self._file.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO rbe_rules (key, max_calls, period, expires) "
                "VALUES (?, ?, ?, ?)",
                (key, limit, period, time.time() + learned_ttl(period)),
            )

    def close(self) -> None:
        self._file.close()


# One round trip per permit: the whole decision runs inside Redis, on its clock.
# KEYS: permit log (sorted set), pause, learned rule (hash).
# ARGV: limit (0: none), period, max_wait, a unique suffix for the member.
_ACQUIRE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local learned = redis.call('HMGET', KEYS[3], 'limit', 'period')
if learned[1] then
  limit = tonumber(learned[1])
  period = tonumber(learned[2])
end
local start = now
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > start then start = paused end
if limit <= 0 then return {tostring(start - now), ''} end
local extra = math.min(math.max(0.02 * period, 0.02), 1.0)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period - extra)
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
if wait > tonumber(ARGV[3]) then return {tostring(wait), ''} end
local member = string.format('%.6f', start) .. ':' .. ARGV[4]
redis.call('ZADD', KEYS[1], start, member)
redis.call('PEXPIRE', KEYS[1], math.ceil((wait + period + extra) * 1000) + 1000)
return {tostring(wait), member}
"""

# KEYS: pause. ARGV: seconds. The later end wins.
_PAUSE = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > current then
  local ttl = math.ceil(tonumber(ARGV[1]) * 1000) + 1
  redis.call('SET', KEYS[1], string.format('%.6f', untl), 'PX', ttl)
end
return 1
"""

# KEYS: pause. Returns seconds left, as text.
_PAUSED_FOR = """
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = tonumber(redis.call('GET', KEYS[1]) or '0')
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

    def acquire(self, key: str, rule: RuleValue | None, max_wait: float) -> tuple[float, Any]:
        limit, period = rule if rule is not None else (0, 0.0)
        bound = min(float(max_wait), 1e12)
        suffix = os.urandom(6).hex()
        wait, member = self._redis.run(
            "acquire", self._keys(key), [limit, repr(float(period)), repr(bound), suffix]
        )
        return float(wait), (member.decode() if member else None)

    def cancel(self, key: str, stamp: Any) -> None:
        self._redis.client().zrem(self._keys(key)[0], stamp)

    def pause(self, key: str, seconds: float) -> None:
        self._redis.run("pause", [self._keys(key)[1]], [repr(float(seconds))])

    def paused_for(self, key: str) -> float:
        return float(self._redis.run("paused_for", [self._keys(key)[1]], []))

    def learn(self, key: str, limit: int, period: float) -> None:
        rule_key = self._keys(key)[2]
        pipe = self._redis.client().pipeline(transaction=True)
        pipe.hset(rule_key, mapping={"limit": limit, "period": repr(float(period))})
        pipe.pexpire(rule_key, int(learned_ttl(period) * 1000))
        pipe.execute()

    def close(self) -> None:
        self._redis.close()


def open_windows(storage: StorageURL) -> Windows:
    """The permit store for ``storage`` (nothing connects until first use)."""
    if storage.scheme == "sqlite":
        return SQLiteWindows(storage)
    if storage.scheme in ("redis", "rediss"):
        return RedisWindows(storage)
    return MemoryWindows()
