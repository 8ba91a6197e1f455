"""The IETF RateLimit fields as a learned source (issue 29, point 5), through the
adapter over loopback, on a fake clock: a policy becomes the category's rule (bounded
as every learned value is), ``r=0`` holds the category for ``t`` seconds, and ``t``
is the wait after a 429 that gives no ``Retry-After``."""

from __future__ import annotations

from typing import ClassVar

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors.storage import register_backend, unregister_backend
from requests_bloxs_errors.storage.memory import MemoryBackend

from ..helpers.server import Reply

POLICY = '"default";q=2;w=10'


def _paced(response) -> float:
    return sum(attempt.paced for attempt in rbe.attempts(response))


def test_a_stated_policy_becomes_the_categorys_rule(server, session, clock):
    server.route("GET", "/r", Reply(200, "ok", {"RateLimit-Policy": POLICY}))
    limit = rbe.RateLimit({"*": (100, 60.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    first, second = session.get(server.url("/r")), session.get(server.url("/r"))
    assert _paced(first) == _paced(second) == 0
    third = session.get(server.url("/r"))
    assert _paced(third) == pytest.approx(10.0)  # 2 per 10 s, not the configured 100 per 60 s
    (state,) = limit.state()
    assert (state.rule, state.learned) == ((2, 10.0), True)


def test_none_remaining_holds_the_category_until_the_quota_is_renewed(server, session, clock):
    server.route("GET", "/r", Reply(200, "ok", {"RateLimit": '"default";r=0;t=7'}))
    limit = rbe.RateLimit({"*": (100, 60.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    session.get(server.url("/r"))
    assert _paced(session.get(server.url("/r"))) == pytest.approx(7.0)


def test_some_remaining_holds_nothing(server, session, clock):
    server.route("GET", "/r", Reply(200, "ok", {"RateLimit": '"default";r=1;t=7'}))
    limit = rbe.RateLimit({"*": (100, 60.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    session.get(server.url("/r"))
    assert _paced(session.get(server.url("/r"))) == 0


def test_a_429_without_retry_after_waits_for_the_reset_the_fields_state(server, session, clock):
    server.route(
        "GET",
        "/r",
        Reply(429, "slow down", {"RateLimit": '"default";r=0;t=4'}),
        Reply(200, "ok"),
    )
    limit = rbe.RateLimit({"*": (100, 60.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    response = session.get(server.url("/r"))
    assert response.status_code == 200
    assert sum(clock.sleeps) == pytest.approx(4.0)  # not the rule's period of 60 s


def test_a_policy_longer_than_a_learned_rule_may_be_is_not_taken(server, session, clock):
    """A daily quota is not made a per-minute one (it would loosen the limit)."""
    server.route("GET", "/r", Reply(200, "ok", {"RateLimit-Policy": '"day";q=1000;w=86400'}))
    limit = rbe.RateLimit({"*": (100, 60.0)}, clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    session.get(server.url("/r"))
    (state,) = limit.state()
    assert (state.rule, state.learned) == ((100, 60.0), False)


class CountingBackend(MemoryBackend):
    """memory://, counting what it is told to learn (a backend of one's own)."""

    learned: ClassVar[list[tuple[str, int, float]]] = []

    def learn(self, key: str, limit: int, period: float, timeout: float | None = None) -> None:
        CountingBackend.learned.append((key, limit, period))
        super().learn(key, limit, period, timeout)


@pytest.fixture
def counting():
    CountingBackend.learned = []
    register_backend("counting", CountingBackend)
    yield CountingBackend.learned
    unregister_backend("counting")


def test_a_policy_repeated_on_every_response_is_told_to_the_store_once(
    server, session, clock, counting
):
    server.route("GET", "/r", Reply(200, "ok", {"RateLimit-Policy": '"default";q=50;w=10'}))
    limit = rbe.RateLimit({"*": (100, 60.0)}, storage="counting://", clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    for _ in range(5):
        session.get(server.url("/r"))
    assert len(counting) == 1
    server.route("GET", "/r", Reply(200, "ok", {"RateLimit-Policy": '"default";q=40;w=10'}))
    session.get(server.url("/r"))
    assert [rule[1:] for rule in counting] == [(50, 10.0), (40, 10.0)]  # a new one is told
