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

Decisions stay in each process; what every process sees can be *published*
to a shared store for display (``status`` lists it by host and process): give
the breaker a ``storage`` URL, or the adapter hands it its rate limit's when
that one is shared (SQLite or Redis). As a call to a host ends, the host's
circuit is published if its state changed since it was last published (a
circuit that closes is published once as closed, and its record lapses); if
only the failures it counts changed, at most every :data:`PUBLISH_EVERY`
seconds; and while it is open or counts failures, again once a third of
:attr:`CircuitBreaker.publish_ttl` has passed, so that its record (which
lasts that long, an open circuit's that long past its probe time) is renewed
while calls pass. No thread runs for it: the record of a process that stopped
calling the host, or died, lapses. A host that never failed is never
published. Publishing happens after a call has ended, within
:func:`~requests_bloxs_errors.storage.store_timeout` of the time it has left
(none left: the next call publishes), and never fails a call: a store that
fails logs one WARNING and is tried again every
:data:`~requests_bloxs_errors.storage.RETRY_STORE_AFTER` seconds.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from requests.exceptions import ConnectionError, Timeout

from ..clock import SYSTEM, Clock
from ..errors.classify import classify
from ..errors.parsing import retry_after_from_headers
from ..errors.responses import is_local
from ..events import AlertEvent, logger
from ..exceptions import CircuitOpenError, ServerError
from ..pipeline.steps import Step
from ..storage import (
    CircuitBoard,
    CircuitRecord,
    NoTimeLeft,
    ProcessLock,
    StorageURL,
    holder,
    open_backend,
    parse,
    store_timeout,
)
from ..storage.fallback import Outage
from ..urls import host_of

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
#: Failures in a row that open a circuit, unless ``failures`` says otherwise.
DEFAULT_FAILURES = 5
#: Seconds a circuit stays open before its probe, unless ``open_for`` says otherwise.
DEFAULT_OPEN_FOR = 30.0
#: Seconds a probe with neither a deadline nor a timeout may take before another
#: call replaces it (a probe that never reports back must not close the way forever).
PROBE_TIMEOUT = 300.0
#: The least seconds a published circuit's record lasts without being published again
#: (:attr:`CircuitBreaker.publish_ttl` is at least this, and three times ``open_for``).
PUBLISH_TTL = 60.0
#: The least seconds between two publications of one host's circuit whose state
#: stayed the same (a state change is published at once).
PUBLISH_EVERY = 2.0
#: What a circuit's last publication showed when it is not known to the store (a
#: publication that failed, or was not tried): the next call publishes it.
_UNPUBLISHED = ("", -1)
#: The modules whose exceptions say a store failed (anything else is a bug, whose
#: traceback is logged once).
_STORE_MODULES = frozenset({"sqlite3", "redis"})


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
    #: When it entered its state (``clock.time()``).
    since: float = 0.0
    #: ``(state, failures)`` as last published (a circuit never published: as a
    #: healthy one, which needs no record).
    shown: tuple[str, int] = (CLOSED, 0)
    #: When it was last published (``clock.monotonic()``).
    shown_at: float = -math.inf


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
    :param clock: where time comes from (:data:`~requests_bloxs_errors.clock.SYSTEM`);
        its ``time()`` dates what is published.
    :param storage: where this process publishes its circuits for display
        (``status``): a storage URL whose backend keeps circuits, such as
        ``"sqlite:////var/lib/app/rbe.db"`` or ``"redis://host:6379/0"``. None:
        the adapter's rate-limit store when it is shared (see
        :meth:`publish_to`), else nothing is published. Decisions never depend
        on it.
    :raises ValueError, TypeError: on bad values.
    :raises ImportError: for a Redis URL without the ``redis`` extra.
    """

    def __init__(
        self,
        failures: int = DEFAULT_FAILURES,
        open_for: float = DEFAULT_OPEN_FOR,
        *,
        max_open_for: float | None = None,
        clock: Clock = SYSTEM,
        storage: str | None = None,
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
        #: Where circuits are published (None: nowhere); see :meth:`publish_to`.
        self.storage: StorageURL | None = (
            None if storage is None else parse(storage, what="storage", capability=CircuitBoard)
        )
        #: Seconds a published record lasts (an open circuit's: this beyond its probe
        #: time); it is published again before a third of it has passed.
        self.publish_ttl = max(PUBLISH_TTL, 3 * self.open_for)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._circuits: dict[str, _Circuit] = {}
        self._lock = ProcessLock()
        self._board: tuple[Any, Outage] | None = None  # (backend, its outage), opened on use
        self._bug_logged = False

    def __getstate__(self) -> dict[str, Any]:
        runtime = ("_circuits", "_lock", "_board", "_bug_logged")
        return {k: v for k, v in self.__dict__.items() if k not in runtime}

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
                circuit = self._circuits.setdefault(host, _Circuit(since=self.clock.time()))
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
                if circuit.state != HALF_OPEN:
                    circuit.since = self.clock.time()
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
                if was != CLOSED:
                    circuit.since = self.clock.time()
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
        if circuit.state != OPEN:
            circuit.since = self.clock.time()
        circuit.state = OPEN
        circuit.opened_for = seconds
        circuit.open_until = self.clock.monotonic() + seconds
        circuit.probe_until = None
        if circuit.alerted:
            return None
        circuit.alerted = True
        return "circuit_open", circuit

    # -- publishing, for display only -----------------------------------------------

    def publish_to(self, storage: StorageURL) -> bool:
        """Publish to ``storage`` from now on, unless this breaker has a storage
        already (given, or taken from another adapter's rate limit first); only a
        shared store (not ``memory://``) whose backend keeps circuits is taken.

        The adapter calls it with its rate limit's store. Returns whether the
        breaker now publishes to ``storage``.
        """
        if self.storage is None and storage.shared:
            try:
                parsed = parse(storage.url, what="storage", capability=CircuitBoard)
            except (ValueError, TypeError, ImportError):
                return False  # a backend of one's own that keeps no circuits
            with self._lock:
                if self.storage is None:
                    self.storage = parsed
        return self.storage is not None and self.storage.url == storage.url

    def publish(self, host: str, time_left: float | None = None) -> None:
        """Publish ``host``'s circuit when it changed, or when its record is due to be
        renewed; see the module docstring. Never raises, and takes at most
        :func:`~requests_bloxs_errors.storage.store_timeout` of ``time_left``.

        :param time_left: seconds the call that passed has left (None: no deadline).
        """
        if self.storage is None:
            return
        circuit = self._circuits.get(host)
        if circuit is None:
            return  # never failed: nothing to show
        now = self.clock.monotonic()
        state, failures = circuit.state, circuit.failures
        shown, seen_at = circuit.shown, circuit.shown_at
        if state == shown[0]:
            if shown == (CLOSED, 0) and not failures:
                return  # healthy, and shown so (or never shown)
            every = PUBLISH_EVERY if failures != shown[1] else self.publish_ttl / 3
            if now < seen_at + every:
                return
        try:
            board, outage = self._open_board()
        except Exception as exc:  # (open_backend connects nothing: a bug)
            self._bug(exc)
            return
        if not outage.usable():
            return
        with self._lock:
            if circuit.shown_at != seen_at:
                return  # another thread publishes it
            circuit.shown, circuit.shown_at = (circuit.state, circuit.failures), now
            holder_host, pid = holder()
            record = CircuitRecord(
                host=host_of(host),  # an origin: never a path, a query or a password
                state=circuit.state,
                since=circuit.since,
                failures=circuit.failures,
                holder_host=holder_host,
                pid=pid,
                published=self.clock.time(),
            )
            ttl = self.publish_ttl
            if circuit.state == OPEN:
                ttl += max(0.0, circuit.open_until - now)
        try:
            board.publish_circuit(record, ttl, timeout=store_timeout(time_left))
        except Exception as exc:
            with self._lock:
                if circuit.shown_at == now:
                    circuit.shown, circuit.shown_at = _UNPUBLISHED, -math.inf
            if not isinstance(exc, NoTimeLeft):  # (not asked: no word on its health)
                self._store_failed(board, outage, exc)
        else:
            outage.answered()

    def _open_board(self) -> tuple[Any, Outage]:
        """The backend circuits are published to, and its outage bookkeeping."""
        found = self._board
        if found is None:
            with self._lock:
                found = self._board
                storage = self.storage
                if found is None and storage is not None:
                    found = self._board = (
                        open_backend(storage, self.clock),
                        Outage(
                            "Circuit breaker storage",
                            storage,
                            "this process's circuits are not published",
                            self.clock,
                        ),
                    )
            assert found is not None
        return found

    def _store_failed(self, board: Any, outage: Outage, exc: Exception) -> None:
        """The store failed: one WARNING per outage, and a traceback, once, for an
        error that is no outage (a bug; the backend's ``unreachable`` tells)."""
        outage.failed(exc)
        down = isinstance(exc, OSError) or type(exc).__module__.partition(".")[0] in (
            _STORE_MODULES
        )
        with contextlib.suppress(Exception):  # (a backend that says: its word wins)
            down = bool(board.unreachable(exc))
        if not down:
            self._bug(exc)
        with contextlib.suppress(Exception):  # (reopened on the next try)
            board.close()

    def _bug(self, exc: Exception) -> None:
        if self._bug_logged:
            return
        self._bug_logged = True
        logger.warning(
            "Publishing circuits failed with %s, which no store raises; calls go on unaffected",
            type(exc).__name__,
            exc_info=exc,
        )


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
        says nothing of it), then publish the host's circuit when that is due."""
        self._count(call, response, failure)
        self.breaker.publish(call.host, call.time_left())

    def _count(self, call: Call, response: Response | None, failure: Failure | None) -> None:
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
        (a failure of the host), or a later step refused it (a probe not sent).
        Then the host's circuit is published when that is due."""
        if isinstance(error, CircuitOpenError):
            pass
        elif isinstance(error, (ConnectionError, Timeout, ServerError)):
            trace = error.trace_id if isinstance(error, ServerError) else None
            change = self.breaker.record(call.host, True, trace, probe=self._probe(call))
            if change is not None:
                call.hooks.alert(_alert(*change, call.host, self.breaker))
        elif self._probe(call):
            self.breaker.release_probe(call.host)
        self.breaker.publish(call.host, call.time_left())

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
