"""The sliding window's arithmetic, which every backend applies inside one atomic step.

A store keeps, per key, the permits it gave out, and answers one question
atomically: *when may the next request go?* It records the answer at once
(a reservation), so concurrent callers line up one behind the other instead
of waking together and racing for one slot.

**Permits are stamped with the moment their attempt ended**, not with the
moment they were reserved. A server counts a request when it arrives, which
is after its permit's time and no later than its answer; a process
descheduled between the two, or a slow connect, moves the arrival but not
the reservation. So for ``limit`` requests per ``period`` seconds a new
permit is no earlier than

* now, and the end of any pause a server asked for;
* the ``limit``-th latest *end* among the key's permits, plus the period.

Then no interval of the period, as the server's clock draws it, holds more
than ``limit`` arrivals, whatever the delays. Of ``limit + 1`` arrivals in
one interval, take the one whose permit was reserved last: each of the
others ended no earlier than it arrived, so later than a period before that
permit's time, and was in the store, in flight or ended, when that permit
was made firm; the store would have put it later. No margin is added.

A permit still in flight has no end yet: it counts as ending in the future.
While ``limit`` permits reserved before a new one are in flight, the new
one's time can only be guessed (no earlier than a period after the
``limit``-th latest of their times): it is reserved there, not *firm*, and
its holder confirms it when that time comes (:meth:`~.base.PermitLog.confirm`),
against the permits reserved before it alone. So permits are served in the
order they were asked for: a thread that finishes and asks again at once
queues behind one that waited.

**Waiting is not sending.** A permit is *waiting* from its reservation until
its holder's time has come and the store, asked once more, finds it firm: it
is *sending* from then on (a permit due at once is sending from its
reservation). A holder that dies must not block the fleet:

* a waiting permit sent nothing, so it holds its place only while its holder
  renews it (every :data:`~.base.WAIT_RENEW` seconds, by asking again): one
  not renewed for :data:`~.base.WAIT_LEASE` seconds lapses, on any host;
* a sent permit may have reached the server: it counts as ended at the moment
  it was sent plus its *hold* (:func:`permit_hold`), the longest its attempt
  may take to reach the server.

Every permit not over names its holder (host and pid) and since when, for
``status``. A permit a store kept before it knew of waiting (an earlier
version's) counts as sent.

A server-stated rule learned for a key takes precedence over the configured
one until it expires (:func:`learned_ttl`).

Nothing a store keeps can hold a key for long:

* a pause lasts at most :func:`longest_pause` of the key's configured rule
  (its period; :data:`MAX_PAUSE` without one), whatever it was asked for;
* a permit lying further ahead than any could (a value from a clock that
  was wrong) is stale: dropped, not waited for (:func:`ahead_limit`);
* ended pauses, expired rules and idle permits are forgotten (SQLite every
  :data:`SWEEP_EVERY` seconds; memory by sweeps whose cost is amortized over
  its operations, see :mod:`.memory`; Redis keys expire).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .base import DEFAULT_HOLD, RuleValue

__all__ = [
    "CLOCK_STEP",
    "DEFAULT_HOLD",
    "MAX_HOLD",
    "MAX_PAUSE",
    "MEMORY_KEYS",
    "MIN_HOLD",
    "SWEEP_EVERY",
    "RuleValue",
    "ahead_limit",
    "earliest",
    "learned_ttl",
    "longest_pause",
    "permit_hold",
]

#: Keys a memory store keeps before it forgets the idle ones.
MEMORY_KEYS = 10_000
#: The longest pause any store keeps, in seconds, and the longest wait for a permit.
MAX_PAUSE = 24 * 3600.0
#: Seconds between sweeps of what has ended (memory and SQLite).
SWEEP_EVERY = 60.0
#: A wall clock that reads this many seconds less than the latest reading kept
#: in an SQLite store was stepped back.
CLOCK_STEP = 1.0
#: The shortest hold: room for a busy host to deschedule the sender between
#: its permit and its connect.
MIN_HOLD = 5.0
#: The longest hold, whatever the timeout.
MAX_HOLD = 300.0


def permit_hold(timeout: float | None, time_left: float | None = None) -> float:
    """Seconds after its time that a permit counts as ended if its holder never says.

    :param timeout: the attempt's timeout, connect and read together (None: none).
    :param time_left: the call's time left, when it has a deadline.
    :return: the timeout (:data:`DEFAULT_HOLD` without one), within
        :data:`MIN_HOLD` and :data:`MAX_HOLD`, and no longer than the call may
        still run (but never under :data:`MIN_HOLD`).
    """
    hold = DEFAULT_HOLD if timeout is None else timeout
    if time_left is not None:
        hold = min(hold, time_left)
    return min(max(hold, MIN_HOLD), MAX_HOLD)


def earliest(
    ends: Sequence[float], starts: Iterable[float], now: float, limit: int, period: float
) -> tuple[float, bool]:
    """The earliest time of a permit reserved after others, and whether it is firm.

    :param ends: the ends of the others that ended (or expired), ascending.
    :param starts: the times of the others in flight.
    :return: ``(time, firm)``: a period after the ``limit``-th latest end,
        each in flight counting as ending later than any that ended; while
        ``limit`` are in flight, a period after the ``limit``-th latest of
        their times (or now), not firm. ``now`` when nothing constrains it.
    """
    floors = sorted((max(at, now) for at in starts), reverse=True)
    if len(floors) >= limit:
        return floors[limit - 1] + period, False
    k = limit - len(floors)
    if len(ends) >= k:
        return max(now, ends[-k] + period), True
    return now, True


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
    """How far ahead of now a permit's time may lie at most; one further is stale.

    A permit is reserved at most ``max_wait`` ahead (never more than
    :data:`MAX_PAUSE`, whatever the process that reserved it was configured
    with), a period after the end it waits for.
    """
    return period + MAX_PAUSE
