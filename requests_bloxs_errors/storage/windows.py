"""The sliding window's arithmetic, which every backend applies inside one atomic step.

A store keeps, per key, the times of the permits it gave out and answers one
question atomically: *when may the next request go?* It then records that
time at once (a reservation), so concurrent callers line up one behind the
other instead of waking together and racing for one slot.

The rule for ``limit`` requests per ``period`` seconds: a new permit is no
earlier than

* now, and the end of any pause a server asked for;
* the ``limit``-th most recent permit plus the period plus a small margin
  (:func:`margin`), so that at most ``limit`` permits fall in ANY interval
  of the period, whatever the phase of the server's own windows;
* the latest permit (permits are handed out in order).

A server-stated rule learned for a key takes precedence over the configured
one until it expires (:func:`learned_ttl`).

Nothing a store keeps can hold a key for long:

* a pause lasts at most :func:`longest_pause` of the key's configured rule
  (its period; :data:`MAX_PAUSE` without one), whatever it was asked for;
* a permit or pause lying further ahead than any could (a value from a
  clock that was wrong) is stale: dropped, not waited for (:func:`ahead_limit`);
* ended pauses, expired rules and idle permit logs are forgotten (every
  :data:`SWEEP_EVERY` seconds in memory and SQLite; Redis keys expire).
"""

from __future__ import annotations

from .base import RuleValue

__all__ = [
    "CLOCK_STEP",
    "MAX_PAUSE",
    "MEMORY_KEYS",
    "SWEEP_EVERY",
    "RuleValue",
    "ahead_limit",
    "learned_ttl",
    "longest_pause",
    "margin",
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
