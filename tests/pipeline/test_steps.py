"""The open pipeline: ``rbe.Step``, ``steps=``, ``adapter.steps``, ``call.state``, a step's
refusal.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.pipeline.steps import steps_in_order
from requests_bloxs_errors.resilience.breaker import Circuits
from requests_bloxs_errors.resilience.outbox import Queueing
from requests_bloxs_errors.resilience.pacing import Pacing

from ..helpers.server import Reply


class Journal(rbe.Step):
    """Records every place it is called at, with what the call knew then."""

    def __init__(self, name: str = "journal", log: list[tuple[Any, ...]] | None = None) -> None:
        self.name = name
        self.log = log if log is not None else []

    def before_call(self, call) -> None:
        call.state[self] = {"attempts": 0}
        self.log.append((self.name, "before_call"))

    def before_attempt(self, call) -> None:
        call.state[self]["attempts"] += 1
        self.log.append((self.name, "before_attempt", call.state[self]["attempts"]))

    def after_response(self, call, response, rule, retry_after):
        self.log.append((self.name, "after_response", response.status_code))

    def on_outcome(self, call, response, failure) -> None:
        self.log.append((self.name, "on_outcome", response.status_code, dict(call.state[self])))


def test_step_is_public_and_a_user_step_runs_at_each_place_with_per_call_state(server, session):
    assert rbe.Step is rbe.pipeline.steps.Step
    server.route("GET", "/x", Reply(503, "busy", {"Retry-After": "0"}), Reply(200, "ok"))
    journal = Journal()
    rbe.mount(session, "http://", steps=[journal])
    assert session.get(server.url("/x")).status_code == 200
    assert journal.log == [
        ("journal", "before_call"),
        ("journal", "before_attempt", 1),
        ("journal", "after_response", 503),
        ("journal", "before_attempt", 2),
        ("journal", "on_outcome", 200, {"attempts": 2}),
    ]


def test_user_steps_run_after_the_built_in_ones_and_adapter_steps_is_read_only(session, tmp_path):
    breaker = rbe.CircuitBreaker()
    limit = rbe.RateLimit({"*": "5/second"})
    outbox = rbe.Outbox(f"sqlite:///{tmp_path}/outbox.db")
    mine = Journal()
    adapter = rbe.mount(
        session,
        "http://",
        circuit_breaker=breaker,
        rate_limit=limit,
        outbox=outbox,
        steps=[mine],
    )
    kinds = [type(step) for step in adapter.steps]
    assert kinds == [Circuits, Pacing, Queueing, Journal]
    assert adapter.steps[-1] is mine
    assert isinstance(adapter.steps, tuple)
    with pytest.raises(AttributeError):
        adapter.steps = ()  # type: ignore[misc]
    assert steps_in_order() == ()


def test_steps_keep_their_order_at_every_place(server, session):
    server.route("GET", "/x", Reply(200, "ok"))
    log: list[tuple[Any, ...]] = []
    rbe.mount(session, "http://", steps=[Journal("first", log), Journal("second", log)])
    session.get(server.url("/x"))
    assert [entry[:2] for entry in log] == [
        ("first", "before_call"),
        ("second", "before_call"),
        ("first", "before_attempt"),
        ("second", "before_attempt"),
        ("first", "on_outcome"),
        ("second", "on_outcome"),
    ]


def test_install_passes_steps_to_every_session(server):
    server.route("GET", "/x", Reply(200, "ok"))
    journal = Journal()
    rbe.install("http://", steps=[journal])
    requests.get(server.url("/x"), timeout=5)
    requests.get(server.url("/x"), timeout=5)
    assert [entry[1] for entry in journal.log].count("on_outcome") == 2


class Quota(rbe.Step):
    """A user's own refusal: at most ``limit`` calls, then a RateLimitError unsent."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.refused: list[BaseException] = []

    def before_attempt(self, call) -> None:
        if self.left == 0:
            raise call.not_sent(
                rbe.RateLimitError,
                status=429,
                kind="rate_limited",
                reason="the job's own budget is spent",
                action="Run it again tomorrow.",
                wait=3600.0,
            )
        self.left -= 1

    def on_refused(self, call, error) -> None:
        self.refused.append(error)


def test_a_step_that_raises_a_bloxs_error_refuses_the_call_as_the_breaker_does(
    server, session, tmp_path
):
    server.route("POST", "/w", Reply(201, "created"))
    quota = Quota(1)
    outbox = f"sqlite:///{tmp_path}/outbox.db"
    rbe.mount(session, "http://", steps=[quota], outbox=outbox, raise_errors=True)
    assert session.post(server.url("/w"), data=b"1").status_code == 201
    with pytest.raises(rbe.RateLimitError) as caught:
        session.post(server.url("/w"), data=b"2")
    error = caught.value
    assert error.response is None
    assert error.attempts == 0
    assert "budget" in str(error)
    assert quota.refused == [error]
    assert len(server.seen()) == 1  # the second was never sent...
    (entry,) = rbe.Outbox(outbox).entries()  # ...and the outbox kept it, as for the breaker
    assert entry.body == b"2"
    assert error.outbox_id == entry.id


def test_a_step_that_raises_while_observing_is_logged_and_changes_nothing(server, session, caplog):
    class Broken(rbe.Step):
        def on_outcome(self, call, response, failure) -> None:
            raise RuntimeError("a bug in a user's step")

    server.route("GET", "/x", Reply(200, "ok"))
    rbe.mount(session, "http://", steps=[Broken()])
    assert session.get(server.url("/x")).status_code == 200
    (record,) = [r for r in caplog.records if "Broken" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "on_outcome" in record.getMessage()


@pytest.mark.parametrize("steps", [[object()], "not a list", [Journal, 3]])
def test_something_that_is_not_a_step_is_refused_when_the_adapter_is_made(steps):
    with pytest.raises(TypeError, match="step"):
        rbe.BloxsAdapter(steps=steps)


def test_user_steps_survive_a_pickle_round_trip():
    import pickle

    adapter = rbe.BloxsAdapter(steps=[Journal()])
    copy = pickle.loads(pickle.dumps(adapter))
    assert [type(step) for step in copy.steps] == [Journal]
