"""The end-stamped sliding window (issue 20), the same in every store: a permit counts
from the moment its attempt ended; while N are in flight the next one's time is a
guess its holder confirms; permits go in the order they were asked for; a holder
that dies blocks for its hold only.

Memory and SQLite run on a fake clock, and every wait is checked exactly. Redis
keeps time by its own clock, so there "time passes" by moving every time the
key holds back by as much (:meth:`Store.advance`): the same arithmetic, seen
from a later moment. Its clock also moves by itself while the test runs, so a
wait it computes is what was left of the expected one: :meth:`Store.about`
measures how much real time could have gone (see :class:`Countdown`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import parse
from requests_bloxs_errors.storage.base import (
    WAIT_LEASE,
    WAIT_RENEW,
    Grant,
    PermitLog,
    holder,
)
from requests_bloxs_errors.storage.memory import MemoryBackend
from requests_bloxs_errors.storage.redis import RedisBackend
from requests_bloxs_errors.storage.sqlite import SQLiteBackend

from ..helpers import Countdown

KEY = "http://127.0.0.1:1|*"
ONE = (1, 1.0)
TWO = (2, 1.0)


class Store:
    """A backend, and a way to let time pass for it."""

    def __init__(self, backend: PermitLog, clock: FakeClock | None, client: Any = None) -> None:
        self.backend = backend
        self.clock = clock
        self.client = client
        self.started = time.monotonic()

    def about(self, seconds: float) -> Any:
        """A wait of ``seconds``: exactly, on a fake clock; on Redis, a :class:`Countdown`."""
        if self.clock is not None:
            return pytest.approx(seconds, abs=1e-6)  # (doubles of seconds since the epoch)
        return Countdown(seconds, self.started)

    def advance(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)
            return
        # Redis: every time the key holds moves back by as much
        for name in self.client.keys("rbe:{" + KEY + "}:*"):
            kind = name.decode().rpartition(":")[2]
            if kind in ("flight", "ended", "lease"):
                for member, score in self.client.zrange(name, 0, -1, withscores=True):
                    self.client.zadd(name, {member: score - seconds})

    def acquire(self, rule: tuple[int, float] = TWO, max_wait: float = 60, **kw: Any) -> Grant:
        return self.backend.acquire(KEY, rule, max_wait, **kw)

    def confirm(self, grant: Grant, rule: tuple[int, float] = TWO, max_wait: float = 60) -> Grant:
        return self.backend.confirm(KEY, grant.stamp, rule, max_wait)

    def finish(self, grant: Grant) -> None:
        self.backend.finish(KEY, grant.stamp)

    def state(self) -> Any:
        (found,) = [s for s in self.backend.snapshot() if s.key == KEY]
        return found


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "redis":
        import redis

        url = request.getfixturevalue("redis_url")
        client = redis.Redis.from_url(url)
        backend = RedisBackend(parse(url))
        yield Store(backend, None, client)
        backend.close()
        client.close()
        return
    clock = FakeClock()
    if request.param == "memory":
        yield Store(MemoryBackend(clock=clock), clock)
        return
    backend = SQLiteBackend(parse(f"sqlite:///{tmp_path}/permits.db"), clock)
    yield Store(backend, clock)
    backend.close()


def test_the_next_permit_counts_from_the_nth_latest_end_not_from_its_reservation(store):
    first, second = store.acquire(), store.acquire()
    assert (first.wait, first.firm, second.wait, second.firm) == (0, True, 0, True)
    store.advance(0.5)
    store.finish(first)  # its response came half a second after its permit
    store.advance(0.3)
    store.finish(second)
    third = store.acquire()
    assert third.firm
    assert third.wait == store.about(0.7)  # a period after the first ENDED, not after it began
    fourth = store.acquire()
    assert fourth.firm
    assert fourth.wait == store.about(1.0)  # a period after the second ended


def test_while_n_are_in_flight_the_next_time_is_a_guess_confirmed_after_an_end(store):
    first, _ = store.acquire(), store.acquire()
    third = store.acquire()
    assert not third.firm
    assert third.wait == store.about(1.0)  # no earlier than a period from now
    store.advance(0.4)
    store.finish(first)
    confirmed = store.confirm(third)
    assert confirmed.firm
    assert confirmed.stamp == third.stamp
    assert confirmed.wait == store.about(1.0)  # a period after the first ended
    state = store.state()
    assert (state.in_flight, state.waiting) == (1, 1)  # the third waits for its time


def test_a_permit_that_waited_goes_before_one_asked_for_later(store):
    first = store.acquire(ONE)
    waiting = store.acquire(ONE)
    assert not waiting.firm
    store.advance(0.1)
    store.finish(first)
    later = store.acquire(ONE)  # the thread that just finished asks again at once
    assert not later.firm  # it queues behind the one that waited
    assert later.wait == store.about(waiting.wait - 0.1 + 1.0)
    confirmed = store.confirm(waiting, ONE)
    assert confirmed.firm
    assert confirmed.wait == store.about(1.0)


def test_a_permit_never_ended_counts_as_ended_after_its_hold(store):
    store.acquire(ONE, hold=5.0)  # its holder dies: no finish, ever
    blocked = store.acquire(ONE)
    assert not blocked.firm
    store.advance(5.0)
    confirmed = store.confirm(blocked, ONE)
    assert confirmed.firm
    assert confirmed.wait == store.about(1.0)  # a period after the hold ran out
    store.advance(1.0)
    assert store.acquire(ONE).wait == store.about(1.0)  # and then it no longer counts


def test_a_cancelled_permit_is_given_back(store):
    first = store.acquire(ONE)
    store.backend.cancel(KEY, first.stamp)
    second = store.acquire(ONE)
    assert (second.wait, second.firm) == (0, True)


def test_finishing_twice_or_a_stamp_the_store_forgot_changes_nothing(store):
    first = store.acquire(ONE)
    store.finish(first)
    store.advance(0.5)
    store.finish(first)  # a second end is ignored: the first one counts
    assert store.acquire(ONE).wait == store.about(0.5)


def test_a_permit_over_max_wait_reserves_nothing_and_a_guess_over_it_is_given_back(store):
    store.acquire(ONE)
    refused = store.acquire(ONE, max_wait=0.5)
    assert refused.stamp is None
    assert refused.wait == store.about(1.0)
    waiting = store.acquire(ONE)
    assert (store.state().in_flight, store.state().waiting) == (1, 1)
    dropped = store.confirm(waiting, ONE, max_wait=0.1)
    assert dropped.stamp is None
    assert (store.state().in_flight, store.state().waiting) == (1, 0)


def test_confirming_a_reservation_the_store_no_longer_has_reserves_anew(store):
    store.acquire(ONE)
    waiting = store.acquire(ONE)
    store.backend.cancel(KEY, waiting.stamp)
    renewed = store.confirm(waiting, ONE)
    assert renewed.stamp is not None
    assert renewed.stamp != waiting.stamp
    assert (store.state().in_flight, store.state().waiting) == (1, 1)


def test_a_snapshot_shows_learned_rules_pauses_and_permits(store):
    done = store.acquire()
    store.finish(done)
    store.acquire()
    store.backend.learn(KEY, 3, 2.0)
    store.backend.pause(KEY, 5.0)
    state = store.state()
    assert state.learned == (3, 2.0)
    assert state.paused_for == store.about(5.0)
    assert (state.in_flight, state.ended) == (1, 1)


def test_two_sqlite_connections_share_one_order(tmp_path):
    clock = FakeClock()
    url = parse(f"sqlite:///{tmp_path}/shared.db")
    one, two = SQLiteBackend(url, clock), SQLiteBackend(url, clock)  # two processes
    first = one.acquire(KEY, ONE, 60)
    waiting = two.acquire(KEY, ONE, 60)
    clock.advance(0.2)
    one.finish(KEY, first.stamp)
    later = one.acquire(KEY, ONE, 60)
    assert not later.firm
    confirmed = two.confirm(KEY, waiting.stamp, ONE, 60)
    assert (confirmed.firm, confirmed.wait) == (True, pytest.approx(1.0))


# -- waiting is not sending (issue 28) ------------------------------------------------


def test_a_permit_due_now_is_sending_and_one_that_waits_is_waiting_each_with_its_holder(store):
    sent = store.acquire(ONE)
    waiting = store.acquire(ONE)
    assert (sent.wait, sent.firm) == (0, True)
    assert waiting.wait > 0
    state = store.state()
    assert (state.in_flight, state.waiting, state.ended) == (1, 1, 0)
    assert [held.state for held in state.holders] == ["sending", "waiting"]
    here = holder()
    assert {(held.host, held.pid) for held in state.holders} == {here}
    assert all(abs(held.since - state.now) < 5 for held in state.holders)
    assert state.holders[1].at > state.holders[0].at  # it waits for a later time


def test_a_waiting_reservation_that_is_not_renewed_lapses_and_counts_for_nothing(store):
    first = store.acquire(ONE)
    store.acquire(ONE)  # its holder dies while it waits: never renewed, never sent
    store.advance(0.5)
    store.finish(first)
    store.advance(WAIT_LEASE)
    state = store.state()
    assert (state.in_flight, state.waiting) == (0, 0)  # gone, and never sent
    assert state.holders == ()
    fresh = store.acquire(ONE)  # a period after the first ended has passed: at once
    assert (fresh.firm, fresh.wait) == (True, store.about(0.0))


def test_a_renewed_reservation_keeps_its_place_and_is_sent_when_its_time_comes(store):
    first = store.acquire(ONE, hold=10.0)
    waiting = store.acquire(ONE)
    for _ in range(4):  # renewed every WAIT_RENEW seconds, past several leases
        store.advance(WAIT_RENEW)
        renewed = store.confirm(waiting, ONE)
        assert renewed.stamp == waiting.stamp
        assert store.state().waiting == 1
    store.finish(first)
    store.advance(1.0)
    due = store.confirm(waiting, ONE)
    assert (due.stamp, due.firm, due.wait) == (waiting.stamp, True, store.about(0.0))
    state = store.state()
    assert (state.in_flight, state.waiting) == (1, 0)
    assert [held.state for held in state.holders] == ["sending"]


def test_a_sent_permit_is_held_for_its_hold_not_for_a_waiting_lease(store):
    store.acquire(ONE, hold=6.0)  # sent; its holder dies without a word
    store.advance(WAIT_LEASE + 0.5)
    assert store.state().in_flight == 1  # still counted: it may have reached the server
    blocked = store.acquire(ONE)
    assert not blocked.firm
    store.advance(6.0 - WAIT_LEASE - 0.5)
    assert store.state().in_flight == 0


def test_an_sqlite_file_from_an_earlier_version_gains_the_columns_and_its_permits_count(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE rbe_permits (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, "
        "at REAL NOT NULL, ended REAL, expires REAL NOT NULL, forget REAL NOT NULL);"
    )
    clock = FakeClock()
    now = clock.time()
    old.execute(  # a permit an older process holds: sent, in its view, until its expiry
        "INSERT INTO rbe_permits (key, at, expires, forget) VALUES (?, ?, ?, ?)",
        (KEY, now, now + 30, now + 31),
    )
    old.commit()
    old.close()
    path.chmod(0o600)
    backend = SQLiteBackend(parse(f"sqlite:///{path}"), clock)
    try:
        blocked = backend.acquire(KEY, ONE, 60)
        assert not blocked.firm  # the older process's permit counts
        (state,) = backend.snapshot()
        assert (state.in_flight, state.waiting) == (1, 1)
        assert [(held.state, held.host) for held in state.holders] == [
            ("sending", "?"),
            ("waiting", holder()[0]),
        ]
    finally:
        backend.close()
