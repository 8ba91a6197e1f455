"""A circuit breaker per host: :class:`CircuitBreaker`, and the step that applies it.

A call to a host counts as *failed* when its final outcome, after the
adapter's retries, is a 5xx, a connection error or a timeout; any other
outcome (a success, a 4xx, a 429) resets the host's count. After
``failures`` failed calls in a row the host's circuit opens: calls to it
raise :class:`~requests_bloxs_errors.CircuitOpenError` at once, without
touching the network. After ``open_for`` seconds one call goes through as a
probe while the others still fail fast; its success closes the circuit, its
failure opens it again for twice as long (at most ``max_open_for``, by
default four times ``open_for``). A 503
whose ``Retry-After`` is longer than the adapter waits for (announced
maintenance) opens the circuit for that long at once.

A closed circuit costs a dictionary lookup and an attribute read per call:
no lock is taken while a request is in flight, and only state changes lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from requests.exceptions import ConnectionError, Timeout

from ..clock import SYSTEM, Clock
from ..errors.classify import classify
from ..errors.parsing import retry_after_from_headers
from ..errors.responses import is_local
from ..events import AlertEvent
from ..exceptions import CircuitOpenError, ServerError
from ..pipeline.steps import Step
from ..storage import ProcessLock

if TYPE_CHECKING:
    from requests import Response

    from ..pipeline.call import Call
    from ..pipeline.failures import Failure

__all__ = ["CircuitBreaker", "Circuits"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
#: Transport failures that say the host is down (not a bad certificate or URL).
_DOWN_KINDS = frozenset({"not_sent", "no_answer"})
#: The longest announced maintenance holds a circuit open when ``max_open_for`` is not set.
MAX_MAINTENANCE = 24 * 3600.0
#: Seconds a probe with neither a deadline nor a timeout may take before another
#: call replaces it (a probe that never reports back must not close the way forever).
PROBE_TIMEOUT = 300.0


@dataclass
class _Circuit:
    """One host's state. Read without a lock; changed under :attr:`Circuits._lock`."""

    state: str = CLOSED
    failures: int = 0
    open_until: float = 0.0  # clock.monotonic()
    opened_for: float = 0.0
    probe_until: float | None = None  # while a probe is in flight: when it counts as lost
    rejected: int = 0
    trace_id: str | None = None
    #: Why it opened, for the alert ("failed 3 call(s) in a row", "announced maintenance").
    reason: str = ""
    #: This outage was announced (one ``circuit_open`` alert until the circuit closes).
    alerted: bool = False


class CircuitBreaker:
    """Fail fast while a host keeps failing; see the module docstring.

    Usage::

        >>> rbe.mount(session, "https://acme.bloxs.io/",
        ...           circuit_breaker=rbe.CircuitBreaker(failures=5, open_for=30))

    :param failures: failed calls in a row that open a host's circuit.
    :param open_for: seconds the circuit stays open before one probe is let through.
    :param max_open_for: the longest it stays open after failed probes (it
        doubles with each), in seconds; by default four times ``open_for``, so
        a host that comes back is used again within that time plus one probe.
        Announced maintenance (a 503 with a long ``Retry-After``) holds it open
        for at most this long when it is given, else for at most a day
        (:data:`MAX_MAINTENANCE`).
    :param clock: where time comes from (:data:`~requests_bloxs_errors.clock.SYSTEM`).
    :raises ValueError, TypeError: on bad values.
    """

    def __init__(
        self,
        failures: int = 5,
        open_for: float = 30.0,
        *,
        max_open_for: float | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ValueError(f"failures must be a whole number >= 1, got {failures!r}")
        given = max_open_for
        if max_open_for is None:
            max_open_for = 4 * open_for if isinstance(open_for, (int, float)) else open_for
        for name, value in (("open_for", open_for), ("max_open_for", max_open_for)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        self.failures = failures
        self.open_for = float(open_for)
        self.max_open_for = max(float(max_open_for), self.open_for)
        #: The longest announced maintenance is believed, in seconds.
        self.max_maintenance = self.max_open_for if given is not None else MAX_MAINTENANCE
        self.clock = clock
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._circuits: dict[str, _Circuit] = {}
        self._lock = ProcessLock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_circuits", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"CircuitBreaker(failures={self.failures}, open_for={self.open_for:g})"

    def state(self, host: str) -> str:
        """The state of one host's circuit.

        ``"closed"``: calls go (a host never seen is closed); ``"open"``: calls
        fail fast until the probe time; ``"half-open"``: one probe is in flight
        and every other call still fails fast. Usage::

            >>> breaker.state("https://acme.bloxs.io:443")
            'closed'

        :param host: the host as circuits are kept, ``scheme://host:port``
            (the port always written).
        """
        circuit = self._circuits.get(host)
        return CLOSED if circuit is None else circuit.state

    def states(self) -> dict[str, str]:
        """Every host this breaker has seen, and its circuit's state (a copy)."""
        return {host: circuit.state for host, circuit in list(self._circuits.items())}

    def _circuit(self, host: str) -> _Circuit:
        circuit = self._circuits.get(host)
        if circuit is None:
            with self._lock:
                circuit = self._circuits.setdefault(host, _Circuit())
        return circuit

    # -- the decisions; each returns the alert to send, if any ------------------

    def admit(self, host: str, probe_for: float | None = None) -> tuple[bool, float, bool]:
        """Whether a call to ``host`` may go now: ``(admitted, seconds until a probe,
        this call is the probe)``.

        The first call after ``open_for`` becomes the probe (the circuit turns
        half-open). While it is in flight every other call is refused; one that
        never reports back is replaced once ``probe_for`` seconds have passed
        (its deadline or timeout; :data:`PROBE_TIMEOUT` when None).
        """
        circuit = self._circuits.get(host)
        if circuit is None or circuit.state == CLOSED:
            return True, 0.0, False
        now = self.clock.monotonic()
        with self._lock:
            if circuit.state == CLOSED:
                return True, 0.0, False
            probe_due = circuit.open_until
            if circuit.state == HALF_OPEN and circuit.probe_until is not None:
                probe_due = circuit.probe_until  # a probe is in flight
            if now >= probe_due:
                circuit.state = HALF_OPEN
                circuit.probe_until = now + (PROBE_TIMEOUT if probe_for is None else probe_for)
                return True, 0.0, True
            circuit.rejected += 1
            return False, probe_due - now, False

    def record(
        self, host: str, failed: bool, trace_id: str | None = None, *, probe: bool = False
    ) -> tuple[str, _Circuit] | None:
        """Count a call's final outcome; returns ``(alert kind, circuit)`` on a change
        an operator should hear of: the first opening of an outage, and its end.

        :param probe: the call was the circuit's probe. Only the probe's failure
            reopens a half-open circuit: a call let through before the circuit
            opened may still be failing its retries meanwhile.
        """
        circuit = self._circuits.get(host)
        if not failed and (circuit is None or (circuit.state == CLOSED and not circuit.failures)):
            return None  # the common case: a success on a healthy host, no lock
        circuit = circuit or self._circuit(host)
        with self._lock:
            if not failed:
                was = circuit.state
                circuit.state, circuit.failures, circuit.probe_until = CLOSED, 0, None
                circuit.opened_for = 0.0
                circuit.alerted = False
                return ("circuit_closed", circuit) if was != CLOSED else None
            circuit.failures += 1
            circuit.trace_id = trace_id or circuit.trace_id
            if circuit.state == HALF_OPEN and probe:  # the probe failed: open again, longer
                return self._open(circuit, min(circuit.opened_for * 2, self.max_open_for))
            if circuit.state == CLOSED and circuit.failures >= self.failures:
                circuit.reason = f"failed {circuit.failures} call(s) in a row"
                return self._open(circuit, self.open_for)
            return None

    def release_probe(self, host: str) -> None:
        """The probe was not sent after all (refused by a later step): let another go."""
        circuit = self._circuits.get(host)
        if circuit is None:
            return
        with self._lock:
            if circuit.state == HALF_OPEN:
                circuit.probe_until = None

    def hold(
        self, host: str, seconds: float, trace_id: str | None = None
    ) -> tuple[str, _Circuit] | None:
        """Open ``host``'s circuit for ``seconds`` of announced maintenance, at most
        :attr:`max_maintenance`."""
        seconds = min(seconds, self.max_maintenance)
        circuit = self._circuit(host)
        with self._lock:
            now = self.clock.monotonic()
            if circuit.state == OPEN and circuit.open_until >= now + seconds:
                return None
            circuit.trace_id = trace_id or circuit.trace_id
            circuit.reason = f"announced maintenance (503 with Retry-After {seconds:.0f}s)"
            return self._open(circuit, seconds)

    def _open(self, circuit: _Circuit, seconds: float) -> tuple[str, _Circuit] | None:
        """Open ``circuit``; the alert only for the first opening of an outage."""
        circuit.state = OPEN
        circuit.opened_for = seconds
        circuit.open_until = self.clock.monotonic() + seconds
        circuit.probe_until = None
        if circuit.alerted:
            return None
        circuit.alerted = True
        return "circuit_open", circuit


class Circuits(Step):
    """The step that applies a :class:`CircuitBreaker`: **per call**, it admits or
    refuses the call (``before_call``) and counts its outcome (``on_outcome``,
    ``on_refused``). Retries and resends of an admitted call go on; whether a
    call is its circuit's probe is kept in ``call.state``."""

    __slots__ = ("breaker",)

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    def before_call(self, call: Call) -> None:
        """Refuse a call to a host whose circuit is open."""
        admitted, wait, probe = self.breaker.admit(call.host, call.longest())
        if probe:
            call.state[self] = True
        if admitted:
            return
        raise call.not_sent(
            CircuitOpenError,
            status=503,
            kind="circuit_open",
            reason=(
                f"the circuit for {call.host} is open after repeated failures; a probe "
                f"may go in {wait:.1f}s"
            ),
            action=(
                f"The API at {call.host} keeps failing. Try again in {wait:.0f}s or later; "
                "queue the work (outbox=) rather than block on it."
            ),
            wait=wait,
        )

    def on_outcome(self, call: Call, response: Response | None, failure: Failure | None) -> None:
        """Count the call's final outcome for its host (a reply the adapter made itself
        says nothing of it)."""
        host = call.host
        if response is not None and is_local(response):
            if self._probe(call):
                self.breaker.release_probe(host)
            return
        if response is not None:
            status = response.status_code
            info = classify(response) if status >= 500 else None  # (cached by the adapter)
            trace = info.trace_id if info is not None else None
            announced = self._announced(call, response) if status == 503 else None
            if announced is not None:  # maintenance: open for as long as it says
                change = self.breaker.hold(host, announced, trace)
            else:
                change = self.breaker.record(host, status >= 500, trace, probe=self._probe(call))
        elif failure is not None:
            if failure.rule.kind not in _DOWN_KINDS:
                if self._probe(call):
                    self.breaker.release_probe(host)
                return  # a bad certificate or URL says nothing about the host
            change = self.breaker.record(host, True, probe=self._probe(call))
        else:
            return
        if change is not None:
            call.hooks.alert(_alert(*change, host, self.breaker))

    def on_refused(self, call: Call, error: BaseException) -> None:
        """A call that ended before it was sent: its token fetch found the API down
        (a failure of the host), or a later step refused it (a probe not sent)."""
        if isinstance(error, CircuitOpenError):
            return
        if isinstance(error, (ConnectionError, Timeout, ServerError)):
            trace = error.trace_id if isinstance(error, ServerError) else None
            change = self.breaker.record(call.host, True, trace, probe=self._probe(call))
            if change is not None:
                call.hooks.alert(_alert(*change, call.host, self.breaker))
        elif self._probe(call):
            self.breaker.release_probe(call.host)

    def _probe(self, call: Call) -> bool:
        """Whether ``call`` is its circuit's probe."""
        return bool(call.state.get(self, False))

    @staticmethod
    def _announced(call: Call, response: Response) -> float | None:
        """The wait a 503 announces, when longer than the adapter waits for (maintenance)."""
        retry_after = retry_after_from_headers(response.headers, now=call.clock.time())
        limit = call.max_retry_after
        if retry_after is None or limit is None or retry_after <= limit:
            return None
        return retry_after


def _alert(kind: str, circuit: _Circuit, host: str, breaker: CircuitBreaker) -> AlertEvent:
    clock = breaker.clock
    now = clock.time()
    if kind == "circuit_open":
        until = now + max(0.0, circuit.open_until - clock.monotonic())
        event = AlertEvent(
            kind,
            host,
            f"{host} {circuit.reason}; its calls fail fast for {circuit.opened_for:g}s, "
            "then one probe tests it",
            failures=circuit.failures,
            rejected=circuit.rejected,
            at=now,
            until=until,
            trace_id=circuit.trace_id,
        )
    else:
        event = AlertEvent(
            kind,
            host,
            f"{host} answers again; {circuit.rejected} call(s) were refused while its circuit "
            f"was open",
            rejected=circuit.rejected,
            at=now,
        )
        circuit.rejected = 0
    return event
