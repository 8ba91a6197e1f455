"""An embedded Bloxs/DealCloud API simulator, for demos and integration tests.

Usage::

    >>> from requests_bloxs_errors.simulator import Simulator
    >>> with Simulator(window=5) as sim:
    ...     sim.fail(503, path="/api/v1/realestateobjects/complexes", times=2, retry_after=1)
    ...     ...

``Simulator(dealcloud_port=0)`` serves DealCloud on an origin of its own
(:attr:`Simulator.dealcloud_url`), as production does. In a pytest suite, the
``bloxs_simulator`` fixture (installed with this package) gives each test a
running one.
"""

from ._http import Answer, Request
from .api import (
    BLOXS_TOKEN_PATH,
    COMPLEXES,
    DEALCLOUD_TOKEN_PATH,
    DEFAULT_LIMITS,
    ENDPOINTS,
    Fault,
    Seen,
    Simulator,
)
from .summary import CATEGORIES, Summary

__all__ = [
    "BLOXS_TOKEN_PATH",
    "CATEGORIES",
    "COMPLEXES",
    "DEALCLOUD_TOKEN_PATH",
    "DEFAULT_LIMITS",
    "ENDPOINTS",
    "Answer",
    "Fault",
    "Request",
    "Seen",
    "Simulator",
    "Summary",
]
