"""A short memory of requests for which fresh credentials did not help.

A resource that answers 403 to every token (a missing role) would otherwise
cost a token request per call: 401/403, refresh, resend, 403 again. Once a
freshly fetched credential has been refused for a request, the adapter skips
the refresh for that request (method and URL without its query) for
:attr:`FreshRefusals.TTL` seconds, as :class:`~requests_bloxs_errors.CachedTokenAuth`
remembers refused secrets. After that a 403 fetches a new token again, so a
role granted meanwhile is picked up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..clock import SYSTEM, Clock

__all__ = ["FreshRefusals"]


class FreshRefusals:
    """Thread-safe, bounded, expiring set of ``(method, url)`` keys.

    :param clock: where time comes from.
    """

    #: Seconds a refusal of fresh credentials is remembered.
    TTL = 30.0
    #: The most keys kept; the oldest go first.
    SIZE = 1024

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()

    def add(self, method: str, url: str) -> None:
        """Remember that fresh credentials were refused for ``method url``."""
        with self._lock:
            self._until[(method, url)] = self._clock.monotonic() + self.TTL
            self._until.move_to_end((method, url))
            while len(self._until) > self.SIZE:
                self._until.popitem(last=False)

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if self._clock.monotonic() < until:
                return True
            del self._until[key]
            return False
