"""The pacing step: a permit before every attempt, its end after it, and lessons from
every answer.

:class:`Pacing` plugs a :class:`~requests_bloxs_errors.RateLimit` into the
adapter's attempt loop (see :mod:`.steps`):

* before every attempt, retries included, it takes a permit for the
  request's category, waiting for it within ``max_wait`` and the call's
  deadline, or raises :class:`~requests_bloxs_errors.RateLimitError`
  without sending;
* when the attempt ends (a response, any status, or a failure) it stamps
  the permit's end in the store: the window counts from there (see
  :mod:`~requests_bloxs_errors.storage.windows`); a call that ends unsent
  gives its permit back;
* after a 429 (or a 403 quota) it pauses the category for every thread and
  process sharing the store: until ``Retry-After``, else for the period the
  server stated or the category's rule has (the server's window has then
  surely turned over). A quota the body states (``maximum admitted 5 per 1
  second``, ``The limit of 10 ... per 60 seconds``) becomes the category's
  rule;
* after any response with ``X-Rate-Limit-Remaining: 0`` and an
  ``X-Rate-Limit-Reset`` time, it holds the category until that time;
* after any response with the IETF RateLimit fields
  (:mod:`~requests_bloxs_errors.errors.ratelimit_fields`), it takes the policy
  in force (``RateLimit-Policy: "default";q=100;w=60``) as the category's rule,
  unless its window is longer than the longest a learned rule may have
  (:meth:`~requests_bloxs_errors.RateLimit.bounded_rule`: a daily quota is not
  made a per-minute one), and holds the category for ``t`` seconds when
  ``RateLimit: "default";r=0;t=30`` says none remain (``t`` is also the wait
  after a 429 without ``Retry-After``).

Two clocks meet here, with one rule: **a call waits on its own clock**, the
adapter's (``call.clock``), which its deadline, its waits between attempts and
its ``paced`` seconds are measured on. The limit's clock dates what its store
keeps (a memory store's readings, an SQLite file's times; Redis keeps its own),
and the store answers in seconds, which the call then sleeps on its clock. In
production both are the real clock; a test gives one
:class:`~requests_bloxs_errors.clock.FakeClock` to both (``RateLimit(...,
clock=clock)`` and ``mount(..., clock=clock)``), and a wait for a permit is
then instant and recorded in ``clock.sleeps``. (A limit on another clock than
the adapter's is still paced by its store's answers, slept on the call's
clock: give both the same one.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors.bodies import read_error_body
from ..errors.parsing import parse_body, parse_iso8601
from ..errors.ratelimit_fields import rate_limit_fields
from ..errors.table import QUOTA_RULE
from ..events import logger
from ..exceptions import RateLimitError
from ..pipeline.steps import Step
from ..storage import WAIT_RENEW, record_timeout, store_timeout
from ..storage.windows import MAX_PAUSE, learned_ttl, permit_hold

if TYPE_CHECKING:
    from requests import PreparedRequest, Response

    from ..errors.table import Rule
    from ..pipeline.call import Call
    from ..pipeline.failures import Failure
    from .ratelimit import RateLimit

__all__ = ["Pacing"]

#: The longest hold taken from ``X-Rate-Limit-Reset`` (a clock far off must not stall a client).
MAX_RESET_HOLD = MAX_PAUSE
#: The IETF fields whose presence on a success is worth reading (see the module docstring).
_IETF_FIELDS = ("RateLimit", "RateLimit-Policy", "RateLimit-Remaining")


class Pacing(Step):
    """The :class:`~requests_bloxs_errors.pipeline.steps.Step` that applies a :class:`RateLimit`.

    Every store operation gets a share of the call's time left (see
    :func:`~requests_bloxs_errors.storage.store_timeout`): a store that cannot
    answer in time is left for in-process pacing, and the request keeps the rest.
    A wait for a permit is slept on the call's clock, the one its deadline runs
    on (see the module docstring).
    """

    __slots__ = ("_told", "limit")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        #: Key to the policy last told to the store, and when to tell it again.
        self._told: dict[str, tuple[tuple[int, float], float]] = {}

    def _where(self, request: PreparedRequest) -> tuple[str, str] | None:
        category = self.limit.category(request)
        if category is None:
            return None
        return category, self.limit.key(request, category)

    def before_attempt(self, call: Call) -> None:
        """Wait for a permit; raise :class:`RateLimitError` when none comes in time."""
        where = self._where(call.request)
        if where is None:
            return
        self._end(call)  # (an earlier attempt's, had nothing said it ended)
        category, key = where
        limit = self.limit
        rule = limit.rule(category)
        store = limit.store
        hold = permit_hold(call.attempt_seconds(), call.time_left())
        waited = 0.0
        stamp = None
        while True:
            left = call.time_left()
            bound = limit.max_wait - waited
            by_deadline = left is not None and left < bound
            if left is not None and by_deadline:
                bound = left
            bound = max(bound, 0.0)
            timeout = store_timeout(left)
            if stamp is None:
                wait, stamp, firm = store.acquire(key, rule, bound, timeout, hold=hold)
            else:  # reserved and waiting: renew it, look again at its time
                wait, stamp, firm = store.confirm(key, stamp, rule, bound, timeout, hold=hold)
            if stamp is None:
                call.take(self)
                if wait > bound:
                    raise _refusal(call, category, wait, limit.max_wait, by_deadline)
                if wait <= 0:
                    return  # no rule, no pause
            else:
                call.state[self] = (key, stamp)
                if wait <= 0 and firm:
                    return  # the usual case
            if not waited:
                logger.debug(
                    "Pacing %s %s: waiting %.2fs for a %r permit",
                    call.method,
                    call.url,
                    wait,
                    category,
                )
            if stamp is not None:  # waiting: renew the reservation at least this often
                wait = min(wait, WAIT_RENEW)
            call.paced += wait
            waited += wait
            call.clock.sleep(wait)  # the call's clock, as its deadline (module docstring)
            # then ask again: a pause that ended, a permit to renew, to confirm, or whose
            # time has come (the store marks it sent; a pause set meanwhile moves it)

    def _end(self, call: Call, *, cancel: bool = False) -> None:
        """Stamp the end of the call's permit (or give it back), once."""
        held = call.take(self)
        if held is None:
            return
        key, stamp = held
        store = self.limit.store
        timeout = record_timeout(call.time_left())  # (past the deadline too)
        if cancel:
            store.cancel(key, stamp, timeout)
        else:
            store.finish(key, stamp, timeout)

    def after_failure(self, call: Call, failure: Failure) -> None:
        """The attempt ended without a response."""
        self._end(call)

    def on_refused(self, call: Call, error: BaseException) -> None:
        """Nothing was sent after all (another step refused, or no credentials): the
        permit goes back."""
        self._end(call, cancel=True)

    def after_response(
        self, call: Call, response: Response, rule: Rule, retry_after: float | None
    ) -> float | None:
        """Learn from an error response; return how long the category is now held."""
        self._end(call)  # (the server has answered: it counted the request by now)
        where = self._where(call.request)
        if where is None:
            return None
        category, key = where
        if response.status_code != 429 and rule is not QUOTA_RULE:
            return self._header_hold(call, category, key, response)
        fields = rate_limit_fields(response.headers)
        if fields is not None and fields.policy is not None:
            self._learn_policy(call, category, key, fields.policy)
        body, _ = read_error_body(response, deadline=call.deadline, clock=call.clock)
        parsed = parse_body(body, response.headers.get("Content-Type")) if body else None
        quota = parsed.quota if parsed is not None else None
        trace = parsed.trace_id if parsed is not None else None
        limit = self.limit
        store = limit.store
        if quota is not None:
            quota = limit.bounded_rule(category, *quota)
            store.learn(key, *quota, timeout=record_timeout(call.time_left()))
        hold = retry_after
        if hold is None and fields is not None and fields.reset:
            hold = fields.reset  # (RateLimit: ...;t=N, when Retry-After says nothing)
        if hold is None:
            known = quota or limit.rule(category)
            hold = known[1] if known is not None else None
        if hold is None or hold <= 0:
            return None
        hold = limit.bounded_pause(category, hold)
        store.pause(key, hold, limit.rule(category), record_timeout(call.time_left()))
        logger.info(
            "Rate limit: %r of %s paused for %.2fs after %d%s%s",
            category,
            call.url,
            hold,
            response.status_code,
            f" (the server states {quota[0]} per {quota[1]:g}s)" if quota else "",
            f"; trace id {trace}" if trace else "",
        )
        return hold

    def on_outcome(self, call: Call, response: Response | None, failure: Any) -> None:
        """Stamp the end of the last attempt (give the permit back when an exception
        interrupted the call before it was sent); hold the category when a success
        says the quota is spent."""
        interrupted = failure is not None and failure.rule.kind == "interrupted"
        self._end(call, cancel=interrupted and not call.in_flight)
        if response is None or response.status_code >= 400:
            return
        headers = response.headers
        if "X-Rate-Limit-Remaining" not in headers and not any(
            name in headers for name in _IETF_FIELDS
        ):
            return
        where = self._where(call.request)
        if where is not None:
            self._header_hold(call, *where, response)

    def _header_hold(self, call: Call, category: str, key: str, response: Response) -> float | None:
        """What a response's rate-limit headers say: a rule to learn (the IETF
        ``RateLimit-Policy``), a hold until the quota is renewed (none remaining,
        as ``X-Rate-Limit-*`` or ``RateLimit`` say it); how long the category is
        now held, if it is."""
        fields = rate_limit_fields(response.headers)
        if fields is not None and fields.policy is not None:
            self._learn_policy(call, category, key, fields.policy)
        hold = self._reset_hold(response)
        if hold is None and fields is not None and fields.remaining == 0 and fields.reset:
            hold = min(fields.reset, MAX_RESET_HOLD)
        if hold is None or hold <= 0:
            return None
        limit = self.limit
        hold = limit.bounded_pause(category, hold)
        limit.store.pause(key, hold, limit.rule(category), record_timeout(call.time_left()))
        return hold

    def _reset_hold(self, response: Response) -> float | None:
        """``X-Rate-Limit-Remaining: 0`` with a reset time: the seconds until then."""
        headers = response.headers
        if headers.get("X-Rate-Limit-Remaining", "").strip() != "0":
            return None
        reset = parse_iso8601(headers.get("X-Rate-Limit-Reset"))
        if reset is None:
            return None
        return min(reset - self.limit.clock.time(), MAX_RESET_HOLD)

    def _learn_policy(self, call: Call, category: str, key: str, policy: tuple[int, float]) -> None:
        """Take the server's quota policy as ``category``'s rule: told to the store when
        it is new to this process, or half its time to live has passed (a response
        that repeats it costs no store write). A policy whose window is longer than
        a learned rule may have is not taken (its ``r=0`` still holds the category)."""
        limit = self.limit
        quota, window = policy
        if window > limit.longest_learned(category):
            return
        now = limit.clock.monotonic()
        told = self._told.get(key)
        if told is not None and told[0] == policy and now < told[1]:
            return
        self._told[key] = (policy, now + learned_ttl(window) / 2)
        limit.store.learn(key, quota, window, timeout=record_timeout(call.time_left()))


def _refusal(
    call: Call, category: str, wait: float, bound: float, by_deadline: bool
) -> RateLimitError:
    """The error for a permit that cannot come in time (nothing was sent)."""
    why = "the call's deadline" if by_deadline else f"max_wait ({bound:g}s)"
    return call.not_sent(
        RateLimitError,
        status=429,
        kind="rate_limited",
        reason=(
            f"the next {category!r} permit of the client-side rate limit comes in "
            f"{wait:.2f}s, after {why}"
        ),
        action=(
            f"Send it again in {wait:.1f}s or later, raise max_wait or the deadline, "
            "or spread the work over more time: the quota is shared by every client "
            "of this API that uses the same storage."
        ),
        wait=wait,
    )
