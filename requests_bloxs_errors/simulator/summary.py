"""What reached a simulator, counted: :class:`Summary` and :func:`summarize`.

The counts the ``simulate`` command prints when it stops, and that a test can
assert: requests per category (Bloxs's rate-limit types, DealCloud's token
endpoint and its data), token requests per credential, and the 429s given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..credentials.providers import DEALCLOUD_TOKEN_PATH

if TYPE_CHECKING:
    from .api import Seen

__all__ = ["BLOXS", "CATEGORIES", "DEALCLOUD", "VENDORS", "Summary", "summarize", "vendor_of"]

BLOXS, DEALCLOUD = "bloxs", "dealcloud"
#: Each API's name, as printed.
VENDORS: Mapping[str, str] = {BLOXS: "Bloxs", DEALCLOUD: "DealCloud"}

#: Every category a request is counted in, and what it is called: Bloxs's rate-limit
#: types (``Seen.category``), then DealCloud's token endpoint and its data.
CATEGORIES: Mapping[str, str] = {
    "authorization": "Bloxs authorization",
    "download": "Bloxs downloads",
    "filter": "Bloxs filters",
    "update": "Bloxs data updates",
    "get": "Bloxs other GETs",
    "token": "DealCloud token",
    "dealcloud": "DealCloud data",
}


def vendor_of(path: str) -> str:
    """The API a path belongs to: DealCloud's token endpoint and ``/api/rest/...``
    are DealCloud's, everything else is Bloxs's."""
    if path == DEALCLOUD_TOKEN_PATH or path.startswith("/api/rest/"):
        return DEALCLOUD
    return BLOXS


@dataclass(frozen=True)
class Summary:
    """What reached the simulator.

    Each mapping holds only what happened (a category no request fell in is
    absent): ``summary.requests.get("download", 0)``.
    """

    #: Requests per category (a key of :data:`CATEGORIES`) that reached their own API.
    requests: Mapping[str, int] = field(default_factory=dict)
    #: Token requests per API (``"bloxs"``, ``"dealcloud"``) and credential: the
    #: ``apiKey`` or ``client_id`` each named, whatever its answer.
    tokens: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: 429s given per category, the rate limits' and scripted ones alike.
    throttled: Mapping[str, int] = field(default_factory=dict)
    #: Requests that reached the other API's origin (each got 404 there, and is
    #: counted here only).
    misdirected: int = 0
    #: Connections reset without an answer (:meth:`Simulator.drop`).
    dropped: int = 0

    @property
    def total(self) -> int:
        """Every request received."""
        return sum(self.requests.values()) + self.misdirected


def summarize(seen: Iterable[Seen]) -> Summary:
    """Count ``seen`` (a simulator's :attr:`~.api.Simulator.requests`)."""
    requests: Counter[str] = Counter()
    throttled: Counter[str] = Counter()
    tokens: dict[str, Counter[str]] = {}
    misdirected = dropped = 0
    for record in seen:
        if record.misdirected:
            misdirected += 1
            continue
        requests[record.category] += 1
        if record.status == 429:
            throttled[record.category] += 1
        if record.status is None:
            dropped += 1
        if record.credential is not None:
            tokens.setdefault(record.vendor, Counter())[record.credential] += 1
    return Summary(
        requests=dict(requests),
        tokens={vendor: dict(counts) for vendor, counts in tokens.items()},
        throttled=dict(throttled),
        misdirected=misdirected,
        dropped=dropped,
    )
