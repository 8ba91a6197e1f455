"""``memory://``: the state of one process, shared by its threads.

Permit logs (the sliding window of :mod:`.windows`, on the process's
monotonic clock) and token entries. What a feature keeps here is gone with
the process; it is also where a shared store's feature keeps its state
while that store fails (:mod:`.fallback`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..clock import SYSTEM, Clock
from .base import ProcessLock, RuleValue, StorageURL
from .windows import MEMORY_KEYS, SWEEP_EVERY, ahead_limit, learned_ttl, longest_pause, margin

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """State of this process, shared by its threads (``memory://``): permit logs, and
    token entries with their locks. It is also what a shared store falls back to.

    :param storage: its URL (``memory://``).
    :param clock: where time comes from (its ``monotonic()``).
    """

    def __init__(self, storage: StorageURL | None = None, clock: Clock = SYSTEM) -> None:
        self.storage = storage or StorageURL("memory", "memory://")
        self._clock = clock
        self._lock = ProcessLock()
        self._tokens: dict[str, tuple[bytes, float]] = {}  # name: (blob, expires)
        self._token_locks: dict[str, tuple[str, float]] = {}  # name: (owner, until)
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
        self._tokens = {name: entry for name, entry in self._tokens.items() if entry[1] > now}
        self._token_locks = {name: h for name, h in self._token_locks.items() if h[1] > now}

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

    # -- tokens -------------------------------------------------------------------

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        with self._lock:
            now = self._now()
            entry = self._tokens.get(name)
            return entry[0] if entry is not None and entry[1] > now else None

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        with self._lock:
            self._tokens[name] = (blob, self._now() + ttl)

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        with self._lock:
            now = self._now()
            held = self._token_locks.get(name)
            if held is not None and held[1] > now:
                return False
            self._token_locks[name] = (owner, now + ttl)
            return True

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        with self._lock:
            held = self._token_locks.get(name)
            if held is not None and held[0] == owner:
                del self._token_locks[name]

    @classmethod
    def check(cls, storage: StorageURL, what: str) -> StorageURL:
        """``memory://`` takes nothing after its ``//``."""
        if storage.url.partition("://")[2]:
            raise ValueError(f"{what} 'memory://' takes nothing after '//'")
        return storage

    def close(self) -> None:
        """Nothing to release."""
