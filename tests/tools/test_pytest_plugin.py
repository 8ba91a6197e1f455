"""The pytest plugin's fixtures take the simulator's settings and a clock: the
``bloxs_simulator`` marker, ``bloxs_simulator_factory`` and ``bloxs_clock``.

The plugin is installed with the package, so these tests use its fixtures as a
user's suite would; what only a whole run shows (the testing page's example,
refused settings) runs as another project's suite, in a process of its own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from requests_bloxs_errors.clock import SYSTEM, FakeClock
from requests_bloxs_errors.errors import parsing
from requests_bloxs_errors.simulator import BLOXS_TOKEN_PATH, COMPLEXES, Simulator

from ..helpers import docs


def _token(sim: Simulator) -> requests.Response:
    key, secret = sim.bloxs_credentials
    return requests.post(
        sim.url + BLOXS_TOKEN_PATH, json={"apiKey": key, "apiSecret": secret}, timeout=5
    )


def _suite(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as another project's test module, as its owner would."""
    (folder / "test_users_suite.py").write_text(code)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=folder,
    )


@pytest.mark.bloxs_simulator(
    window=2.0, limits={"get": 1}, bloxs_token_lifetime=60.0, bloxs_retry_after=True
)
def test_the_markers_settings_make_the_fixtures_simulator(bloxs_simulator):
    sim = bloxs_simulator
    answer = _token(sim)
    issued = parsedate_to_datetime(answer.headers["Date"]).timestamp()
    expires = parsing.parse_iso8601(answer.json()["expiration"])
    assert expires - issued == pytest.approx(60.0, abs=1.0)
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + answer.json()["token"]
    assert session.get(sim.url + COMPLEXES, timeout=5).status_code == 200
    limited = session.get(sim.url + COMPLEXES, timeout=5)  # one GET per 2 s window
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] in ("1", "2")
    assert sim.clock is SYSTEM  # no clock named, no fixture overridden: the real one


@pytest.mark.bloxs_simulator(faults=lambda sim: sim.maintenance(30))
def test_the_markers_faults_are_scripted_before_the_test_starts(bloxs_simulator):
    down = requests.get(bloxs_simulator.url + "/Test", timeout=5)
    assert down.status_code == 503
    assert int(down.headers["Retry-After"]) in (29, 30)


def test_without_a_marker_the_fixture_has_the_defaults(bloxs_simulator):
    defaults = Simulator.__init__.__kwdefaults__ or {}
    assert bloxs_simulator.window == defaults["window"]
    assert bloxs_simulator.bloxs_token_lifetime == defaults["bloxs_token_lifetime"]
    assert _token(bloxs_simulator).status_code == 200


MARKED_CLOCK = FakeClock()


@pytest.mark.bloxs_simulator(clock=MARKED_CLOCK)
def test_a_clock_the_marker_names_is_the_simulators(bloxs_simulator, bloxs_clock):
    assert bloxs_simulator.clock is MARKED_CLOCK
    assert bloxs_clock is SYSTEM
    answer = _token(bloxs_simulator)
    assert parsedate_to_datetime(answer.headers["Date"]).timestamp() == MARKED_CLOCK.time()


@pytest.mark.bloxs_simulator(window=5.0, faults=lambda sim: sim.maintenance(30))
class TestOnAnOverriddenClock:
    """``bloxs_clock`` overridden for a class: its simulators run on that clock."""

    @pytest.fixture
    def bloxs_clock(self) -> FakeClock:
        return FakeClock.starting_now()

    def test_the_fixtures_simulator_runs_on_it(self, bloxs_simulator, bloxs_clock):
        assert bloxs_simulator.clock is bloxs_clock
        assert bloxs_simulator.window == 5.0  # the class's marker
        assert requests.get(bloxs_simulator.url + "/Test", timeout=5).status_code == 503
        bloxs_clock.advance(30)  # the maintenance is over on the simulator's clock
        assert requests.get(bloxs_simulator.url + "/Test", timeout=5).status_code == 401

    def test_the_factorys_simulators_run_on_it(self, bloxs_simulator_factory, bloxs_clock):
        sim = bloxs_simulator_factory(bloxs_token_lifetime=90.0)
        assert sim.clock is bloxs_clock
        answer = _token(sim)
        assert parsedate_to_datetime(answer.headers["Date"]).timestamp() == int(bloxs_clock.time())


@pytest.fixture
def stopped_after_the_test() -> Iterator[list[Simulator]]:
    """Simulators that must refuse connections once the fixtures they came from are torn
    down (requested before the factory: set up before it, torn down after it)."""
    started: list[Simulator] = []
    yield started
    assert started
    for sim in started:
        with pytest.raises(requests.ConnectionError):
            requests.get(sim.url + "/Test", timeout=2)


def test_the_factory_starts_as_many_as_asked_each_with_its_settings(
    stopped_after_the_test, bloxs_simulator_factory
):
    strict = bloxs_simulator_factory(limits={"get": 1})
    roomy = bloxs_simulator_factory(faults=lambda sim: sim.fail(500, path="/Test", times=1))
    stopped_after_the_test += [strict, roomy]
    assert strict.url != roomy.url
    assert requests.get(roomy.url + "/Test", timeout=5).status_code == 500
    assert requests.get(roomy.url + "/Test", timeout=5).status_code == 401
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + _token(strict).json()["token"]
    statuses = [session.get(strict.url + COMPLEXES, timeout=5).status_code for _ in range(2)]
    assert statuses == [200, 429]


def test_the_testing_pages_fixture_example_passes_as_a_users_suite(tmp_path):
    example = docs.block_with("def test_two_environments")
    assert "bloxs_simulator_factory" in example
    assert "@pytest.mark.bloxs_simulator(" in example
    finished = _suite(tmp_path, example)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "2 passed" in finished.stdout


def test_settings_the_simulator_does_not_take_are_refused_by_name(tmp_path):
    finished = _suite(
        tmp_path,
        "import pytest\n\n"
        "@pytest.mark.bloxs_simulator(windw=2.0)\n"
        "def test_misspelt(bloxs_simulator):\n    pass\n\n"
        "@pytest.mark.bloxs_simulator(2.0)\n"
        "def test_positional(bloxs_simulator):\n    pass\n\n"
        "@pytest.mark.bloxs_simulator(faults='maintenance')\n"
        "def test_faults_not_callable(bloxs_simulator):\n    pass\n\n"
        "def test_factory_misspelt(bloxs_simulator_factory):\n"
        "    bloxs_simulator_factory(limit={'get': 1})\n",
    )
    out = finished.stdout
    assert "3 errors" in out, out
    assert "1 failed" in out, out
    assert "the bloxs_simulator marker got unknown settings 'windw'" in out
    assert "the bloxs_simulator marker takes keywords only" in out
    assert "faults must be a callable given the running simulator" in out
    assert "bloxs_simulator_factory() got unknown settings 'limit'" in out
