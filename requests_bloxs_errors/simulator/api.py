"""The behaviour of the simulated Bloxs and DealCloud APIs.

One simulator hosts both, on one address or, with ``dealcloud_port``, each on
its own origin as in production (there, each answers only its own paths):

Bloxs
    ``POST /Authorization`` (JSON ``apiKey``/``apiSecret`` -> ``token``,
    ``expiration``), ``GET /Test`` (checks a v1 HMAC signature or a token),
    ``GET /api/v1/realestateobjects/complexes`` (paged),
    ``GET|PUT|DELETE .../complexes/{id}``, ``POST .../complexes`` (create),
    ``POST .../complexes/filter``, ``GET /api/v1/documents/{id}/download``.
    Per-window rate limits per request type (Authorization 10, Download 10,
    Filter 100, Data update 100, other GET 500 per 60 s); once a limit is hit,
    every request of that type gets 429 for the rest of the window.
DealCloud
    ``POST /api/rest/v1/oauth/token`` (client credentials, 900-second tokens),
    ``GET|POST /api/rest/v4/data/entrydata/{entry}/entries``; a quota per
    endpoint answered by a text/plain 429 with ``Retry-After``.

Errors use the real shapes: the ASP.NET validation problem for 400, problem
details for 415, ``{"error": "invalid_client"}`` for 401, 405 with ``Allow``.
Faults are scripted with :meth:`Simulator.fail`, :meth:`Simulator.drop`,
:meth:`Simulator.slow` and :meth:`Simulator.maintenance`; tokens expire, and
:meth:`Simulator.revoke_tokens` revokes them early. Every request is
recorded (:attr:`Simulator.requests`) with the status it got, and
:meth:`Simulator.summary` counts them; :meth:`Simulator.watch` sees each one
as it is answered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import math
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

from ..clock import SYSTEM, Clock
from ..credentials.providers import DEALCLOUD_TOKEN_PATH
from ._http import Answer, LoopbackServer, Request
from .summary import BLOXS, DEALCLOUD, VENDORS, Summary, summarize, vendor_of

__all__ = ["DEALCLOUD_TOKEN_PATH", "DEFAULT_LIMITS", "ENDPOINTS", "Fault", "Seen", "Simulator"]

#: Requests per window for each Bloxs request type.
DEFAULT_LIMITS: Mapping[str, int] = {
    "authorization": 10,
    "download": 10,
    "filter": 100,
    "update": 100,
    "get": 500,
    "token": 300,  # DealCloud's token endpoint, per minute
}

BLOXS_TOKEN_PATH = "/Authorization"
COMPLEXES = "/api/v1/realestateobjects/complexes"

#: What the simulator serves: (methods, path, what it is). Everything else is 404.
ENDPOINTS = (
    ("POST", BLOXS_TOKEN_PATH, "Bloxs token: JSON apiKey/apiSecret -> token, expiration"),
    ("GET", "/Test", "Bloxs credential check (token or v1 HMAC signature)"),
    ("GET, POST", COMPLEXES, "Bloxs complexes: paged list (GET), create (POST)"),
    ("GET, PUT, DELETE", COMPLEXES + "/{id}", "Bloxs: one complex"),
    ("POST", COMPLEXES + "/filter", "Bloxs filter (its own rate limit)"),
    ("GET", "/api/v1/documents/{id}/download", "Bloxs document download"),
    ("POST", DEALCLOUD_TOKEN_PATH, "DealCloud token: client-credentials grant"),
    ("GET, POST", "/api/rest/v4/data/entrydata/{entry}/entries", "DealCloud entries"),
)
_COMPLEX_ID = re.compile(re.escape(COMPLEXES) + r"/(\d+)")
_DOWNLOAD = re.compile(r"/api/v1/documents/(\d+)/download")
_ENTRIES = re.compile(r"/api/rest/v4/data/entrydata/(\w+)/entries")

_DEFAULT_BODIES: Mapping[int, tuple[str, str]] = {
    400: ("application/json", '{"title": "Bad Request", "status": 400}'),
    401: ("application/json", '{"error": "invalid_client"}'),
    403: ("application/json", '{"title": "Forbidden", "status": 403}'),
    429: ("text/plain", "API calls quota exceeded! maximum admitted 5 per 1 second."),
    500: ("application/json", '{"error": "internal_server_error"}'),
    502: ("text/html", "<html><head><title>502 Bad Gateway</title></head></html>"),
    503: ("text/plain", "The service is down for maintenance."),
    504: ("text/html", "<html><head><title>504 Gateway Timeout</title></head></html>"),
}


def _trace_id() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def _problem(status: int, title: str, **extra: Any) -> Answer:
    section = "rfc6585#section-4" if status == 429 else f"rfc9110#section-15.5.{status - 399}"
    document = {
        "type": f"https://tools.ietf.org/html/{section}",
        "title": title,
        "status": status,
        "traceId": _trace_id(),
        **extra,
    }
    return Answer.json(status, document, **{"Content-Type": "application/problem+json"})


def _validation(errors: Mapping[str, list[str]]) -> Answer:
    return _problem(400, "One or more validation errors occurred.", errors=dict(errors))


@dataclass(frozen=True)
class Seen:
    """One request the simulator received, and what it answered."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    at: float  # the simulator clock's monotonic() when it arrived
    status: int | None  # None: the connection was dropped
    category: str
    fault: str | None  # the scripted fault that answered, if any
    #: The API whose origin received it ("bloxs" or "dealcloud"); on one address,
    #: the API its path belongs to.
    vendor: str = BLOXS
    #: For a token request, the credential it named: the Bloxs ``apiKey`` or the
    #: DealCloud ``client_id`` (never a secret); None for every other request.
    credential: str | None = None
    received: float = 0.0  # the simulator clock's time() (wall) when it arrived

    @property
    def misdirected(self) -> bool:
        """Whether it reached the other API's origin (and got 404 there)."""
        return vendor_of(self.path) != self.vendor


@dataclass
class Fault:
    """A scripted misbehaviour; see :meth:`Simulator.fail`."""

    name: str
    status: int | None = None
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    every: int | None = None
    until: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    delay: float = 0.0
    drop: bool = False
    #: Send ``Retry-After`` with the whole seconds left until ``until``.
    retry_after_until: bool = False
    matched: int = 0
    fired: int = 0

    def matches(self, request: Request, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        if self.method is not None and request.method != self.method:
            return False
        return (
            self.path is None
            or request.path == self.path
            or request.path.startswith(self.path.rstrip("/") + "/")
        )

    def spent(self, now: float) -> bool:
        expired = self.until is not None and now >= self.until
        return expired or (self.times is not None and self.fired >= self.times)


@dataclass
class _Token:
    vendor: str  # "bloxs" or "dealcloud"
    expires: float  # monotonic
    scopes: frozenset[str] = frozenset()


class Simulator:
    """A running imitation of the Bloxs and DealCloud APIs on loopback.

    Usage::

        >>> with Simulator() as sim:
        ...     auth = rbe.BloxsTokenAuth(sim.url, *sim.bloxs_credentials)
        ...     session = requests.Session()
        ...     rbe.mount(session, sim.url + "/", auth=auth)
        ...     sim.fail(503, path=COMPLEXES, times=2, retry_after=0.1)
        ...     session.get(sim.url + COMPLEXES).raise_for_status()

    Both APIs on their own origins, as in production (``BLOXS_*`` and
    ``DEALCLOUD_*`` variables then work together)::

        >>> with Simulator(dealcloud_port=0) as sim:
        ...     sim.bloxs_url, sim.dealcloud_url  # two ports on loopback

    :param host: the address to listen on (loopback by default).
    :param port: the port (Bloxs's, when DealCloud has its own); 0 picks a
        free one.
    :param dealcloud_port: None: DealCloud on the same address as Bloxs; a
        port (0: a free one): DealCloud on an origin of its own, and each
        origin answers only its own API's paths (the other's get 404).
    :param window: the length of a Bloxs rate-limit window, in seconds.
    :param limits: requests per window per type; see :data:`DEFAULT_LIMITS`.
    :param bloxs_retry_after: whether Bloxs 429s carry ``Retry-After`` (the
        real API documents none).
    :param dealcloud_quota: ``(limit, period_seconds)`` per DealCloud endpoint.
    :param bloxs_token_lifetime: seconds a Bloxs token lives (24 h).
    :param dealcloud_token_lifetime: seconds a DealCloud token lives (900).
    :param hmac_skew: seconds a v1 signature's timestamp may be off.
    :param clock: where its time comes from: rate-limit windows, token
        lifetimes and the ``expiration`` it states, maintenance and
        ``for_seconds``, signature timestamps, every answer's ``Date`` header
        and :attr:`Seen.at` (a ``FakeClock`` in tests turns a window over, or
        ends a maintenance, without waiting for it). Share one with the
        adapter and the credential and a test never sleeps; only
        :meth:`slow` and ``fail(delay=...)`` hold an answer back in real time,
        since what they test, a client's read timeout, is measured by its socket.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        dealcloud_port: int | None = None,
        window: float = 60.0,
        limits: Mapping[str, int] | None = None,
        bloxs_retry_after: bool = False,
        dealcloud_quota: tuple[int, float] = (5, 1.0),
        bloxs_token_lifetime: float = 24 * 3600.0,
        dealcloud_token_lifetime: float = 900.0,
        hmac_skew: float = 300.0,
        clock: Clock = SYSTEM,
    ) -> None:
        if not isinstance(window, (int, float)) or isinstance(window, bool) or not window > 0:
            raise ValueError(f"window must be a number of seconds above 0, not {window!r}")
        _check_port("port", port)
        if dealcloud_port is not None:
            _check_port("dealcloud_port", dealcloud_port)
            if dealcloud_port == port != 0:
                raise ValueError(f"dealcloud_port must differ from port ({port})")
        self.window = window
        self.limits = {**DEFAULT_LIMITS, **(limits or {})}
        self.bloxs_retry_after = bloxs_retry_after
        self.dealcloud_quota = dealcloud_quota
        self.bloxs_token_lifetime = bloxs_token_lifetime
        self.dealcloud_token_lifetime = dealcloud_token_lifetime
        self.hmac_skew = hmac_skew
        self.clock = clock
        #: Bloxs API keys and their secrets.
        self.bloxs_keys: dict[str, str] = {"demo-key": "demo-secret"}
        #: DealCloud client ids, their secrets and granted scopes.
        self.dealcloud_clients: dict[str, tuple[str, frozenset[str]]] = {
            "demo-client": ("demo-client-secret", frozenset({"data", "user_management", "publish"}))
        }
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._issued: list[str] = []
        self._faults: list[Fault] = []
        self._names = itertools.count(1)
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window index, count)
        self._requests: list[Seen] = []
        self._watchers: list[Callable[[Seen], object]] = []
        self._complexes = {
            n: {"id": n, "name": f"Complex {n}", "city": city, "units": 10 + n}
            for n, city in zip(range(1, 26), itertools.cycle(["Amsterdam", "Utrecht", "Rotterdam"]))
        }
        self._entries: dict[str, list[dict[str, Any]]] = {
            "deal": [{"EntryId": n, "DealName": f"Deal {n}"} for n in range(1, 11)]
        }
        self._started = self.clock.monotonic()
        self._server = LoopbackServer(
            lambda request: self._respond(request, None if dealcloud_port is None else BLOXS),
            host,
            port,
            clock=clock,
        )
        self._dealcloud_server: LoopbackServer | None = None
        if dealcloud_port is not None:
            try:
                self._dealcloud_server = LoopbackServer(
                    lambda request: self._respond(request, DEALCLOUD),
                    host,
                    dealcloud_port,
                    clock=clock,
                )
            except OSError as exc:
                self._server.stop()  # (not left listening)
                # named, so that a caller can tell which of the two ports failed
                raise OSError(exc.errno, exc.strerror, f"{host}:{dealcloud_port}") from exc
            except BaseException:
                self._server.stop()
                raise

    # -- life cycle -------------------------------------------------------------

    def start(self) -> Simulator:
        """Start serving in background threads; returns self."""
        self._server.start()
        if self._dealcloud_server is not None:
            self._dealcloud_server.start()
        return self

    def stop(self) -> None:
        if self._dealcloud_server is not None:
            self._dealcloud_server.stop()
        self._server.stop()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (DealCloud's own origin, if
        it has one, from a background thread)."""
        if self._dealcloud_server is not None:
            self._dealcloud_server.start()
        try:
            self._server.serve_forever()
        finally:
            if self._dealcloud_server is not None:
                self._dealcloud_server.stop()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:40123`` (no trailing slash): both
        APIs' on one address, Bloxs's when DealCloud has its own (:attr:`bloxs_url`)."""
        return self._server.url

    @property
    def bloxs_url(self) -> str:
        """The Bloxs API's base URL (``BLOXS_BASE_URL``), no trailing slash."""
        return self._server.url

    @property
    def dealcloud_url(self) -> str:
        """The DealCloud API's base URL, no trailing slash: its own origin with
        ``dealcloud_port``, else the same as :attr:`url`."""
        server = self._dealcloud_server or self._server
        return server.url

    @property
    def bloxs_credentials(self) -> tuple[str, str]:
        """A working ``(api_key, api_secret)``."""
        return next(iter(self.bloxs_keys.items()))

    @property
    def dealcloud_credentials(self) -> tuple[str, str, str]:
        """A working ``(token_url, client_id, client_secret)``."""
        client, (secret, _) = next(iter(self.dealcloud_clients.items()))
        return self.dealcloud_url + DEALCLOUD_TOKEN_PATH, client, secret

    # -- scripting --------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | None = 1,
        every: int | None = None,
        retry_after: float | str | None = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        for_seconds: float | None = None,
    ) -> Fault:
        """Answer ``status`` to matching requests before the API sees them.

        :param path: a path, matching it and everything below it; None: all.
        :param method: only this method; None: all.
        :param times: how many requests fail (then the fault is spent);
            None: no limit.
        :param every: fail only every k-th matching request (k, 2k, ...).
        :param retry_after: a ``Retry-After`` value to send.
        :param delay: answer this many real seconds late (as :meth:`slow`).
        :param body: the body; None picks the API's usual one for ``status``.
        :param for_seconds: the fault ends this long from now; None: when spent.
        """
        all_headers = dict(headers or {})
        if retry_after is not None:
            all_headers["Retry-After"] = str(retry_after)
        if body is None and status in _DEFAULT_BODIES:
            content_type, body = _DEFAULT_BODIES[status]
            all_headers.setdefault("Content-Type", content_type)
        return self._add(
            f"fail-{status}",
            status=status,
            method=method,
            path=path,
            times=times,
            every=every,
            headers=all_headers,
            body=body if body is not None else "",
            delay=delay,
            until=self._until(for_seconds),
        )

    def _until(self, for_seconds: float | None) -> float | None:
        return None if for_seconds is None else self.clock.monotonic() + for_seconds

    def drop(
        self,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | None = 1,
        every: int | None = None,
    ) -> Fault:
        """Reset the connection of matching requests without answering."""
        return self._add("drop", method=method, path=path, times=times, every=every, drop=True)

    def slow(
        self,
        seconds: float,
        *,
        path: str | None = None,
        method: str | None = None,
        times: int | None = 1,
        for_seconds: float | None = None,
    ) -> Fault:
        """Answer matching requests normally, but only after ``seconds``.

        The wait is real time on the wire, whatever the simulator's clock: a
        late answer is for a client's read timeout, which its socket measures.

        :param for_seconds: the fault ends this long from now; None: when spent.
        """
        return self._add(
            "slow",
            method=method,
            path=path,
            times=times,
            delay=seconds,
            until=self._until(for_seconds),
        )

    def maintenance(self, seconds: float, *, retry_after: bool = True) -> Fault:
        """Answer 503 to every request for the next ``seconds``.

        :param retry_after: send ``Retry-After`` with the time left (whole seconds).
        """
        content_type, body = _DEFAULT_BODIES[503]
        return self._add(
            "maintenance",
            status=503,
            times=None,
            until=self.clock.monotonic() + seconds,
            headers={"Content-Type": content_type},
            body=body,
            retry_after_until=retry_after,
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def revoke_tokens(self) -> None:
        """Make every token issued so far invalid (401), as a revocation would."""
        with self._lock:
            self._tokens.clear()

    def reset(self) -> None:
        """Forget faults, tokens, counters and recorded requests."""
        with self._lock:
            self._faults.clear()
            self._tokens.clear()
            self._counts.clear()
            self._requests.clear()

    def _add(self, kind: str, **fields: Any) -> Fault:
        """Name a new fault after its kind and a serial number, and arm it."""
        with self._lock:
            fault = Fault(f"{kind}-{next(self._names)}", **fields)
            self._faults.append(fault)
        return fault

    # -- what happened ------------------------------------------------------------

    @property
    def requests(self) -> list[Seen]:
        """Every request received so far, in order."""
        with self._lock:
            return list(self._requests)

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        """The recorded requests with this method and exact path."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or r.path == path)
        ]

    def secret_values(self) -> set[str]:
        """Every secret this simulator knows: API and client secrets, each token it
        issued, each credential header it received. For scanning logs and messages."""
        with self._lock:
            found = set(self.bloxs_keys.values()) | {s for s, _ in self.dealcloud_clients.values()}
            found.update(self._issued)
            for request in self._requests:
                credential = request.headers.get("Authorization", "")
                found.add(
                    credential.partition(" ")[2].partition(":")[2] or credential.partition(" ")[2]
                )
        found.discard("")
        return found

    def token_requests(self) -> list[Seen]:
        """Requests to either token endpoint."""
        return [r for r in self.requests if r.path in (BLOXS_TOKEN_PATH, DEALCLOUD_TOKEN_PATH)]

    def summary(self) -> Summary:
        """What arrived so far, counted: requests per category, token requests per
        credential, 429s given (see :class:`~.summary.Summary`)."""
        return summarize(self.requests)

    def watch(self, callback: Callable[[Seen], object]) -> None:
        """Call ``callback(seen)`` for every request from now on, once it is answered
        (on the server's thread: a request log, for one)."""
        with self._lock:
            self._watchers.append(callback)

    # -- answering ----------------------------------------------------------------

    def _respond(self, request: Request, origin: str | None) -> Answer:
        """Answer ``request``, received on ``origin``'s own address (None: on the
        one address both APIs share)."""
        received = self.clock.time()
        category = _category(request)
        vendor = vendor_of(request.path)
        fault = None
        answer = None
        if origin is not None and origin != vendor:
            answer = self._elsewhere(vendor)
            vendor = origin
        else:
            with self._lock:
                now = self.clock.monotonic()
                fault = self._fault(request, now)
                answer = None if fault is None else _fault_answer(fault, now)
                if answer is None:
                    answer = self._throttle(request, category, now)
        if answer is None:
            try:
                answer = self._route(request)
            except Exception as exc:  # a simulator bug must look like a 500, and say so
                answer = Answer.json(500, {"error": "internal_server_error", "detail": repr(exc)})
            if fault is not None and fault.delay:  # slow(): the real answer, late
                answer = dataclasses.replace(answer, delay=fault.delay)
        seen = Seen(
            request.method,
            request.path,
            request.query,
            dict(request.headers.items()),
            request.body,
            request.at,
            None if answer.drop else answer.status,
            category,
            fault.name if fault is not None else None,
            vendor=vendor,
            credential=self._credential(request),
            received=received,
        )
        with self._lock:
            self._requests.append(seen)
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher(seen)
        return answer

    def _elsewhere(self, vendor: str) -> Answer:
        """The 404 for a path of ``vendor``'s API received on the other API's origin."""
        home = self.dealcloud_url if vendor == DEALCLOUD else self.bloxs_url
        here = VENDORS[DEALCLOUD if vendor == BLOXS else BLOXS]
        return _problem(
            404,
            "Not Found",
            detail=f"This is the {here} API; this path is {VENDORS[vendor]}'s, at {home}.",
        )

    def _credential(self, request: Request) -> str | None:
        """The ``apiKey`` or ``client_id`` a token request names (None: not a token
        request); a value that is one of the simulator's secrets is not repeated."""
        if request.path == BLOXS_TOKEN_PATH:
            document = request.json()
            named = document.get("apiKey") if isinstance(document, dict) else None
        elif request.path == DEALCLOUD_TOKEN_PATH:
            form = parse_qs(request.body.decode("utf-8", "replace"))
            named = form.get("client_id", [None])[0]
        else:
            return None
        if not isinstance(named, str) or not named:
            return "(none)"
        with self._lock:
            secret = (
                named in self._issued
                or named in self.bloxs_keys.values()
                or any(named == known for known, _ in self.dealcloud_clients.values())
            )
        if secret:
            return "(a secret, not shown)"
        return named if len(named) <= 64 else named[:63] + "\u2026"

    def _fault(self, request: Request, now: float) -> Fault | None:
        """The first fault that fires for ``request`` (called with the lock held)."""
        for fault in list(self._faults):
            if fault.spent(now):
                self._faults.remove(fault)
                continue
            if not fault.matches(request, now):
                continue
            fault.matched += 1
            if fault.every and fault.matched % fault.every:
                continue
            fault.fired += 1
            return fault
        return None

    def _tick(self, key: str, period: float, now: float) -> tuple[int, float]:
        """Count a request in ``key``'s current fixed window of ``period`` seconds.

        :return: the count so far in this window, and the seconds it has left.
        """
        index = int((now - self._started) // period)
        window, count = self._counts.get(key, (index, 0))
        count = count + 1 if window == index else 1
        self._counts[key] = (index, count)
        return count, self._started + (index + 1) * period - now

    def _throttle(self, request: Request, category: str, now: float) -> Answer | None:
        """The 429 for a request over its limit, or None (called with the lock held)."""
        if _ENTRIES.fullmatch(request.path):  # DealCloud: a quota per endpoint
            quota, period = self.dealcloud_quota
            count, left = self._tick(f"{request.method} {request.path}", period, now)
            if count <= quota:
                return None
            per = "1 second" if period == 1 else f"{period:g} seconds"
            return Answer(
                429,
                f"API calls quota exceeded! maximum admitted {quota} per {per}.",
                {
                    "Content-Type": "text/plain",
                    "Retry-After": str(max(1, math.ceil(left))),
                    "Request-Context": "appId=cid-v1:simulated-dealcloud",
                },
            )
        allowed = self.limits.get(category)
        if allowed is None:
            return None
        count, left = self._tick(category, self.window, now)
        if count <= allowed:
            return None
        detail = (
            f"The limit of {allowed} {category} requests per {self.window:g} seconds is used up."
        )
        answer = _problem(429, "Too Many Requests", detail=detail)
        if not self.bloxs_retry_after:
            return answer  # as the real API: no Retry-After, the client must back off
        return dataclasses.replace(
            answer, headers={**answer.headers, "Retry-After": str(max(1, math.ceil(left)))}
        )

    # -- the APIs -----------------------------------------------------------------

    def _route(self, request: Request) -> Answer:
        path, method = request.path, request.method
        if path == BLOXS_TOKEN_PATH:
            return self._bloxs_token(request) if method == "POST" else _not_allowed("POST")
        if path == DEALCLOUD_TOKEN_PATH:
            return self._dealcloud_token(request) if method == "POST" else _not_allowed("POST")
        if path == "/Test":
            if method != "GET":
                return _not_allowed("GET")
            return self._authorized(request, "bloxs") or Answer(
                200, "OK", {"Content-Type": "text/plain"}
            )
        if path.startswith("/api/v1/"):
            return self._authorized(request, "bloxs") or self._bloxs_data(request)
        if path.startswith("/api/rest/v4/"):
            return self._authorized(request, "dealcloud") or self._dealcloud_data(request)
        return _problem(404, "Not Found")

    def _authorized(self, request: Request, vendor: str) -> Answer | None:
        """None when the request carries valid credentials, else the refusal."""
        header = request.headers.get("Authorization", "")
        if vendor == "bloxs" and header.startswith("bloxs "):
            return None if self._hmac_valid(request, header) else Answer(401, "")
        token = header[7:] if header[:7].lower() == "bearer " else ""
        with self._lock:
            grant = self._tokens.get(token)
        if grant is None or grant.vendor != vendor or self.clock.monotonic() >= grant.expires:
            if vendor == "dealcloud":
                return Answer.json(401, {"error": "invalid_client"})
            return Answer(401, "", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if vendor == "dealcloud" and "data" not in grant.scopes:
            return Answer.json(403, {"error": "insufficient_scope", "error_description": "data"})
        return None

    def _hmac_valid(self, request: Request, header: str) -> bool:
        key, _, signature = header[6:].partition(":")
        secret = self.bloxs_keys.get(key)
        stamp = request.headers.get("x-timestamp", "")
        if (
            secret is None
            or not stamp.isdigit()
            or abs(self.clock.time() - int(stamp)) > self.hmac_skew
        ):
            return False
        message = f"{key}:{stamp}:{len(request.body)}".encode()
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    def _issue(self, vendor: str, lifetime: float, scopes: frozenset[str] = frozenset()) -> str:
        token = f"{vendor[:2]}-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens[token] = _Token(vendor, self.clock.monotonic() + lifetime, scopes)
            self._issued.append(token)
        return token

    def _bloxs_token(self, request: Request) -> Answer:
        if "json" not in request.headers.get("Content-Type", ""):
            return _problem(415, "Unsupported Media Type")
        document = request.json()
        if not isinstance(document, dict):
            return _validation({"": ["A non-empty request body is required."]})
        errors = {
            name: [f"The {name} field is required."]
            for name in ("apiKey", "apiSecret")
            if not isinstance(document.get(name), str) or not document.get(name)
        }
        if errors:
            return _validation(errors)
        secret = self.bloxs_keys.get(document["apiKey"])
        if secret is None or not hmac.compare_digest(secret, document["apiSecret"]):
            return _validation(
                {"apiKey": ["The API key and secret do not match a client of this environment."]}
            )
        lifetime = self.bloxs_token_lifetime
        token = self._issue("bloxs", lifetime)
        expiration = datetime.fromtimestamp(self.clock.time() + lifetime, timezone.utc)
        return Answer.json(
            200, {"token": token, "expiration": expiration.isoformat().replace("+00:00", "Z")}
        )

    def _dealcloud_token(self, request: Request) -> Answer:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return Answer.json(400, {"error": "unsupported_grant_type"})
        client = self.dealcloud_clients.get(form.get("client_id", ""))
        if client is None or not hmac.compare_digest(client[0], form.get("client_secret", "")):
            return Answer.json(401, {"error": "invalid_client"})
        wanted = frozenset(form.get("scope", "data").split())
        if not wanted <= client[1]:
            return Answer.json(400, {"error": "invalid_scope"})
        lifetime = self.dealcloud_token_lifetime
        token = self._issue("dealcloud", lifetime, wanted)
        return Answer.json(
            200, {"access_token": token, "token_type": "bearer", "expires_in": int(lifetime)}
        )

    def _bloxs_data(self, request: Request) -> Answer:
        path, method = request.path, request.method
        if path == COMPLEXES:
            if method == "GET":
                query = {k: v[-1] for k, v in parse_qs(request.query).items()}
                return self._page(
                    list(self._complexes.values()),
                    query.get("paging.pageSize"),
                    query.get("paging.page"),
                )
            if method == "POST":
                return self._create(request)
            return _not_allowed("GET, POST")
        if path == COMPLEXES + "/filter":
            if method != "POST":
                return _not_allowed("POST")
            return self._filter(request)
        match = _COMPLEX_ID.fullmatch(path)
        if match:
            return self._one(request, int(match.group(1)))
        match = _DOWNLOAD.fullmatch(path)
        if match:
            if method != "GET":
                return _not_allowed("GET")
            return Answer(
                200,
                b"%PDF-1.7 simulated document " + match.group(1).encode(),
                {"Content-Type": "application/pdf"},
            )
        return _problem(404, "Not Found")

    def _page(self, items: list[dict[str, Any]], size: Any, page: Any) -> Answer:
        errors: dict[str, list[str]] = {}
        size_value = _as_int(size, 100)
        page_value = _as_int(page, 1)
        if size_value is None or not 1 <= size_value <= 1000:
            errors["Paging.PageSize"] = ["The field PageSize must be between 1 and 1000."]
        if page_value is None or page_value < 1:
            errors["Paging.Page"] = ["The field Page must be 1 or more."]
        if errors:
            return _validation(errors)
        assert size_value is not None
        assert page_value is not None
        start = (page_value - 1) * size_value
        return Answer.json(
            200,
            {
                "items": items[start : start + size_value],
                "paging": {"page": page_value, "pageSize": size_value, "totalCount": len(items)},
            },
        )

    def _json_body(self, request: Request) -> tuple[Any, Answer | None]:
        if "json" not in request.headers.get("Content-Type", ""):
            return None, _problem(415, "Unsupported Media Type")
        document = request.json()
        if not isinstance(document, dict):
            return None, _validation({"": ["The request body must be a JSON object."]})
        return document, None

    def _filter(self, request: Request) -> Answer:
        document, refusal = self._json_body(request)
        if refusal:
            return refusal
        paging = document.get("paging") or {}
        if not isinstance(paging, dict):
            return _validation({"Paging": ["The field Paging must be an object."]})
        items = list(self._complexes.values())
        if isinstance(document.get("city"), str):
            items = [c for c in items if c["city"] == document["city"]]
        return self._page(items, paging.get("pageSize"), paging.get("page"))

    def _check_complex(self, document: dict[str, Any]) -> Answer | None:
        errors: dict[str, list[str]] = {}
        if not isinstance(document.get("name"), str) or not document["name"].strip():
            errors["Name"] = ["The Name field is required."]
        units = document.get("units", 0)
        if not isinstance(units, int) or units < 0:
            errors["Units"] = ["The field Units must be a whole number of 0 or more."]
        return _validation(errors) if errors else None

    def _create(self, request: Request) -> Answer:
        document, refusal = self._json_body(request)
        if refusal:
            return refusal
        invalid = self._check_complex(document)
        if invalid:
            return invalid
        with self._lock:
            new_id = max(self._complexes, default=0) + 1
            item = {
                "id": new_id,
                "name": document["name"],
                "city": document.get("city"),
                "units": document.get("units", 0),
            }
            self._complexes[new_id] = item
        return Answer.json(201, item, Location=f"{COMPLEXES}/{new_id}")

    def _one(self, request: Request, item_id: int) -> Answer:
        method = request.method
        if method not in ("GET", "PUT", "DELETE"):
            return _not_allowed("GET, PUT, DELETE")
        with self._lock:
            item = self._complexes.get(item_id)
        if item is None:
            return _problem(404, "Not Found", detail=f"No complex with id {item_id}.")
        if method == "GET":
            return Answer.json(200, item)
        if method == "DELETE":
            with self._lock:
                self._complexes.pop(item_id, None)
            return Answer(204)
        document, refusal = self._json_body(request)
        if refusal:
            return refusal
        invalid = self._check_complex(document)
        if invalid:
            return invalid
        with self._lock:
            item = {**item, **{k: document[k] for k in ("name", "city", "units") if k in document}}
            self._complexes[item_id] = item
        return Answer.json(200, item)

    def _dealcloud_data(self, request: Request) -> Answer:
        match = _ENTRIES.fullmatch(request.path)
        if match is None:
            return _problem(404, "Not Found")
        rows = self._entries.setdefault(match.group(1), [])
        context = {"Request-Context": "appId=cid-v1:simulated-dealcloud"}
        if request.method == "GET":
            return Answer.json(200, rows, **context)
        if request.method in ("POST", "PUT"):
            document, refusal = self._json_body(request)
            if refusal:
                return refusal
            with self._lock:
                row = {"EntryId": len(rows) + 1, **document}
                rows.append(row)
            return Answer.json(201 if request.method == "POST" else 200, row, **context)
        return _not_allowed("GET, POST, PUT")


def _check_port(name: str, port: object) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"{name} must be 0 to 65535 (0: any free port), not {port!r}")


def _as_int(value: Any, default: int) -> int | None:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _not_allowed(allow: str) -> Answer:
    answer = _problem(405, "Method Not Allowed")
    return Answer(answer.status, answer.body, {**answer.headers, "Allow": allow})


def _category(request: Request) -> str:
    """The Bloxs rate-limit type of a request."""
    path, method = request.path, request.method
    if path == BLOXS_TOKEN_PATH:
        return "authorization"
    if path == DEALCLOUD_TOKEN_PATH:
        return "token"
    if path.startswith("/api/rest/"):
        return "dealcloud"
    if path.endswith("/download"):
        return "download"
    if method == "POST" and path.endswith("/filter"):
        return "filter"
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return "update"
    return "get"


def _fault_answer(fault: Fault, now: float) -> Answer | None:
    """What a fired fault answers; None for slow(), which delays the real answer."""
    if fault.status is None and not fault.drop:
        return None
    headers = dict(fault.headers)
    if fault.retry_after_until and fault.until is not None:
        headers["Retry-After"] = str(max(1, math.ceil(fault.until - now)))
    return Answer(fault.status or 0, fault.body or b"", headers, delay=fault.delay, drop=fault.drop)
