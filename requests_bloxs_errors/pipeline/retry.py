"""The retry policy value: :class:`BloxsRetry`, a :class:`urllib3.util.Retry`.

The adapter runs its own attempt loop and uses the policy for what a urllib3
``Retry`` is good at: the counters (``total``, ``connect``, ``read``,
``status``), their history, ``status_forcelist`` and the back-off
arithmetic. Which outcomes are retried is decided by
:func:`~requests_bloxs_errors.pipeline.policy.decide`, from the error table. The value
is immutable and shared by every call; a call that needs retries gets its
own copies from ``increment()``.

Outside the adapter (in a plain ``HTTPAdapter``), it behaves as urllib3's
``Retry`` with the table's statuses, idempotent methods only, and waits that
never raise.
"""

from __future__ import annotations

import random
from itertools import takewhile
from typing import TYPE_CHECKING, Any

from urllib3.util.retry import Retry

from ..clock import SYSTEM
from ..errors.parsing import retry_after_from_headers
from ..errors.table import (
    DEFAULT_RETRY_STATUSES,
    IDEMPOTENT_METHODS,
    Retryable,
    Rule,
    retry_allowed,
    rule_for,
)
from .policy import candidate

if TYPE_CHECKING:
    from urllib3.response import BaseHTTPResponse

__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRIES",
    "BloxsRetry",
    "body_is_replayable",
]

#: Retries per call when ``max_retries`` is not given.
DEFAULT_RETRIES = 3
#: Seconds of the first back-off; each further retry doubles it.
DEFAULT_BACKOFF_FACTOR = 0.5
#: The longest back-off, in seconds.
DEFAULT_BACKOFF_MAX = 30.0
#: The longest ``Retry-After`` the adapter sleeps on, in seconds.
DEFAULT_MAX_RETRY_AFTER = 60.0


def body_is_replayable(body: object) -> bool:
    """Tell whether ``body`` can be sent again: bytes, text, or a seekable file."""
    if body is None or isinstance(body, (bytes, str, bytearray, memoryview)):
        return True
    if not (hasattr(body, "seek") and hasattr(body, "tell")):
        return False  # a generator or iterator: consumed by the first attempt
    try:
        body.tell()
        seekable = getattr(body, "seekable", None)
        return bool(seekable()) if callable(seekable) else True
    except (OSError, ValueError):
        return False


class BloxsRetry(Retry):
    """urllib3's :class:`~urllib3.util.Retry` with the error table's statuses.

    Counts (``total``, ``connect``, ``read``, ``status``, ``other``),
    ``backoff_factor`` and ``status_forcelist`` mean what they mean in
    urllib3. ``raise_on_status`` is always False (the last response is never
    lost) and ``allowed_methods`` is always the idempotent methods: in a
    :class:`~requests_bloxs_errors.BloxsAdapter` method safety comes from the
    table (a request with an ``Idempotency-Key`` counts as idempotent).

    Usage::

        >>> policy = rbe.BloxsRetry(total=5, backoff_factor=1.0, max_retry_after=120)
        >>> rbe.mount(session, "https://acme.bloxs.io/", max_retries=policy)

    :param total: retries in all, as in urllib3.
    :param max_retry_after: the longest ``Retry-After`` to sleep on, in
        seconds; a longer one ends the retries at once and the response is
        returned. None means no limit.
    :param backoff_max: the longest back-off, in seconds.
    :param backoff_jitter: up to this many random seconds added to each back-off.
    """

    def __init__(
        self,
        total: bool | int | None = DEFAULT_RETRIES,
        *,
        max_retry_after: float | None = DEFAULT_MAX_RETRY_AFTER,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        backoff_jitter: float = 0.0,
        **kwargs: Any,
    ) -> None:
        kwargs["raise_on_status"] = False
        kwargs.setdefault("allowed_methods", IDEMPOTENT_METHODS)
        kwargs.setdefault("status_forcelist", DEFAULT_RETRY_STATUSES)
        super().__init__(total, **kwargs)
        self.backoff_max = backoff_max  # urllib3 1.26 has neither argument
        self.backoff_jitter = backoff_jitter
        self.max_retry_after = max_retry_after

    def new(self, **kw: Any) -> BloxsRetry:
        """Copy this policy with some fields changed; keeps this class's own fields."""
        kw.setdefault("max_retry_after", self.max_retry_after)
        kw.setdefault("backoff_max", self.backoff_max)
        kw.setdefault("backoff_jitter", self.backoff_jitter)
        return super().new(**kw)

    @classmethod
    def from_retry(cls, retry: Retry, **overrides: Any) -> BloxsRetry:
        """Adopt a plain urllib3 ``Retry``: its counts, back-off and forcelist win.

        A ``status_forcelist`` of None becomes the table's retryable statuses;
        ``allowed_methods`` is not adopted (method safety is the table's).
        """
        params: dict[str, Any] = {
            name: getattr(retry, name)
            for name in (
                "total",
                "connect",
                "read",
                "redirect",
                "status",
                "other",
                "backoff_factor",
                "raise_on_redirect",
                "respect_retry_after_header",
                "remove_headers_on_redirect",
            )
        }
        params["status_forcelist"] = retry.status_forcelist or DEFAULT_RETRY_STATUSES
        params["backoff_max"] = getattr(retry, "backoff_max", Retry.DEFAULT_BACKOFF_MAX)
        params["backoff_jitter"] = getattr(retry, "backoff_jitter", 0.0)
        if isinstance(retry, BloxsRetry):
            params["max_retry_after"] = retry.max_retry_after
        params.update(overrides)
        return cls(**params)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        """Whether urllib3 may resend ``method`` after ``status_code`` (plain adapters only).

        The table's rule for the status, for a request without an
        ``Idempotency-Key`` (urllib3 does not show the headers here).
        """
        retry = self.retry_rule(rule_for(status_code, has_retry_after), status_code)
        if retry is None or self.total == 0:
            return False
        return retry_allowed(retry, method, False, 1.0 if has_retry_after else None)

    def retry_rule(self, rule: Rule | None, status: int) -> Retryable | None:
        """When a response with this table ``rule`` may be retried; see
        :func:`~requests_bloxs_errors.pipeline.policy.candidate`."""
        return candidate(self, rule, status)

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        """The server's requested wait in seconds; unusable values give None, never an error."""
        return retry_after_from_headers(response.headers)

    def get_backoff_time(self) -> float:
        """``backoff_factor * 2 ** (n - 1)`` plus jitter, capped; n counts consecutive failures.

        Unlike urllib3's own formula, the first retry waits too.
        """
        failures = len(
            list(takewhile(lambda h: h.redirect_location is None, reversed(self.history)))
        )
        if failures == 0 or self.backoff_factor <= 0:
            return 0.0
        value = self.backoff_factor * 2.0 ** min(failures - 1, 62)
        if self.backoff_jitter:
            value += random.random() * self.backoff_jitter
        return float(max(0.0, min(self.backoff_max, value)))

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Wait as urllib3 would (plain adapters only): ``Retry-After`` capped at
        ``max_retry_after``, else the back-off; never raises for a huge value."""
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        elif self.max_retry_after is not None:
            wait = min(wait, self.max_retry_after)
        SYSTEM.sleep(wait)
