"""``memory://``: the state of one process, shared by its threads.

Permit logs (the end-stamped sliding window of :mod:`.windows`, on the
process's monotonic clock) and token entries. What a feature keeps here is
gone with the process; it is also where a shared store's feature keeps its
state while that store fails (:mod:`.fallback`).

What has ended is forgotten by a sweep of everything the store holds, due
every :data:`~.windows.SWEEP_EVERY` seconds or once it paces
:data:`~.windows.MEMORY_KEYS` keys, and run only once the store has done as
many operations since the last sweep as that sweep kept entries: a sweep
costs amortized O(1) per operation, however many endpoints are paced, and
the store never holds more than twice what was live at its last sweep (or
those limits).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from itertools import count
from typing import Any

from ..clock import SYSTEM, Clock
from .base import (
    DEFAULT_HOLD,
    WAIT_LEASE,
    CircuitRecord,
    Grant,
    PermitHolder,
    PermitState,
    ProcessLock,
    RuleValue,
    StorageURL,
    TokenEntry,
    holder,
)
from .windows import MEMORY_KEYS, SWEEP_EVERY, earliest, learned_ttl, longest_pause

__all__ = ["MemoryBackend"]


class _Flight:
    """One permit not over: reserved and waiting for its time, or sent and not ended."""

    __slots__ = ("at", "expires", "hold", "host", "pid", "sent", "since")

    def __init__(
        self, at: float, hold: float, now: float, holder: tuple[str, int], *, sent: bool
    ) -> None:
        self.at = at  # its time
        self.hold = hold
        self.host, self.pid = holder
        self.sent = False
        self.since = now
        self.expires = now + WAIT_LEASE
        if sent:
            self.send(now)

    def send(self, now: float) -> None:
        """Its request goes now: it counts until it ends, or ``hold`` after now."""
        self.sent = True
        self.at = max(self.at, now)
        self.since = now
        self.expires = now + self.hold

    def wait(self, at: float, now: float) -> None:
        """Still waiting, for ``at``: its lease is renewed."""
        self.at = at
        self.expires = now + WAIT_LEASE


class _Permits:
    """One key's permits: those not over by stamp, and the ends of those that ended."""

    __slots__ = ("ends", "flight", "period", "soonest")

    def __init__(self) -> None:
        self.flight: dict[int, _Flight] = {}  # stamp: permit, oldest first
        self.ends: list[tuple[float, int]] = []  # (end, stamp), ascending
        self.period = 0.0  # the last period used, to forget the key in time
        self.soonest = _NEVER  # no permit in flight expires before this

    def expire(self, now: float) -> None:
        """Permits whose holder never said count as ended at their expiry; waiting
        ones whose lease was not renewed are given back (nothing was sent)."""
        if now < self.soonest:
            return
        soonest = _NEVER
        for stamp, permit in list(self.flight.items()):
            if permit.expires <= now:
                del self.flight[stamp]
                if permit.sent:
                    insort(self.ends, (permit.expires, stamp))
            else:
                soonest = min(soonest, permit.expires)
        self.soonest = soonest

    def prune(self, now: float, period: float) -> None:
        """Forget the ends a period old: no permit from now on can wait for them."""
        self.period = period
        cut = bisect_right(self.ends, (now - period, _NEVER))
        if cut:
            del self.ends[:cut]

    def idle(self, now: float) -> bool:
        """Nothing in flight, and every end a period old."""
        return not self.flight and (not self.ends or self.ends[-1][0] <= now - self.period)


_NEVER = float("inf")


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
        self._logs: dict[str, _Permits] = {}
        self._pauses: dict[str, float] = {}
        self._learned: dict[str, tuple[int, float, float]] = {}
        self._stamps = count(1)
        #: (host, holder host, pid): (record, expires)
        self._circuit_board: dict[tuple[str, str, int], tuple[CircuitRecord, float]] = {}
        self._sweep_at = clock.monotonic() + SWEEP_EVERY
        self._work = 0  # operations since the last sweep
        self._kept = 0  # entries the last sweep kept: the work that pays for the next

    def _rule(self, key: str, now: float, rule: RuleValue | None) -> RuleValue | None:
        """The learned rule of ``key`` while it lasts, else ``rule``."""
        learned = self._learned.get(key)
        if learned is None:
            return rule
        if learned[2] > now:
            return learned[:2]
        del self._learned[key]
        return rule

    def acquire(
        self,
        key: str,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        with self._lock:
            return self._acquire(key, rule, max_wait, hold)

    def _acquire(
        self, key: str, configured: RuleValue | None, max_wait: float, hold: float
    ) -> Grant:
        now = self._now()
        rule = self._rule(key, now, configured)
        start = max(now, self._pause_until(key, now, configured))
        if rule is None:
            return Grant(start - now)
        limit, period = rule
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = _Permits()
        log.expire(now)
        log.prune(now, period)
        ends, flying = log.ends, len(log.flight)
        firm = True
        if flying >= limit:  # its time is a guess until one of them ends
            starts = [permit.at for permit in log.flight.values()]
            guess, firm = earliest((), starts, now, limit, period)
            start = max(start, guess)
        elif len(ends) >= limit - flying:  # (the usual case, without sorting)
            start = max(start, ends[flying - limit][0] + period)
        wait = start - now
        if wait > max_wait:
            return Grant(wait)
        stamp = next(self._stamps)
        permit = _Flight(start, hold, now, holder(), sent=firm and wait <= 0)
        log.flight[stamp] = permit
        log.soonest = min(log.soonest, permit.expires)
        return Grant(wait, stamp, firm)

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
        with self._lock:
            now = self._now()
            log = self._logs.get(key)
            if log is not None:
                log.expire(now)
            entry = log.flight.get(stamp) if log is not None else None
            if log is None or entry is None:  # forgotten, or lapsed: reserve anew
                return self._acquire(key, rule, max_wait, hold)
            if entry.sent:
                return Grant(0.0, stamp)
            configured = rule
            rule = self._rule(key, now, configured)
            start = max(now, self._pause_until(key, now, configured))
            if rule is not None:
                limit, period = rule
                log.prune(now, period)
                ends = [end for end, other in log.ends if other < stamp]
                starts = [p.at for other, p in log.flight.items() if other < stamp]
                guess, firm = earliest(ends, starts, now, limit, period)
                start = max(start, guess)
            else:
                firm = True
            wait = start - now
            if wait > max_wait:
                del log.flight[stamp]
                return Grant(wait)
            entry.hold = hold
            if firm and wait <= 0:
                entry.send(now)
            else:
                entry.wait(start, now)
            log.soonest = min(log.soonest, entry.expires)
            return Grant(wait, stamp, firm)

    def finish(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        with self._lock:
            log = self._logs.get(key)
            if log is None or log.flight.pop(stamp, None) is None:
                return
            ended = (self._clock.monotonic(), stamp)
            ends = log.ends
            if not ends or ended >= ends[-1]:
                ends.append(ended)
            else:
                insort(ends, ended)

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        with self._lock:
            log = self._logs.get(key)
            if log is not None:
                log.flight.pop(stamp, None)

    def _now(self) -> float:
        """The time, after forgetting what has ended when a sweep is due and paid for
        (under the lock): one operation's share of the next sweep's cost."""
        now = self._clock.monotonic()
        self._work += 1
        if self._work >= self._kept and (now >= self._sweep_at or len(self._logs) >= MEMORY_KEYS):
            self._forget(now)
        return now

    def _pause_until(self, key: str, now: float, configured: RuleValue | None) -> float:
        until = self._pauses.get(key, 0.0)
        if until > now + longest_pause(configured):
            del self._pauses[key]  # stale
            return 0.0
        return until

    def _forget(self, now: float) -> None:
        """Drop what can no longer matter: idle permit logs, pauses and learned rules
        that have ended. The dictionaries are built anew, so the memory of what they
        held is given back too."""
        self._sweep_at = now + SWEEP_EVERY
        for log in self._logs.values():
            log.expire(now)
        self._logs = {key: log for key, log in self._logs.items() if not log.idle(now)}
        self._pauses = {key: until for key, until in self._pauses.items() if until > now}
        self._learned = {key: rule for key, rule in self._learned.items() if rule[2] > now}
        self._tokens = {name: entry for name, entry in self._tokens.items() if entry[1] > now}
        self._token_locks = {name: h for name, h in self._token_locks.items() if h[1] > now}
        self._work = 0
        self._kept = (
            len(self._logs)
            + len(self._pauses)
            + len(self._learned)
            + len(self._tokens)
            + len(self._token_locks)
        )

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

    def survey(
        self, timeout: float | None = None
    ) -> tuple[list[PermitState], list[tuple[str, str]]]:
        """:meth:`snapshot`; nothing is skipped (every row is this package's)."""
        return self.snapshot(timeout), []

    def snapshot(self, timeout: float | None = None) -> list[PermitState]:
        with self._lock:
            now = self._now()
            epoch = self._clock.time() - now  # (what the monotonic readings are in epoch)
            keys = set(self._logs) | set(self._pauses) | set(self._learned)
            found = []
            for key in sorted(keys):
                log = self._logs.get(key)
                if log is not None:
                    log.expire(now)
                learned = self._learned.get(key)
                if learned is not None and learned[2] <= now:
                    learned = None
                until = self._pauses.get(key, 0.0)
                permits = list(log.flight.values()) if log is not None else []
                holders = tuple(
                    PermitHolder(
                        "sending" if p.sent else "waiting",
                        p.host,
                        p.pid,
                        since=p.since + epoch,
                        at=p.at + epoch,
                    )
                    for p in sorted(permits, key=lambda p: p.since)
                )
                waiting = sum(not p.sent for p in permits)
                found.append(
                    PermitState(
                        key,
                        learned=learned[:2] if learned is not None else None,
                        learned_for=learned[2] - now if learned is not None else 0.0,
                        paused_for=max(0.0, until - now),
                        in_flight=len(permits) - waiting,
                        ended=sum(end > now - log.period for end, _ in log.ends) if log else 0,
                        waiting=waiting,
                        holders=holders,
                        now=now + epoch,
                    )
                )
            return found

    def held(self) -> dict[str, frozenset[str]]:
        """What this store keeps now, ended or not: the keys of its permit logs
        (``"permits"``), pauses (``"pauses"``) and learned rules (``"rules"``), and
        the names of its token entries (``"tokens"``) and their locks
        (``"token_locks"``).

        What has ended stays until a sweep forgets it (see the module docstring):
        this is the store's footprint, where :meth:`snapshot` shows what is in
        force. Reading it sweeps nothing.
        """
        with self._lock:
            return {
                "permits": frozenset(self._logs),
                "pauses": frozenset(self._pauses),
                "rules": frozenset(self._learned),
                "tokens": frozenset(self._tokens),
                "token_locks": frozenset(self._token_locks),
            }

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

    def token_entries(self, timeout: float | None = None) -> list[TokenEntry]:
        """Every entry not expired, by name, sealed contents unread."""
        with self._lock:
            now = self._now()
            return sorted(
                TokenEntry(name, e[1] - now) for name, e in self._tokens.items() if e[1] > now
            )

    # -- the store ----------------------------------------------------------------

    @classmethod
    def check_url(cls, storage: StorageURL, what: str) -> StorageURL:
        """``memory://`` takes nothing after its ``//``."""
        if storage.url.partition("://")[2]:
            raise ValueError(f"{what} 'memory://' takes nothing after '//'")
        return storage

    def exists(self, timeout: float | None = None) -> bool:
        """Always: the store is this object."""
        return True

    def check(self, timeout: float | None = None) -> None:
        """Nothing to reach: it always answers."""

    def unreachable(self, exc: BaseException) -> bool:
        """Never: nothing here is out of reach, so whatever it raises is a bug."""
        return False

    def close(self) -> None:
        """Nothing to release."""

    # -- circuits -----------------------------------------------------------------

    def publish_circuit(
        self, record: CircuitRecord, ttl: float, timeout: float | None = None
    ) -> None:
        """Keep ``record`` for ``ttl`` seconds (on the clock's ``monotonic()``)."""
        with self._lock:
            now = self._clock.monotonic()
            board = {key: kept for key, kept in self._circuit_board.items() if kept[1] > now}
            board[(record.host, record.holder_host, record.pid)] = (record, now + ttl)
            self._circuit_board = board

    def circuit_records(self, timeout: float | None = None) -> list[CircuitRecord]:
        """Every record not yet expired, sorted by host, then holder."""
        with self._lock:
            now = self._clock.monotonic()
            board = self._circuit_board
            return [board[key][0] for key in sorted(board) if board[key][1] > now]
