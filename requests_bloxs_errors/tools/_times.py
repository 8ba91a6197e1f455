"""How the tools print a moment: ISO 8601 in UTC, one form everywhere.

``status``, ``outbox`` and the log lines of ``run`` all print times as
``2026-12-07T20:12:50Z`` (UTC, to the second), with the seconds left or
gone beside them where that helps (``2026-12-08T20:12:44Z (in 86394s)``).
"""

from __future__ import annotations

import time

__all__ = ["LOG_DATEFMT", "ago", "iso", "until"]

#: The ``datefmt`` of a :class:`logging.Formatter` whose ``converter`` is
#: :func:`time.gmtime`: the same form as :func:`iso`.
LOG_DATEFMT = "%Y-%m-%dT%H:%M:%SZ"


def iso(epoch: float) -> str:
    """``epoch`` (seconds since the epoch) as ``2026-12-07T20:12:50Z``."""
    return time.strftime(LOG_DATEFMT, time.gmtime(epoch))


def until(epoch: float, now: float) -> str:
    """A moment to come, with the seconds left: ``2026-12-08T20:12:44Z (in 86394s)``."""
    return f"{iso(epoch)} (in {max(0.0, epoch - now):.0f}s)"


def ago(epoch: float, now: float) -> str:
    """A moment gone, with the seconds since: ``2026-12-07T20:12:50Z (3s ago)``."""
    return f"{iso(epoch)} ({max(0.0, now - epoch):.0f}s ago)"
