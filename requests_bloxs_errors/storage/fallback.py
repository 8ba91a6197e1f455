"""One fallback for every feature that shares state: a store that fails never fails a call.

:class:`Fallback` stands in front of a shared backend. While the backend
answers, every operation goes to it; when one fails, the feature keeps
working within the process, on a
:class:`~requests_bloxs_errors.storage.memory.MemoryBackend` of its own, and
:class:`Outage` keeps the bookkeeping: a new try every
:data:`~requests_bloxs_errors.storage.base.RETRY_STORE_AFTER` seconds by one
caller, one INFO when the store answers again.

What failed says how it is told. An outage, as the backend's
:meth:`~.base.Backend.unreachable` calls it (unreachable, locked, full,
corrupt, slower than the call can wait), is one WARNING naming the
exception's type (never its text, which may quote a URL with its password).
Anything else is a bug (a ``TypeError`` in a backend, a script the Redis
server refused, a table this package did not make): it is logged at ERROR
with its traceback *once*, the first time that operation raises that type of
exception in this process (per feature's store), and then handled as an
outage, so the call still goes on; later ones of the same kind are not logged
again, beyond the WARNING that starts each outage.

The rate limit falls back to pacing within the process; the token cache to
each process fetching its own token.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..clock import SYSTEM, Clock
from ..events import logger
from .base import (
    DEFAULT_HOLD,
    RETRY_STORE_AFTER,
    Backend,
    Grant,
    NoTimeLeft,
    PermitState,
    ProcessLock,
    RuleValue,
    StorageURL,
)
from .memory import MemoryBackend

__all__ = ["Fallback", "Outage"]


class Outage:
    """The health of one shared store, as a feature that falls back sees it.

    A store that fails (unreachable, locked, corrupt) never fails a call: the
    feature works within the process instead. This keeps the bookkeeping:
    one WARNING when the store fails, none while it stays down, a new try
    every :data:`RETRY_STORE_AFTER` seconds, and one INFO when it answers.

    :param feature: what uses the store, for the log lines ("Rate limit storage").
    :param fallback: what happens meanwhile, for the WARNING.
    :param clock: where time comes from.
    """

    def __init__(
        self, feature: str, storage: StorageURL, fallback: str, clock: Clock = SYSTEM
    ) -> None:
        self.feature = feature
        self.storage = storage
        self.fallback = fallback
        self._clock = clock
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
            if self._clock.monotonic() < self._retry_at:
                return False
            self._retry_at = self._clock.monotonic() + RETRY_STORE_AFTER  # this caller tries it
            return True

    def failed(self, exc: BaseException, *, told: bool = False) -> None:
        """Record a failure (logs the first of an outage; never the exception's text,
        which may quote a URL with its password).

        :param told: the failure was logged already (a bug, with its traceback):
            no WARNING for it."""
        with self._lock:
            first = not self._failing
            self._failing = True
            self._retry_at = self._clock.monotonic() + RETRY_STORE_AFTER
        if first and not told:
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


class Fallback:
    """A shared backend, or this process's memory while it fails; see the module docstring.

    It offers what the rate limit (:class:`~requests_bloxs_errors.storage.base.PermitLog`)
    and the token cache (:class:`~requests_bloxs_errors.storage.base.TokenStore`)
    ask of a store, whichever of them the backend has.

    :param primary: the configured backend (``memory://`` is used as it is).
    :param feature: what uses it, for the log lines ("Rate limit storage").
    :param meanwhile: what happens while it fails, for the WARNING.
    :param clock: where time comes from.
    """

    def __init__(self, primary: Backend, *, feature: str, meanwhile: str, clock: Clock) -> None:
        storage: StorageURL = getattr(primary, "storage", StorageURL("memory", "memory://"))
        self.storage = storage
        self._primary: Any = primary
        self._memory: Any = MemoryBackend(clock=clock) if storage.shared else primary
        self._outage = Outage(feature, storage, meanwhile, clock)
        #: ``(operation, exception type)`` of the bugs logged with their traceback.
        self._told: set[tuple[str, str]] = set()
        self._told_lock = ProcessLock()

    @property
    def failing(self) -> bool:
        """Whether the shared backend failed and has not answered since."""
        return self._outage.failing

    def _use(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        if self._primary is not self._memory and self._outage.usable():
            try:
                result = getattr(self._primary, method)(*args, timeout=timeout)
            except Exception as exc:
                self._failed(method, exc)
            else:
                self._outage.answered()
                return result
        return getattr(self._memory, method)(*args)

    # -- permits ------------------------------------------------------------------

    def acquire(
        self,
        key: str,
        rule: RuleValue | None,
        max_wait: float,
        timeout: float | None = None,
        *,
        hold: float = DEFAULT_HOLD,
    ) -> Grant:
        """As :meth:`PermitLog.acquire <.base.PermitLog.acquire>`; the stamp says which
        store gave it, so that what follows goes to the same one."""
        memory = self._memory
        if self._primary is memory:
            grant: Grant = memory.acquire(key, rule, max_wait, hold=hold)
            return grant
        if self._outage.usable():
            try:
                grant = self._primary.acquire(key, rule, max_wait, timeout=timeout, hold=hold)
            except Exception as exc:
                self._failed("acquire", exc)
            else:
                self._outage.answered()
                return _tagged(grant, self._primary)
        return _tagged(memory.acquire(key, rule, max_wait, hold=hold), memory)

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
        """As :meth:`PermitLog.confirm <.base.PermitLog.confirm>`, in the store that gave
        the stamp; a shared store that fails meanwhile: a new permit in memory."""
        memory = self._memory
        if self._primary is memory:
            grant: Grant = memory.confirm(key, stamp, rule, max_wait, hold=hold)
            return grant
        store, inner = stamp
        if store is memory:
            return _tagged(memory.confirm(key, inner, rule, max_wait, hold=hold), memory)
        if self._outage.usable():
            try:
                grant = store.confirm(key, inner, rule, max_wait, timeout=timeout, hold=hold)
            except Exception as exc:
                self._failed("confirm", exc)
            else:
                self._outage.answered()
                return _tagged(grant, store)
        return _tagged(memory.acquire(key, rule, max_wait, hold=hold), memory)

    def finish(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        """Stamp the permit's end in the store that gave it (a shared store that fails
        meanwhile lets it end at its hold)."""
        self._settle("finish", key, stamp, timeout)

    def cancel(self, key: str, stamp: Any, timeout: float | None = None) -> None:
        """Give the permit back to the store that gave it."""
        self._settle("cancel", key, stamp, timeout)

    def _settle(self, method: str, key: str, stamp: Any, timeout: float | None) -> None:
        if self._primary is self._memory:
            getattr(self._memory, method)(key, stamp)
            return
        store, inner = stamp
        if store is self._memory:
            getattr(store, method)(key, inner)
        elif self._outage.usable():
            try:
                getattr(store, method)(key, inner, timeout=timeout)
            except Exception as exc:
                self._failed(method, exc)
            else:
                self._outage.answered()

    def _failed(self, method: str, exc: Exception) -> None:
        """Record what ``method`` of the shared backend raised: an outage, or a bug
        logged with its traceback the first time (see the module docstring)."""
        if isinstance(exc, NoTimeLeft):  # not asked at all: no word on its health
            return
        told = False
        if not self._outage_error(exc):
            kind = (method, f"{type(exc).__module__}.{type(exc).__qualname__}")
            with self._told_lock:
                told = kind not in self._told
                self._told.add(kind)
            if told:
                logger.error(
                    "%s %s: %s raised %s, which is not an outage (a bug in its backend, or "
                    "a store this package did not write); %s meanwhile, trying it again "
                    "every %gs",
                    self._outage.feature,
                    self.storage.shown,
                    method,
                    type(exc).__name__,
                    self._outage.fallback,
                    RETRY_STORE_AFTER,
                    exc_info=exc,
                )
        self._outage.failed(exc, told=told)
        with contextlib.suppress(Exception):
            self._primary.close()

    def _outage_error(self, exc: Exception) -> bool:
        """Whether the backend calls ``exc`` an outage (when asking it fails, an
        :class:`OSError` is one, and nothing else)."""
        try:
            return bool(self._primary.unreachable(exc))
        except Exception:  # (a verdict that fails must not fail the call)
            return isinstance(exc, OSError)

    def snapshot(self, timeout: float | None = None) -> list[PermitState]:
        """What the store holds (this process's memory while the shared store fails)."""
        found: list[PermitState] = self._use("snapshot", timeout=timeout)
        return found

    def pause(
        self,
        key: str,
        seconds: float,
        rule: RuleValue | None = None,
        timeout: float | None = None,
    ) -> None:
        self._use("pause", key, seconds, rule, timeout=timeout)

    def paused_for(
        self, key: str, rule: RuleValue | None = None, timeout: float | None = None
    ) -> float:
        seconds: float = self._use("paused_for", key, rule, timeout=timeout)
        return seconds

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        self._use("learn", key, limit, period, timeout=timeout)

    # -- tokens -------------------------------------------------------------------

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        blob: bytes | None = self._use("read", name, timeout=timeout)
        return blob

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        self._use("write", name, blob, ttl, timeout=timeout)

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        return bool(self._use("lock", name, owner, ttl, timeout=timeout))

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        self._use("unlock", name, owner, timeout=timeout)

    def close(self) -> None:
        """Close the shared backend's connections (reopened on the next use)."""
        with contextlib.suppress(Exception):
            self._primary.close()


def _tagged(grant: Grant, store: Any) -> Grant:
    """``grant`` with its stamp naming the store that gave it."""
    if grant.stamp is None:
        return grant
    return grant._replace(stamp=(store, grant.stamp))
