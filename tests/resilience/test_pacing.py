"""Quota-aware pacing (issue 7): rules, the sliding window in every store, learning
from the server, sharing across threads and processes, and failing stores.

Every test goes through real loopback sockets; Redis is a real ``redis-server``
(see ``conftest.redis_server``), and the fleet tests run real subprocesses.

A wait is checked on a fake clock given to the limit and the adapter alike, or
counted at the server. The few tests on the real clock (threads or processes
sharing a store, a pause every thread must honour) assert what the server saw:
never more than N in any window, nothing during a pause. A wait Redis times by
its own clock is checked as a :class:`~tests.helpers.Countdown`.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.clock import SYSTEM, Clock, FakeClock
from requests_bloxs_errors.errors.responses import is_local
from requests_bloxs_errors.pipeline.steps import Step
from requests_bloxs_errors.simulator import COMPLEXES, Simulator
from requests_bloxs_errors.storage import RETRY_STORE_AFTER, WAIT_RENEW, holder, parse
from requests_bloxs_errors.storage.sqlite import SQLiteBackend
from requests_bloxs_errors.tools import envconfig

from ..helpers import Countdown, wait_until
from ..helpers.arrivals import most_in_any
from ..helpers.redisserver import free_port
from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/rbe.db"
    url: str = request.getfixturevalue("redis_url")
    return url


def prepared(method: str, url: str) -> requests.PreparedRequest:
    return requests.Request(method, url).prepare()


# -- rules and categories -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("5/second", (5, 1.0)),
        ("100/minute", (100, 60.0)),
        ("1000/hour", (1000, 3600.0)),
        ("8/1.5s", (8, 1.5)),
        (" 3 / 2s ", (3, 2.0)),
        ((4, 0.25), (4, 0.25)),
    ],
)
def test_rules_parse_every_documented_form(rule, expected):
    assert rbe.RateLimit({"*": rule}).rules == {"*": expected}


@pytest.mark.parametrize(
    "rule", ["banana", "0/second", "-3/minute", "5/fortnight", "5/0s", (0, 1), (1, 0), (1.5, 1)]
)
def test_a_bad_rule_is_a_value_error_naming_it(rule):
    with pytest.raises(ValueError, match="rate limit rule for 'search'") as caught:
        rbe.RateLimit({"search": rule}, categorize=lambda r: "search")
    assert repr(rule) in str(caught.value)


def test_rules_other_than_star_need_a_categorize_function():
    with pytest.raises(ValueError, match="categorize"):
        rbe.RateLimit({"search": "5/second"})


def test_the_star_rule_serves_categories_without_their_own():
    limit = rbe.RateLimit({"*": "5/second", "slow": "1/second"}, categorize=lambda r: "x")
    assert limit.rule("slow") == (1, 1.0)
    assert limit.rule("anything") == (5, 1.0)
    assert limit.category(prepared("GET", "http://127.0.0.1/a")) == "x"


@pytest.mark.parametrize(
    ("method", "path", "category"),
    [
        ("POST", "/Authorization", "authorization"),
        ("GET", "/api/v1/documents/7/download", "download"),
        ("POST", "/api/v1/realestateobjects/complexes/filter", "filter"),
        ("POST", "/api/v1/realestateobjects/complexes", "update"),
        ("DELETE", "/api/v1/realestateobjects/complexes/1", "update"),
        ("GET", "/api/v1/realestateobjects/complexes?paging.pageSize=5", "get"),
        ("HEAD", "/api/v1/realestateobjects/complexes", "get"),
    ],
)
def test_bloxs_categories(method, path, category):
    limit = rbe.RateLimit.bloxs()
    assert limit.category(prepared(method, "https://acme.bloxs.io" + path)) == category
    assert limit.rules == {
        "authorization": (10, 60.0),
        "download": (10, 60.0),
        "filter": (100, 60.0),
        "update": (100, 60.0),
        "get": (500, 60.0),
    }


def test_dealcloud_categories_are_method_and_path_and_assume_nothing():
    limit = rbe.RateLimit.dealcloud()
    request = prepared("GET", "https://x.dealcloud.com" + ENTRIES + "?limit=5")
    assert limit.category(request) == "GET " + ENTRIES
    assert limit.rules == {}
    assert limit.rule("GET " + ENTRIES) is None


@pytest.mark.parametrize(
    "url",
    [
        "memcached://127.0.0.1",
        "sqlite://relative.db",
        "sqlite:///relative.db",
        "file:///tmp/x",
        "redis://",
        "",
    ],
)
def test_unknown_or_malformed_storage_is_a_value_error(url):
    with pytest.raises(ValueError, match="storage"):
        rbe.RateLimit({"*": "1/second"}, storage=url)


def test_redis_without_its_extra_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError) as caught:
        rbe.RateLimit({"*": "1/second"}, storage="redis://127.0.0.1:6379/0")
    message = str(caught.value)
    assert "pip install 'requests-bloxs-errors[redis]'" in message
    assert "(from a checkout: pip install '.[redis]')" in message
    assert "\n" not in message


def test_the_adapter_takes_a_limit_or_a_vendor_name(session):
    assert rbe.mount(session, "http://", rate_limit="bloxs").rate_limit.rules["get"] == (500, 60.0)
    assert rbe.mount(session, "http://", rate_limit="dealcloud").rate_limit.rules == {}
    assert rbe.mount(session, "http://").rate_limit is None
    with pytest.raises(ValueError, match="rate_limit"):
        rbe.mount(session, "http://", rate_limit="fast")


# -- the sliding window ----------------------------------------------------------------


def test_threads_send_at_most_n_in_any_interval(server, session, storage):
    # Real time, end to end: threads contend for permits in the store while the
    # server stamps arrivals; what is asserted is the server's count in every window.
    server.route("GET", "/paced", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (4, 1.0)}, storage=storage)
    rbe.mount(session, "http://", rate_limit=limit, pool_maxsize=6)
    with ThreadPoolExecutor(6) as pool:
        statuses = list(
            pool.map(lambda _: session.get(server.url("/paced")).status_code, range(16))
        )
    assert statuses == [200] * 16
    arrivals = [r.at for r in server.seen()]
    assert len(arrivals) == 16
    # a token bucket would let 8 through one period; the sliding window keeps 4,
    # as the server counts them (and so 16 arrivals span three periods at least)
    assert most_in_any(arrivals, 1.0) <= 4


def test_a_permit_that_cannot_come_in_time_is_refused_without_sending(
    server, session, storage, clock
):
    server.route("GET", "/one", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (1, 10.0)}, storage=storage, max_wait=0.2, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, raise_errors=True, clock=clock)
    began = time.monotonic()  # (for Redis, which times the window by its own clock)
    assert session.get(server.url("/one")).status_code == 200
    with pytest.raises(rbe.RateLimitError) as caught:
        session.get(server.url("/one?token=s3cret"))
    assert clock.sleeps == []  # refused at once: nothing was waited for
    error = caught.value
    assert isinstance(error, requests.HTTPError)
    assert error.response is None
    redis = storage.startswith("redis")
    assert error.retry_after == (Countdown(10.0, began) if redis else pytest.approx(10.0))
    assert "max_wait" in str(error)
    assert "s3cret" not in str(error)
    assert len(server.seen()) == 1


def test_the_deadline_bounds_the_wait_for_a_permit(server, session, clock):
    server.route("GET", "/one", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (1, 30.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, deadline=0.5, raise_errors=True, clock=clock)
    session.get(server.url("/one"))
    with pytest.raises(rbe.RateLimitError, match="deadline") as caught:
        session.get(server.url("/one"))
    assert clock.sleeps == []  # a wait past the deadline is not begun
    assert caught.value.retry_after == pytest.approx(30.0)
    assert len(server.seen()) == 1


def test_a_paced_response_tells_how_long_it_waited(server, session, clock):
    server.route("GET", "/p", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (1, 0.3)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    session.get(server.url("/p"))
    second = session.get(server.url("/p"))
    (attempt,) = rbe.attempts(second)
    assert attempt.paced == pytest.approx(0.3)  # a period after the first ended
    assert clock.sleeps == [pytest.approx(0.3)]  # slept on the call's clock


def test_a_wait_for_a_permit_is_slept_on_the_calls_clock(server, session):
    """The store's times are the limit's clock's; the call waits on its own, the
    adapter's, which its deadline runs on (two fake clocks that run together, as
    two real ones do, from different readings, tell them apart)."""
    server.route("GET", "/p", Reply(200, "ok"))
    store_clock = FakeClock(start=5.0, wall=1_600_000_000.0)

    class CallClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            store_clock.advance(max(seconds, 0.0))  # (time passes for the store too)

    call_clock = CallClock()
    limit = rbe.RateLimit({"*": (1, 0.3)}, clock=store_clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=call_clock)
    session.get(server.url("/p"))
    second = session.get(server.url("/p"))
    assert rbe.attempts(second)[0].paced == pytest.approx(0.3)
    assert call_clock.sleeps == [pytest.approx(0.3)]
    assert store_clock.sleeps == []


def test_keys_are_namespaced_by_origin_unless_a_namespace_is_given(server, other_server, session):
    for srv in (server, other_server):
        srv.route("GET", "/x", Reply(200, "ok"))
    own = rbe.RateLimit({"*": (1, 30.0)}, max_wait=0.1)
    rbe.mount(session, "http://", rate_limit=own, raise_errors=True)
    assert session.get(server.url("/x")).ok
    assert session.get(other_server.url("/x")).ok  # another API: its own quota
    shared = rbe.RateLimit({"*": (1, 30.0)}, max_wait=0.1, namespace="acme")
    with requests.Session() as second:
        rbe.mount(second, "http://", rate_limit=shared, raise_errors=True)
        assert second.get(server.url("/x")).ok
        with pytest.raises(rbe.RateLimitError):
            second.get(other_server.url("/x"))


# -- learning from the server -------------------------------------------------------------


def test_a_429_with_retry_after_pauses_the_category_for_every_thread(server, session, storage):
    first = threading.Event()

    def answer(request):
        if not first.is_set():
            first.set()
            return Reply(429, "slow down", {"Retry-After": "1"})
        return Reply(200, "ok")

    # Real time, end to end: a pause one thread learns must hold every other thread
    # (and, through the store, process); what is asserted is what the server saw.
    server.route_fn("GET", "/q", answer)
    limit = rbe.RateLimit({"*": "100/second"}, storage=storage)
    rbe.mount(session, "http://", rate_limit=limit)
    key = limit.key(prepared("GET", server.url("/q")), "*")
    with ThreadPoolExecutor(4) as pool:
        leader = pool.submit(session.get, server.url("/q"))
        assert first.wait(5)
        assert wait_until(lambda: limit.store.paused_for(key) > 0)  # the leader read its 429
        others = [pool.submit(session.get, server.url("/q")) for _ in range(3)]
        assert leader.result().status_code == 200
        assert [f.result().status_code for f in others] == [200] * 3
    seen = server.seen()
    assert seen[0].path == "/q"
    after = [r.at - seen[0].at for r in seen[1:]]
    assert len(after) == 4
    # nothing went out during the pause (which began after the 429 arrived; the
    # 0.05 s is for Redis, whose clock is the wall clock, not this process's)
    assert min(after) >= 0.95


def test_a_429_without_retry_after_pauses_for_the_rules_period(server, session, clock):
    count = iter(range(100))
    arrivals: list[float] = []  # on the fake clock, as the server saw them

    def answer(request) -> Reply:
        arrivals.append(clock.monotonic())
        return Reply(429, "") if next(count) == 1 else Reply(200, "ok")

    server.route_fn("GET", "/q", answer)
    limit = rbe.RateLimit({"*": (100, 1.5)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    assert session.get(server.url("/q")).ok
    response = session.get(server.url("/q"))
    assert response.status_code == 200
    first, _ = rbe.attempts(response)
    assert (first.status, first.decision) == (429, "retry")
    assert first.wait == pytest.approx(1.5)
    assert arrivals[2] - arrivals[1] == pytest.approx(1.5)


def test_a_hold_longer_than_max_wait_returns_the_429_at_once(server, session, clock):
    server.route("GET", "/q", Reply(429, ""))
    limit = rbe.RateLimit({"*": (100, 120.0)}, max_wait=1, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    response = session.get(server.url("/q"))
    assert clock.sleeps == []  # returned at once
    assert len(server.seen()) == 1
    assert response.status_code == 429
    assert "max_wait" in rbe.attempts(response)[-1].decision


def _one_clock(storage: str, clock: FakeClock) -> Clock:
    """The clock a simulator, its client and the limit share: the test's fake one,
    so that the server's windows and every wait are exact and instant; the real one
    with Redis, which times the windows of the limit by its own clock."""
    return SYSTEM if storage.startswith("redis") else clock


class _Sent(Step):
    """Records when each attempt is sent, on the call's clock (run after pacing)."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def before_attempt(self, call) -> None:
        self.at.append(call.clock.monotonic())


def test_a_bloxs_loop_over_its_limit_loses_no_call(storage, clock):
    """The issue's legacy loop: 14 filter calls against 10 per window, no Retry-After."""
    clock = _one_clock(storage, clock)
    with Simulator(window=3.0, limits={"filter": 10}, clock=clock) as sim:
        key, secret = sim.bloxs_credentials
        with requests.Session() as session:
            rbe.mount(
                session,
                sim.url + "/",
                auth=rbe.BloxsTokenAuth(sim.url, key, secret, clock=clock),
                rate_limit=rbe.RateLimit.bloxs(storage=storage, clock=clock),
                clock=clock,
            )
            statuses = [
                session.post(sim.url + COMPLEXES + "/filter", json={}, timeout=10).status_code
                for _ in range(14)
            ]
        refused = [r for r in sim.requests if r.status == 429]
    assert statuses == [200] * 14
    # the first 429 teaches the stated quota (10 per 3 s); the rest are paced
    if clock is SYSTEM:  # (real time: on a busy machine the first ten may cross the
        assert len(refused) <= 1  # server's window, and then there is nothing to learn)
    else:
        assert len(refused) == 1


def test_a_dealcloud_burst_learns_the_endpoint_quota_from_its_body(storage, clock):
    clock = _one_clock(storage, clock)
    sent = _Sent()
    with Simulator(dealcloud_quota=(5, 1.0), clock=clock) as sim:
        token_url, client_id, client_secret = sim.dealcloud_credentials
        with requests.Session() as session:
            rbe.mount(
                session,
                sim.url + "/",
                auth=rbe.ClientCredentialsAuth(token_url, client_id, client_secret, clock=clock),
                rate_limit=(limit := rbe.RateLimit.dealcloud(storage=storage, clock=clock)),
                clock=clock,
                steps=[sent],
            )
            assert limit.rules == {}  # nothing assumed
            statuses = [session.get(sim.url + ENTRIES, timeout=10).status_code for _ in range(16)]
        answers = [r.status for r in sim.requests if r.path == ENTRIES]
    assert statuses == [200] * 16
    assert answers.count(429) <= 1
    # once the quota was stated, the server never saw more than it in any second
    lesson = answers.index(429) + 1 if 429 in answers else len(answers)
    assert most_in_any(sent.at[lesson:], 1.0) <= 5
    if clock is not SYSTEM:  # (on a fake clock the burst surely meets the quota)
        assert answers.count(429) == 1
    # the stated quota is a rule in force, for every process sharing the store
    assert limit.rules == {"GET " + ENTRIES: (5, 1.0)}
    (state,) = limit.state()
    assert (state.category, state.rule, state.learned) == ("GET " + ENTRIES, (5, 1.0), True)
    assert state.namespace == sim.url.rstrip("/")
    assert state.in_flight == 0


def test_x_rate_limit_remaining_zero_holds_the_endpoint_until_the_reset(server, session, clock):
    arrivals: list[float] = []  # on the fake clock, as the server saw them
    reset = datetime.fromtimestamp(clock.time(), timezone.utc) + timedelta(seconds=1.0)
    stamp = reset.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # .NET "o": 7 digits
    replies = iter(
        [
            Reply(
                200,
                "ok",
                {
                    "X-Rate-Limit-Limit": "1s",
                    "X-Rate-Limit-Remaining": "0",
                    "X-Rate-Limit-Reset": stamp,
                },
            ),
            Reply(200, "ok"),
        ]
    )

    def answer(request) -> Reply:
        arrivals.append(clock.monotonic())
        return next(replies)

    server.route_fn("GET", "/e", answer)
    limit = rbe.RateLimit.dealcloud(clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    assert session.get(server.url("/e")).ok
    second = session.get(server.url("/e"))
    assert second.ok
    # held until the reset (to its microsecond, the most a datetime keeps)
    assert rbe.attempts(second)[0].paced == pytest.approx(1.0, abs=1e-5)
    assert arrivals[1] - arrivals[0] == pytest.approx(1.0, abs=1e-5)


def test_token_requests_count_against_authorization(session, clock):
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        limit = rbe.RateLimit.bloxs(rules={"authorization": (1, 30.0)}, clock=clock)
        rbe.mount(
            session,
            sim.url + "/api/",
            auth=rbe.BloxsTokenAuth(sim.url, key, secret, clock=clock),
            rate_limit=limit,
            clock=clock,
        )
        assert session.get(sim.url + COMPLEXES, timeout=10).ok
        token_calls = [r for r in sim.requests if r.path == "/Authorization"]
    assert len(token_calls) == 1
    request = prepared("POST", sim.url + "/Authorization")
    grant = limit.store.acquire(limit.key(request, "authorization"), (1, 30.0), 0)
    assert grant.stamp is None  # the token request took the one permit
    assert grant.wait == pytest.approx(30.0)  # a period after it ended


# -- a fleet: processes sharing one store ----------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.slow  # a fleet of processes
def test_processes_sharing_a_store_keep_the_quota_together(server, tmp_path, request, kind):
    # Real time, end to end: three processes share the quota through the store;
    # what is asserted is the server's count in every window, never a throughput
    # (that is benchmarks/quota.py's).
    storage = (
        f"sqlite:///{tmp_path}/fleet.db"
        if kind == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    server.route("GET", "/fleet", Reply(200, "ok"))
    command = [sys.executable, "-m", "tests.helpers.paced_client", server.url("/fleet"), storage]
    fleet = [
        subprocess.Popen(
            [*command, "6", "1.0", "3", "4"], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=60)[0] for process in fleet]
    assert [process.returncode for process in fleet] == [0, 0, 0]
    statuses = [s for out in outputs for s in json.loads(out)]
    assert statuses == [200] * 36
    arrivals = [r.at for r in server.seen()]
    assert most_in_any(arrivals, 1.0) <= 6


# -- stores that fail ----------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "Rate limit storage" in r.getMessage()
    ]


def test_an_unreachable_redis_paces_in_process_with_one_warning(server, session, caplog, clock):
    server.route("GET", "/f", Reply(200, "ok"))
    url = f"redis://:hunter2-redis-pw@127.0.0.1:{free_port()}/0"
    limit = rbe.RateLimit({"*": (2, 0.3)}, storage=url, clock=clock)
    assert "hunter2" not in repr(limit)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    started = clock.monotonic()
    statuses = [session.get(server.url("/f")).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert clock.monotonic() - started == pytest.approx(0.6)  # still paced, within the process
    (warning,) = _warnings(caplog)
    assert "hunter2" not in warning
    assert "ConnectionError" in warning


def test_a_corrupt_sqlite_file_never_fails_a_call(server, session, tmp_path, caplog):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database" * 200)
    path.chmod(0o600)
    server.route("GET", "/f", Reply(200, "ok"))
    rbe.mount(
        session,
        "http://",
        rate_limit=rbe.RateLimit({"*": "50/second"}, storage=f"sqlite:///{path}"),
    )
    assert [session.get(server.url("/f")).status_code for _ in range(3)] == [200] * 3
    assert len(_warnings(caplog)) == 1


def test_a_locked_sqlite_file_falls_back_and_sharing_resumes(
    server, session, tmp_path, caplog, clock
):
    path = tmp_path / "locked.db"
    server.route("GET", "/f", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": "50/minute"}, storage=f"sqlite:///{path}", clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    assert session.get(server.url("/f")).ok  # creates the file and its tables
    asked: list[float | None] = []  # the file's permits asked for, with their timeouts
    acquire = SQLiteBackend.acquire

    def counted(self, key, rule, max_wait, timeout=None, **kwargs):
        asked.append(timeout)
        return acquire(self, key, rule, max_wait, timeout, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SQLiteBackend, "acquire", counted)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            assert [session.get(server.url("/f")).status_code for _ in range(3)] == [200] * 3
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert len(asked) == 1  # one busy timeout, then in-process: not one per call
        assert len(_warnings(caplog)) == 1
        clock.advance(RETRY_STORE_AFTER)  # the store's retry is due
        assert session.get(server.url("/f")).ok
        assert len(asked) == 2
    assert any("answers again" in r.getMessage() for r in caplog.records)
    with sqlite3.connect(path) as check:
        (count,) = check.execute("SELECT count(*) FROM rbe_permits").fetchone()
    assert count == 2  # the first call's permit and the last one's: shared again


def test_the_sqlite_file_is_created_for_its_owner_only(server, session, tmp_path):
    path = tmp_path / "private.db"
    server.route("GET", "/f", Reply(200, "ok"))
    rbe.mount(
        session, "http://", rate_limit=rbe.RateLimit({"*": "5/second"}, storage=f"sqlite:///{path}")
    )
    assert session.get(server.url("/f?apikey=zz-secret")).ok
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"zz-secret" not in path.read_bytes()


def test_an_adapter_with_a_limit_pickles(server, tmp_path):
    server.route("GET", "/f", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": "5/second"}, storage=f"sqlite:///{tmp_path}/p.db")
    adapter = rbe.BloxsAdapter(rate_limit=limit)
    copy = pickle.loads(pickle.dumps(adapter))
    assert copy.rate_limit.rules == {"*": (5, 1.0)}
    assert copy.rate_limit.storage == parse(f"sqlite:///{tmp_path}/p.db")
    with requests.Session() as session:
        session.mount("http://", copy)
        assert session.get(server.url("/f")).ok


# -- configuration from the environment ------------------------------------------------------


def test_the_environment_configures_a_shared_limit(tmp_path):
    config = envconfig.config_from_env(
        {"RBE_RATE_LIMIT": "bloxs", "RBE_STORAGE": f"sqlite:///{tmp_path}/q.db"}
    )
    limit = config.adapter_kwargs["rate_limit"]
    assert limit.rules["filter"] == (100, 60.0)
    assert limit.storage.scheme == "sqlite"
    rule = envconfig.config_from_env({"RBE_RATE_LIMIT": "8/1.5s"})
    assert rule.adapter_kwargs["rate_limit"].rules == {"*": (8, 1.5)}
    assert "rate_limit" not in envconfig.config_from_env({}).adapter_kwargs


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"RBE_RATE_LIMIT": "fast"}, "RBE_RATE_LIMIT must be"),
        (
            {"RBE_RATE_LIMIT": "5/second", "RBE_STORAGE": "mongo://x"},
            "RBE_STORAGE",
        ),
        (
            {"RBE_STORAGE": "memory://"},
            "RBE_STORAGE needs RBE_RATE_LIMIT .* or RBE_CIRCUIT_BREAKER",
        ),
    ],
)
def test_a_bad_rate_limit_variable_is_named(environ, named):
    with pytest.raises(rbe.ConfigError, match=named):
        envconfig.config_from_env(environ)


def test_install_shares_one_limit_among_its_sessions(server):
    server.route("GET", "/i", Reply(200, "ok"))
    rbe.install("http://", rate_limit="bloxs", raise_errors=True)
    first = requests.Session().get_adapter(server.url("/i")).rate_limit
    second = requests.Session().get_adapter(server.url("/i")).rate_limit
    assert first is second is not None
    shared = rbe.RateLimit({"*": (1, 30.0)}, max_wait=0.1)
    rbe.install("http://", rate_limit=shared, raise_errors=True)
    assert requests.get(server.url("/i")).ok
    with pytest.raises(rbe.RateLimitError):
        requests.get(server.url("/i"))  # another Session: the same quota


def test_a_long_429_body_read_for_its_quota_is_closed_before_the_retry(server, session, clock):
    body = "API calls quota exceeded! maximum admitted 5 per 1 second. " + "x" * 100_000
    server.route(
        "GET",
        "/long",
        Reply(429, body, {"Content-Type": "text/plain", "Retry-After": "0"}),
        Reply(200, "ok"),
    )
    seen: list[requests.Response] = []

    class Keep(Step):
        def after_response(self, call, response, rule, retry_after):
            seen.append(response)

    limit = rbe.RateLimit.dealcloud(clock=clock)
    adapter = rbe.mount(session, "http://", rate_limit=limit, steps=[Keep()], clock=clock)
    response = session.get(server.url("/long"))
    assert response.status_code == 200
    assert len(server.seen()) == 2
    (intermediate,) = seen
    assert intermediate.raw.closed  # its connection is not left half-read
    key = adapter.rate_limit.key(prepared("GET", server.url("/long")), "GET /long")
    # the quota in the body was learned (5 per second): with the retry's permit (the
    # first attempt had none: no rule was known), four more now, then one a period
    # after the retry ended
    waits = [adapter.rate_limit.store.acquire(key, None, 60)[0] for _ in range(5)]
    assert waits == [0, 0, 0, 0, pytest.approx(1.0)]


def test_an_explicit_default_port_is_the_same_api():
    limit = rbe.RateLimit({"*": "1/second"})
    plain = limit.key(prepared("GET", "https://ACME.bloxs.io/a"), "*")
    explicit = limit.key(prepared("GET", "https://acme.bloxs.io:443/b"), "*")
    assert plain == explicit == "https://acme.bloxs.io:443|*"
    assert limit.key(prepared("GET", "http://acme.bloxs.io/a"), "*") == "http://acme.bloxs.io:80|*"


def test_the_vendor_shorthands_share_one_limit_per_process(session):
    with requests.Session() as other:
        first = rbe.mount(session, "http://", rate_limit="bloxs").rate_limit
        second = rbe.mount(other, "https://", rate_limit="bloxs").rate_limit
    assert first is second


# -- waiting is not sending (issue 28) ------------------------------------------------


def test_a_call_waiting_for_its_permit_renews_it_and_is_sent_at_its_time(server, session):
    """A wait of 3.5 s is slept in pieces of at most WAIT_RENEW, the store asked
    between them (renewing the reservation); the permit is then sending, and ended
    by the response."""
    server.route("GET", "/p", Reply(200, "ok"))
    clock = FakeClock()
    limit = rbe.RateLimit({"*": (1, 3.5)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    session.get(server.url("/p"))
    second = session.get(server.url("/p"))
    assert rbe.attempts(second)[0].paced == pytest.approx(3.5)
    assert clock.sleeps == pytest.approx([WAIT_RENEW, WAIT_RENEW, WAIT_RENEW, 0.5])
    (state,) = limit.state()
    assert (state.in_flight, state.waiting, state.ended) == (0, 0, 1)  # (the first: a period ago)


def test_a_thread_waiting_for_its_permit_shows_as_waiting_with_this_process_as_holder(
    server, session
):
    server.route("GET", "/p", Reply(200, "ok"))
    limit = rbe.RateLimit({"*": (1, 1.5)})
    rbe.mount(session, "http://", rate_limit=limit)
    session.get(server.url("/p"))
    seen: list[tuple[int, int, list[str]]] = []
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(session.get, server.url("/p"))
        assert wait_until(lambda: sum(s.waiting for s in limit.state()) == 1, timeout=10)
        (state,) = limit.state()
        seen.append((state.in_flight, state.waiting, [h.state for h in state.holders]))
        assert waiting.result(timeout=30).status_code == 200
    assert seen == [(0, 1, ["waiting"])]
    assert {(h.host, h.pid) for h in state.holders} == {holder()}


def test_a_token_request_the_limit_refuses_comes_back_as_a_local_429_when_errors_are_not_raised(
    session, clock
):
    """A legacy script checks status codes: a call whose token request gets no permit
    in time is a local 429 with Retry-After, as any refusal (raised when errors are)."""
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        limit = rbe.RateLimit({"*": (1, 30.0)}, max_wait=0, clock=clock)
        auth = rbe.BloxsTokenAuth(sim.url, key, secret, clock=clock)
        rbe.mount(session, sim.url, auth=auth, rate_limit=limit, clock=clock)
        refused = session.get(sim.url + COMPLEXES, timeout=10)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "30"
        assert is_local(refused)
        with pytest.raises(rbe.RateLimitError):
            refused.raise_for_status()
        assert not [r for r in sim.requests if r.path == "/Authorization"]
        assert not [r for r in sim.requests if r.path == COMPLEXES]
        with requests.Session() as strict:
            rbe.mount(strict, sim.url, auth=auth, rate_limit=limit, clock=clock, raise_errors=True)
            with pytest.raises(rbe.RateLimitError):
                strict.get(sim.url + COMPLEXES, timeout=10)
