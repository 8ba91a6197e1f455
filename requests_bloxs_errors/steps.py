"""The named places in the adapter's attempt loop where per-attempt work plugs in.

The loop in :meth:`BloxsAdapter.send() <requests_bloxs_errors.BloxsAdapter.send>`
calls each step of the adapter, in order, at four places:

``before_attempt(call)``
    Before every attempt, retries and re-authenticated resends included: take
    a permit (pacing), refuse at once (an open circuit). It may wait, bounded
    by ``call.time_left()``, or raise to end the call without sending.
``after_response(call, response, rule, retry_after)``
    After every error response (status 400 and up), before the decision:
    learn from it (a 429 pauses a category for every thread). The body has
    not been read; headers are there. It may return the seconds it now holds
    the request back (a pause it learned): the retry then waits that long.
``after_failure(call, failure)``
    After every attempt that got no response.
``on_outcome(call, response, failure)``
    Once per call, with its final response (any status) or its final
    failure: count it (a circuit breaker), keep it (an outbox).
``on_refused(call, error)``
    Once per call that ends before it is sent: a step's ``before_attempt``
    refused it (``error`` is a :class:`~requests_bloxs_errors.BloxsError`
    without a response), or its credentials could not be had (the token
    endpoint's error). ``error`` is raised to the caller next: keep the write
    (an outbox), count the host (a circuit breaker).

A step is an object with any of these methods; :class:`Step` gives no-op
defaults to subclass. Steps must not raise from the last three places:
what they observe has happened already.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from requests import Response

    from .call import Call
    from .failures import Failure
    from .table import Rule

__all__ = ["Step"]


class Step:
    """A no-op step; subclass it and override the places you need."""

    def before_attempt(self, call: Call) -> None:
        """Runs before every attempt."""

    def after_response(
        self, call: Call, response: Response, rule: Rule, retry_after: float | None
    ) -> float | None:
        """Runs after every error response, before the decision; may return a hold."""
        return None

    def after_failure(self, call: Call, failure: Failure) -> None:
        """Runs after every attempt that got no response."""

    def on_outcome(self, call: Call, response: Response | None, failure: Failure | None) -> None:
        """Runs once per call with its final response or failure."""

    def on_refused(self, call: Call, error: BaseException) -> None:
        """Runs once per call that ended before it was sent."""
