"""pytest plugin: the ``bloxs_simulator`` fixture.

Installed with the package (entry point ``pytest11``), so any test suite in
an environment that has requests-bloxs-errors can write::

    def test_my_sync_job(bloxs_simulator):
        bloxs_simulator.fail(503, path="/api/v1/realestateobjects/complexes", retry_after=1)
        run_sync(base_url=bloxs_simulator.url, key_secret=bloxs_simulator.bloxs_credentials)
        assert len(bloxs_simulator.seen("GET", "/api/v1/realestateobjects/complexes")) == 2
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..simulator import Simulator


@pytest.fixture
def bloxs_simulator() -> Iterator[Simulator]:
    """A running Bloxs/DealCloud simulator on loopback, fresh for each test."""
    with Simulator() as simulator:
        yield simulator
