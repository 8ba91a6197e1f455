"""The open pipeline and the package's seams (issue 18): ``rbe.Step`` and ``steps=``,
``adapter.steps``, ``call.state``, a user's refusal, one storage layer with backends
a user registers, and an import that loads only what it needs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors import storage
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.pipeline.steps import steps_in_order
from requests_bloxs_errors.resilience.breaker import Circuits
from requests_bloxs_errors.resilience.outbox import Queueing
from requests_bloxs_errors.resilience.pacing import Pacing
from requests_bloxs_errors.storage.memory import MemoryBackend
from requests_bloxs_errors.storage.windows import margin

from .server import Reply


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
    outbox = rbe.Outbox(f"sqlite://{tmp_path}/outbox.db")
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
    outbox = f"sqlite://{tmp_path}/outbox.db"
    rbe.mount(session, "http://", steps=[quota], outbox=outbox)
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


# -- one storage layer ---------------------------------------------------------------


class DictBackend(MemoryBackend):
    """A user's backend: memory under another scheme, counting what it is asked."""

    made: ClassVar[list[storage.StorageURL]] = []

    def __init__(self, url: storage.StorageURL, clock: rbe.clock.Clock) -> None:
        super().__init__(url, clock)
        DictBackend.made.append(url)

    @classmethod
    def check(cls, url: storage.StorageURL, what: str) -> storage.StorageURL:
        if not url.url.endswith("/bucket"):
            raise ValueError(f"{what} must name the bucket: dict://host/bucket")
        return url


@pytest.fixture
def dict_scheme() -> Iterator[None]:
    storage.register_backend("dict", DictBackend)
    yield
    storage._BACKENDS.pop("dict")


def test_a_registered_backend_serves_the_rate_limit_by_its_scheme(server, session, dict_scheme):
    server.route("GET", "/x", Reply(200, "ok"))
    clock = FakeClock()
    limit = rbe.RateLimit({"*": (2, 1.0)}, storage="dict://anywhere/bucket", clock=clock)
    rbe.mount(session, "http://", rate_limit=limit)
    responses = [session.get(server.url("/x")) for _ in range(3)]
    assert [r.status_code for r in responses] == [200] * 3
    paced = [rbe.attempts(r)[0].paced for r in responses]
    assert paced[:2] == [0, 0]
    assert paced[2] == pytest.approx(1.0 + margin(1.0))  # the third waited on the fake clock
    assert DictBackend.made[-1].url == "dict://anywhere/bucket"
    assert "dict://..." in storage.schemes()
    with pytest.raises(ValueError, match="bucket"):
        rbe.RateLimit({"*": "1/second"}, storage="dict://anywhere/")


def test_a_feature_names_the_schemes_that_can_keep_it(dict_scheme):
    with pytest.raises(ValueError, match="cannot keep an outbox in dict://") as caught:
        rbe.Outbox("dict://anywhere/bucket")  # a memory-like backend keeps no outbox
    message = str(caught.value)
    assert "'sqlite:///path'" in message
    assert "redis" not in message
    with pytest.raises(ValueError, match="must be 'memory://' or 'sqlite:///path'"):
        rbe.RateLimit({"*": "1/second"}, storage="mongo://x")


@pytest.mark.parametrize("scheme", ["", "Upper", "two words", 3])
def test_a_scheme_must_be_a_lower_case_word(scheme):
    with pytest.raises(ValueError, match="scheme"):
        storage.register_backend(scheme, DictBackend)  # type: ignore[arg-type]


def test_one_sealer_and_one_lease_owner_serve_every_feature():
    from requests_bloxs_errors.storage.sealing import Sealer

    sealer = Sealer(b"k" * 32, "a test")
    blob = sealer.seal(b"plain", b"label")
    assert sealer.open(blob, b"label") == b"plain"
    with pytest.raises(ValueError, match="does not open"):
        sealer.open(blob, b"another label")
    owners = {storage.lease_owner() for _ in range(100)}
    assert len(owners) == 100


# -- import cost -----------------------------------------------------------------------

HEAVY = ("sqlite3", "redis", "cryptography", "opentelemetry", "argparse", "http.server")


def test_the_import_loads_no_optional_part():
    script = (
        "import sys, requests_bloxs_errors as rbe\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(sorted(m for m in sys.modules if m.startswith('requests_bloxs_errors.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    loaded = eval(out[1])
    assert not [m for m in loaded if m.split(".")[1] in ("resilience", "tools", "simulator")]
    assert "requests_bloxs_errors.storage" not in loaded


def test_lazy_names_load_on_first_use_and_are_listed():
    script = (
        "import sys, requests_bloxs_errors as rbe\n"
        "assert 'sqlite3' not in sys.modules\n"
        "rbe.RateLimit, rbe.Outbox, rbe.CircuitBreaker, rbe.install_from_env, rbe.ConfigError\n"
        "assert {'RateLimit', 'Outbox', 'install_from_env'} <= set(dir(rbe))\n"
        "try:\n"
        "    rbe.NoSuchThing\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "has no attribute 'NoSuchThing'" in out
    assert set(rbe.__all__) <= set(dir(rbe))
