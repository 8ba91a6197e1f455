"""The steps of a call: :class:`Step`, :class:`Pipeline`, and the one function that
puts them in order (:func:`steps_in_order`).

A step is an object with any of these methods; the adapter's loop
(:meth:`BloxsAdapter.send() <requests_bloxs_errors.BloxsAdapter.send>`)
calls each step that has one, in the pipeline's order, at its place:

``before_call(call)``
    **Once per call**, before its first attempt: admit or refuse the call
    (a circuit breaker), start what spans the call (a trace). Raising a
    :class:`~requests_bloxs_errors.BloxsError` refuses the call: nothing is
    sent, every step's ``on_refused`` runs, and the caller gets the error
    (or, when errors are not raised, a local reply that says the same).
    Returning a :class:`requests.Response` answers the call without sending
    it (a script's own token request): the steps' ``on_outcome`` sees it.
``before_attempt(call)``
    **Before every attempt**, retries and re-authenticated resends included:
    take a permit (pacing). It may wait, bounded by ``call.time_left()``;
    raising a :class:`~requests_bloxs_errors.BloxsError` refuses the call as
    ``before_call`` does.
``after_response(call, response, rule, retry_after)``
    **After every error response** (status 400 and up), before the decision:
    learn from it (a 429 pauses a category for every thread). The body has
    not been read; headers are there. It may return the seconds it now holds
    the request back (a pause it learned): the retry then waits that long.
``after_failure(call, failure)``
    **After every attempt that got no response.**
``on_outcome(call, response, failure)``
    **Once per call**, with its final response (any status) or its final
    failure: count it (a circuit breaker), keep it (an outbox).
``on_refused(call, error)``
    **Once per call that ends before it is sent**: a step refused it, or its
    credentials could not be had (the token endpoint's error). ``error`` is
    what the caller gets next.

The last four places observe what has happened: an exception a step raises
there is logged and ignored, so observing a call never changes its outcome.
A step whose class sets ``observes = True`` (telemetry, your metrics) only
observes at every place: what it raises in ``before_call`` or
``before_attempt`` is logged and ignored too, and it can neither refuse nor
answer a call.

However a call ends, every step hears of it once: ``on_outcome`` with the
final response or failure, or ``on_refused``. An exception that leaves the
loop in the middle (a header value that cannot be encoded, a body generator
that raised, a signal handler's timeout) reaches ``on_outcome`` as a
failure of kind ``"interrupted"`` (its ``exception`` is what was raised),
so that every step gives back what it took (a permit, a probe, a span);
then the caller gets that exception unchanged.
Per-call data of any step lives in ``call.state`` (a dict; key it by the
step). :class:`Step` gives no-op defaults to subclass.

Usage::

    >>> class Timing(rbe.Step):
    ...     def before_call(self, call):
    ...         call.state[self] = time.monotonic()
    ...     def on_outcome(self, call, response, failure):
    ...         print(call.method, call.url, time.monotonic() - call.state[self])
    >>> rbe.mount(session, "https://acme.bloxs.io/", steps=[Timing()])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..events import logger

if TYPE_CHECKING:
    from requests import Response

    from ..errors.table import Rule
    from .call import Call
    from .failures import Failure

__all__ = ["PLACES", "Pipeline", "Step", "steps_in_order"]

#: The places a step may act at, in the order a call meets them.
PLACES = (
    "before_call",
    "before_attempt",
    "after_response",
    "after_failure",
    "on_outcome",
    "on_refused",
)


class Step:
    """A step that does nothing: subclass it and override the places you need.

    See the module docstring for when each runs and what it may do.
    """

    #: True for a step that only observes (see the module docstring): nothing it
    #: raises, at any place, changes a call.
    observes = False

    def before_call(self, call: Call) -> Response | None:
        """Runs once per call, before its first attempt; may raise a ``BloxsError``, or
        return a response that answers the call without sending it."""
        return None

    def before_attempt(self, call: Call) -> None:
        """Runs before every attempt; may wait, or raise a ``BloxsError``."""

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


def _acts_at(step: object, place: str) -> Callable[..., Any] | None:
    """The step's method for ``place``, or None when it has none (or Step's no-op)."""
    method = getattr(step, place, None)
    if method is None or not callable(method):
        return None
    if getattr(type(step), place, None) is getattr(Step, place):
        return None  # inherited no-op: skip it on every call
    return method  # type: ignore[no-any-return]


def check_steps(steps: object) -> tuple[object, ...]:
    """``steps=`` as given: a list of objects, each with at least one place.

    :raises TypeError: naming what is wrong.
    """
    if steps is None:
        return ()
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise TypeError(f"steps must be a list of rbe.Step objects, not {type(steps).__name__}")
    found = tuple(steps)
    for step in found:
        if not any(callable(getattr(step, place, None)) for place in PLACES):
            raise TypeError(
                f"{type(step).__name__} is not a step: a step has one of the methods "
                f"{', '.join(PLACES)} (subclass rbe.Step)"
            )
    return found


class Pipeline:
    """The ordered steps of an adapter, and the calls at each place.

    Each place keeps only the steps that act there, so a place no step uses
    costs nothing.

    :param steps: the steps, in order (see :func:`steps_in_order`).
    """

    __slots__ = ("_at", "steps")

    def __init__(self, steps: Iterable[object]) -> None:
        self.steps = tuple(steps)
        self._at: dict[str, tuple[Callable[..., Any], ...]] = {
            place: tuple(
                _observing(m) if place in _DECIDING and getattr(s, "observes", False) else m
                for s, m in ((s, _acts_at(s, place)) for s in self.steps)
                if m is not None
            )
            for place in PLACES
        }

    def with_steps(self, steps: Iterable[object]) -> Pipeline:
        """This pipeline with ``steps`` after its own."""
        return Pipeline((*self.steps, *steps))

    def before_call(self, call: Call) -> Response | None:
        """Run every ``before_call`` until one answers the call; a refusal propagates."""
        for method in self._at["before_call"]:
            answer = method(call)
            if answer is not None:
                return answer  # type: ignore[no-any-return]
        return None

    def before_attempt(self, call: Call) -> None:
        """Run every ``before_attempt``; a refusal propagates."""
        for method in self._at["before_attempt"]:
            method(call)

    def after_response(
        self, call: Call, response: Response, rule: Rule, retry_after: float | None
    ) -> float | None:
        """Run every ``after_response``; the longest hold any of them returned."""
        hold: float | None = None
        for method in self._at["after_response"]:
            held = _observe(method, call, response, rule, retry_after)
            if isinstance(held, (int, float)) and (hold is None or held > hold):
                hold = float(held)
        return hold

    def after_failure(self, call: Call, failure: Failure) -> None:
        """Run every ``after_failure``."""
        for method in self._at["after_failure"]:
            _observe(method, call, failure)

    def on_outcome(self, call: Call, response: Response | None, failure: Failure | None) -> None:
        """Run every ``on_outcome``: the call has ended (at most once per call)."""
        if call.ended:
            return
        call.ended = True
        for method in self._at["on_outcome"]:
            _observe(method, call, response, failure)

    def on_refused(self, call: Call, error: BaseException) -> None:
        """Run every ``on_refused``: the call has ended unsent (at most once per call)."""
        if call.ended:
            return
        call.ended = True
        for method in self._at["on_refused"]:
            _observe(method, call, error)


#: The places where a step may change the call (refuse it, answer it, wait).
_DECIDING = frozenset({"before_call", "before_attempt"})


def _observing(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a step that only observes, at a deciding place: what it raises
    is logged and ignored, and it answers nothing."""

    def observed(call: Call) -> None:
        _observe(method, call)

    observed.__name__ = getattr(method, "__name__", "?")
    return observed


def _observe(method: Callable[..., Any], *args: Any) -> Any:
    """Call a step at a place that observes; what it raises is logged, never raised."""
    try:
        return method(*args)
    except Exception:
        owner = getattr(method, "__self__", method)
        logger.exception(
            "The step %s raised in %s; ignored",
            type(owner).__name__,
            getattr(method, "__name__", "?"),
        )
        return None


def steps_in_order(
    *,
    credential: Any = None,
    circuit_breaker: Any = None,
    rate_limit: Any = None,
    outbox: Any = None,
    telemetry: Any = None,
    extra: Iterable[object] = (),
) -> tuple[object, ...]:
    """Every step of an adapter, in the order they run at each place: the one place
    that order is set.

    ===============================  =============================================
    step                             where it acts
    ===============================  =============================================
    a script's own token requests    **per call**: ``before_call`` answers a
                                     request to the credential's token endpoint
                                     for its own credentials with its token, and
                                     signs none (a credential with a token URL).
    the circuit breaker              **per call**: ``before_call`` refuses a call
                                     to a host whose circuit is open (before any
                                     permit is waited for); ``on_outcome`` and
                                     ``on_refused`` count the host's failures.
    pacing (the rate limit)          **per attempt**: ``before_attempt`` takes a
                                     permit, ``after_response`` learns pauses
                                     and quotas; **per call**: ``on_outcome``
                                     reads ``X-Rate-Limit-*`` of a success.
    the outbox                       **per call**: ``on_outcome`` and
                                     ``on_refused`` keep a write that failed
                                     curably.
    telemetry                        **per attempt**: a span from
                                     ``before_attempt`` (after any wait for a
                                     permit) to the response or failure; **per
                                     call**: ``on_outcome`` and ``on_refused``
                                     end it (only while an OpenTelemetry SDK is
                                     configured; see :mod:`~requests_bloxs_errors.telemetry`).
    your ``steps=``                  where their methods say, after the above.
    ===============================  =============================================

    The features' modules load only when the adapter has the feature.
    """
    steps: list[object] = []
    if credential is not None and callable(getattr(credential, "is_token_request", None)):
        from ..credentials.token_requests import TokenRequests  # noqa: PLC0415

        steps.append(TokenRequests(credential, rate_limit))
    if circuit_breaker is not None:
        from ..resilience.breaker import Circuits  # noqa: PLC0415 - loaded when used

        steps.append(Circuits(circuit_breaker))
    if rate_limit is not None:
        from ..resilience.pacing import Pacing  # noqa: PLC0415

        steps.append(Pacing(rate_limit))
    if outbox is not None:
        from ..resilience.outbox import Queueing  # noqa: PLC0415

        steps.append(Queueing(outbox))
    if telemetry is not None:
        steps.append(telemetry)
    steps.extend(extra)
    return tuple(steps)
