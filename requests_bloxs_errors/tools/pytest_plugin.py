"""pytest plugin: the ``bloxs_simulator`` fixture, its settings, and its clock.

Installed with the package (entry point ``pytest11``), so any test suite in
an environment that has requests-bloxs-errors can write::

    def test_my_sync_job(bloxs_simulator):
        bloxs_simulator.fail(503, path="/api/v1/realestateobjects/complexes", retry_after=1)
        run_sync(base_url=bloxs_simulator.url, key_secret=bloxs_simulator.bloxs_credentials)
        assert len(bloxs_simulator.seen("GET", "/api/v1/realestateobjects/complexes")) == 2

It provides:

``bloxs_simulator``
    a running :class:`~requests_bloxs_errors.simulator.Simulator`, fresh for
    each test, with the settings of the test's ``bloxs_simulator`` marker:
    ``@pytest.mark.bloxs_simulator(window=2.0, limits={"get": 20},
    faults=lambda sim: sim.maintenance(30))``: any keyword of ``Simulator``,
    and ``faults``, a callable given the running simulator before the test
    starts (to script its faults). A marker on a class or module applies to
    each of its tests; the one nearest the test wins. With
    ``dealcloud_port=0`` it serves DealCloud on an origin of its own
    (``bloxs_simulator.bloxs_url``, ``bloxs_simulator.dealcloud_url``), as
    production does; ``bloxs_simulator.summary()`` counts what arrived.
``bloxs_simulator_factory``
    ``bloxs_simulator_factory(**settings)`` starts one more simulator with
    those settings (the same keywords as the marker); all of them stop when
    the test ends.
``bloxs_clock``
    the clock the simulators run on unless their settings name one:
    :data:`~requests_bloxs_errors.clock.SYSTEM`. Override the fixture (a
    fixture of that name in your ``conftest.py``, module or class) to return
    a :class:`~requests_bloxs_errors.clock.FakeClock`, and give the same
    object, as a test's ``bloxs_clock`` argument, to the adapter and the
    credential: the test then never sleeps.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from ..clock import SYSTEM, Clock
from ..simulator import Simulator

__all__ = [
    "SimulatorFactory",
    "bloxs_clock",
    "bloxs_simulator",
    "bloxs_simulator_factory",
    "pytest_configure",
]

#: The marker that holds the ``bloxs_simulator`` fixture's settings.
MARKER = "bloxs_simulator"


class SimulatorFactory(Protocol):
    """What the ``bloxs_simulator_factory`` fixture is: starts one simulator a call."""

    def __call__(
        self, *, faults: Callable[[Simulator], object] | None = None, **settings: Any
    ) -> Simulator:
        """A running simulator with ``settings`` (``Simulator``'s keywords; ``clock``
        defaults to the ``bloxs_clock`` fixture's), ``faults(simulator)`` called first."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (suites that run with ``--strict-markers`` accept it)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): the settings of the bloxs_simulator fixture's simulator: "
        "any keyword of requests_bloxs_errors.simulator.Simulator (window, limits, "
        "dealcloud_port=0 for DealCloud on an origin of its own, bloxs_token_lifetime, "
        "clock, ...) and faults, a callable given the running simulator before the test "
        "starts",
    )


def _settings(given: dict[str, Any], origin: str) -> dict[str, Any]:
    """``given``, checked against ``Simulator``'s keywords (and ``faults``)."""
    known = set(inspect.signature(Simulator).parameters) | {"faults"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(
            f"{origin} got unknown settings {', '.join(map(repr, unknown))}; it takes "
            f"keywords of Simulator, and faults: {', '.join(sorted(known))}"
        )
    faults = given.get("faults")
    if faults is not None and not callable(faults):
        raise TypeError(
            f"{origin}: faults must be a callable given the running simulator "
            f"(such as lambda sim: sim.maintenance(30)), not {type(faults).__name__}"
        )
    return given


@pytest.fixture
def bloxs_clock() -> Clock:
    """The clock the ``bloxs_simulator`` fixture (and the factory's simulators) run on
    unless their settings name one: the real clock. Override it to return a
    :class:`~requests_bloxs_errors.clock.FakeClock`, and pass the same object to
    the adapter and the credential."""
    return SYSTEM


@pytest.fixture
def bloxs_simulator_factory(bloxs_clock: Clock) -> Iterator[SimulatorFactory]:
    """Start simulators with the settings given (``Simulator``'s keywords, and
    ``faults``); every one stops when the test ends."""
    started: list[Simulator] = []

    def make(*, faults: Callable[[Simulator], object] | None = None, **settings: Any) -> Simulator:
        _settings({**settings, "faults": faults}, "bloxs_simulator_factory()")
        simulator = Simulator(**{"clock": bloxs_clock, **settings})
        simulator.start()
        started.append(simulator)
        if faults is not None:
            faults(simulator)
        return simulator

    try:
        yield make
    finally:
        for simulator in reversed(started):
            simulator.stop()


@pytest.fixture
def bloxs_simulator(
    request: pytest.FixtureRequest, bloxs_simulator_factory: SimulatorFactory
) -> Simulator:
    """A running Bloxs/DealCloud simulator on loopback, fresh for each test, with the
    settings of the test's ``bloxs_simulator`` marker (none: the defaults)."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return bloxs_simulator_factory()
    if marker.args:
        raise TypeError(
            f"the {MARKER} marker takes keywords only (window=2.0, ...), not {marker.args!r}"
        )
    settings = _settings(dict(marker.kwargs), f"the {MARKER} marker")
    return bloxs_simulator_factory(**settings)
