"""Client-side rate limits: :class:`RateLimit`, its rules, and the vendors' categories.

A :class:`RateLimit` sorts each request into a category, and keeps at most
the category's ``N`` requests in any interval of its period, as the server
counts their arrivals: a sliding window (see
:mod:`~requests_bloxs_errors.storage.windows`), because the server counts in
fixed windows whose phase the client cannot know, and a token bucket that
refills would let twice the quota into one of them. The window counts from
the end of each attempt, so no delay between a permit and the request's
arrival (a busy host, a slow network) can crowd one of the server's windows.

Where the counts live is a storage URL (:mod:`~requests_bloxs_errors.storage`): ``memory://`` for
the threads of one process, ``sqlite:///path`` for the processes of one
host, ``redis://`` for many hosts. A store that fails (unreachable, locked,
corrupt) never fails a call: the limiter paces in-process, logs one
warning, and tries the store again every few seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ..clock import SYSTEM, Clock
from ..events import logger
from ..storage import PermitHolder, PermitLog, ProcessLock, open_backend, parse
from ..storage.fallback import Fallback
from ..storage.windows import MAX_PAUSE, RuleValue, longest_pause
from ..urls import normalized_path, origin_of

if TYPE_CHECKING:
    from requests import PreparedRequest

__all__ = ["CategoryState", "RateLimit", "bloxs_category", "dealcloud_category", "parse_rule"]

#: A rule as given: ``"N/second"``, ``"N/minute"``, ``"N/hour"``, ``"N/<seconds>s"``
#: or ``(N, seconds)``.
RuleSpec = Union[str, "tuple[int, float]"]
Categorize = Callable[["PreparedRequest"], str | None]

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
_RULE = re.compile(r"\s*(\d+)\s*/\s*(?:(second|minute|hour)|(\d+(?:\.\d+)?)\s*s)\s*", re.ASCII)

#: Bloxs's documented limits, per environment and minute.
BLOXS_RULES: Mapping[str, RuleSpec] = {
    "authorization": "10/minute",
    "download": "10/minute",
    "filter": "100/minute",
    "update": "100/minute",
    "get": "500/minute",
}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The longest period of a rule learned for a category with no configured rule.
MAX_LEARNED_PERIOD = 3600.0
#: Seconds a call waits for a permit at most, unless ``max_wait`` says otherwise.
DEFAULT_MAX_WAIT = 60.0


def parse_rule(category: str, rule: object) -> RuleValue:
    """``(limit, period_seconds)`` of one rule; see :class:`RateLimit`.

    :raises ValueError: naming the rule, when it is not one of the forms.
    """
    limit: object
    period: object
    if isinstance(rule, str):
        match = _RULE.fullmatch(rule)
        if match is None:
            raise _bad_rule(category, rule)
        limit = int(match.group(1))
        period = _UNITS[match.group(2)] if match.group(2) else float(match.group(3))
    elif isinstance(rule, tuple) and len(rule) == 2:
        limit, period = rule
    else:
        raise _bad_rule(category, rule)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int)
        or limit < 1
        or isinstance(period, bool)
        or not isinstance(period, (int, float))
        or not math.isfinite(period)
        or period <= 0
    ):
        raise _bad_rule(category, rule)
    return limit, float(period)


def _bad_rule(category: str, rule: object) -> ValueError:
    return ValueError(
        f"rate limit rule for {category!r} must be 'N/second', 'N/minute', 'N/hour', "
        f"'N/<seconds>s' (such as '8/1.5s') or a tuple (N, seconds), with N >= 1 and "
        f"seconds > 0; got {rule!r}"
    )


def _path(request: PreparedRequest) -> str:
    url = request.url or ""
    path = url.split("://", 1)[-1].partition("/")[2]
    return normalized_path("/" + path.split("?", 1)[0].split("#", 1)[0])


def everything(request: PreparedRequest) -> str:
    """The category of every request: ``"*"``."""
    return "*"


def bloxs_category(request: PreparedRequest) -> str:
    """The Bloxs rate-limit type of ``request``: ``authorization``, ``download``,
    ``filter``, ``update`` or ``get``."""
    method = (request.method or "GET").upper()
    path = _path(request).rstrip("/").lower()
    last = path.rsplit("/", 1)[-1]
    if method == "POST" and last == "authorization":
        return "authorization"
    if last == "download" or "/download/" in path:
        return "download"
    if method == "POST" and last == "filter":
        return "filter"
    if method in _WRITES:
        return "update"
    return "get"


def dealcloud_category(request: PreparedRequest) -> str:
    """DealCloud limits each endpoint: the category is method and path, such as
    ``"GET /api/rest/v4/data/entrydata/1/entries"``."""
    return f"{(request.method or 'GET').upper()} {_path(request)}"


@dataclass(frozen=True)
class CategoryState:
    """One category of a :class:`RateLimit` as its store holds it (:meth:`RateLimit.state`).

    :ivar namespace: whose quota: the API's ``scheme://host:port``, or the
        limit's ``namespace``.
    :ivar category: the category, such as ``"get"`` or ``"GET /api/rest/v4/..."``.
    :ivar rule: the rule in force, ``(limit, period_seconds)``: the one the
        server stated, else the configured one (None: neither).
    :ivar learned: whether ``rule`` is one a server stated.
    :ivar paused_for: seconds left of a pause a server asked for (0: none).
    :ivar in_flight: permits whose request was sent and has not ended.
    :ivar ended: permits ended recently enough to still count.
    :ivar waiting: permits reserved whose holders wait for their time (nothing sent).
    :ivar holders: who holds the in-flight and waiting permits, and since when
        (:class:`~requests_bloxs_errors.storage.PermitHolder`).
    """

    namespace: str
    category: str
    rule: RuleValue | None
    learned: bool
    paused_for: float
    in_flight: int
    ended: int
    waiting: int = 0
    holders: tuple[PermitHolder, ...] = ()


class RateLimit:
    """Pace requests to a quota: at most N per period in any interval, per category,
    as the server counts them (the window counts from the end of each attempt).

    Usage::

        >>> limit = rbe.RateLimit({"*": "5/second"}, storage="sqlite:////var/tmp/rbe.db")
        >>> rbe.mount(session, "https://api.example.com/", rate_limit=limit)
        >>> rbe.mount(session, "https://acme.bloxs.io/", rate_limit="bloxs")

    :param rules: ``{category: rule}``; a rule is ``"N/second"``,
        ``"N/minute"``, ``"N/hour"``, ``"N/<seconds>s"`` (``"8/1.5s"``) or
        ``(N, seconds)``. The key ``"*"`` serves every category without a
        rule of its own. A category with no rule is paced only by what the
        server says (a pause after a 429, a quota it states).
    :param categorize: ``categorize(prepared_request) -> str | None``, the
        request's category (None: not limited). Default: ``"*"`` for every
        request, which needs ``rules`` to have only that key.
    :param storage: where the counts live: ``"memory://"`` (this process),
        ``"sqlite:///path"`` (processes on one host), ``"redis://host:port/db"``
        or ``"rediss://..."`` (hosts; needs the ``redis`` extra), and
        ``"redis+sentinel://..."`` or ``"redis+cluster://..."``
        (see :mod:`~requests_bloxs_errors.storage`).
    :param namespace: the prefix of every key; default the request's
        ``scheme://host:port``, so every client of one API shares its quota.
    :param max_wait: the longest wait for a permit, in seconds (at most a
        day); a longer one raises :class:`~requests_bloxs_errors.RateLimitError`
        at once, without sending. The call's ``deadline`` bounds the wait too.
    :param clock: where the store's time comes from
        (:data:`~requests_bloxs_errors.clock.SYSTEM`): what a memory or SQLite
        store keeps is dated on it (Redis keeps its own). A call's wait for a
        permit is slept on the adapter's clock, as its deadline is: in a test,
        give the adapter (``mount(..., clock=)``) the same
        :class:`~requests_bloxs_errors.clock.FakeClock` (see
        :mod:`~requests_bloxs_errors.resilience.pacing`).
    :raises ValueError, TypeError: on a bad rule, storage URL or argument.
    :raises ImportError: for a Redis URL without the ``redis`` extra.
    """

    def __init__(
        self,
        rules: Mapping[str, RuleSpec],
        *,
        categorize: Categorize | None = None,
        storage: str = "memory://",
        namespace: str | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Clock = SYSTEM,
    ) -> None:
        if not isinstance(rules, Mapping):
            raise TypeError(f"rules must be a mapping of category to rule, not {rules!r}")
        self._rules = {
            str(category): parse_rule(category, rule) for category, rule in rules.items()
        }
        if categorize is None:
            others = sorted(set(self._rules) - {"*"})
            if others:
                raise ValueError(
                    f"rules for {others} need a categorize function that returns those "
                    "categories; without one every request is in the category '*'"
                )
            categorize = everything
        if not callable(categorize):
            raise TypeError(f"categorize must be callable, not {type(categorize).__name__}")
        self._categorize = categorize
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        self.namespace = namespace
        if (
            isinstance(max_wait, bool)
            or not isinstance(max_wait, (int, float))
            or not 0 <= max_wait <= MAX_PAUSE
        ):
            raise ValueError(
                f"max_wait must be a number of seconds from 0 to {MAX_PAUSE:g} (a day), "
                f"got {max_wait!r}"
            )
        self.max_wait = float(max_wait)
        self.storage = parse(storage, what="storage", capability=PermitLog)
        self.clock = clock
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._store = Fallback(
            open_backend(self.storage, self.clock),
            feature="Rate limit storage",
            meanwhile="pacing within this process only",
            clock=self.clock,
        )
        self._warned: set[str] = set()  # categories whose bound was logged
        self._warned_lock = ProcessLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for runtime in ("_store", "_warned", "_warned_lock"):  # each process its own
            del state[runtime]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    @classmethod
    def bloxs(cls, **kwargs: Any) -> RateLimit:
        """Bloxs's documented limits per environment: ``authorization`` and
        ``download`` 10/min, ``filter`` and ``update`` 100/min, ``get`` 500/min.

        :param kwargs: as for :class:`RateLimit`; ``rules`` given here are
            laid over the documented ones.
        """
        rules = {**BLOXS_RULES, **kwargs.pop("rules", {})}
        kwargs.setdefault("categorize", bloxs_category)
        return cls(rules, **kwargs)

    @classmethod
    def dealcloud(cls, **kwargs: Any) -> RateLimit:
        """DealCloud's limits are per endpoint (method and path) and not
        published: nothing is assumed until the server states a quota (its
        429 body) or a reset (``X-Rate-Limit-*`` headers).

        :param kwargs: as for :class:`RateLimit` (``rules`` may add known limits).
        """
        kwargs.setdefault("categorize", dealcloud_category)
        return cls(kwargs.pop("rules", {}), **kwargs)

    @property
    def rules(self) -> dict[str, tuple[int, float]]:
        """The rules in force, ``{category: (limit, period_seconds)}``: the configured
        ones, and those a server stated (:meth:`state`), which win while they last.

        Reads the store: a rule learned by any process that shares it shows.
        """
        rules = dict(self._rules)
        for state in self.state():
            if state.learned and state.rule is not None:
                rules[state.category] = state.rule
        return rules

    @property
    def configured_rules(self) -> dict[str, tuple[int, float]]:
        """The rules as given, ``{category: (limit, period_seconds)}`` (a copy)."""
        return dict(self._rules)

    def state(self) -> list[CategoryState]:
        """What the store holds for this limit now: one :class:`CategoryState` per
        category that has a permit, a pause or a learned rule, for every process
        sharing the store (with a ``namespace``, only its own keys).

        While the store fails, what this process paces by meanwhile.
        """
        found = []
        for held in self._store.snapshot():
            namespace, _, category = held.key.partition("|")
            if self.namespace is not None:
                if not held.key.startswith(self.namespace + "|"):
                    continue
                namespace, category = self.namespace, held.key[len(self.namespace) + 1 :]
            found.append(
                CategoryState(
                    namespace=namespace,
                    category=category,
                    rule=held.learned or self.rule(category),
                    learned=held.learned is not None,
                    paused_for=held.paused_for,
                    in_flight=held.in_flight,
                    ended=held.ended,
                    waiting=held.waiting,
                    holders=held.holders,
                )
            )
        return found

    def category(self, request: PreparedRequest) -> str | None:
        """The category of ``request``, or None when it is not limited."""
        category = self._categorize(request)
        if category is not None and not isinstance(category, str):
            raise TypeError(f"categorize must return a str or None, not {type(category).__name__}")
        return category

    def rule(self, category: str) -> RuleValue | None:
        """The configured rule of ``category`` (or of ``"*"``), or None."""
        return self._rules.get(category) or self._rules.get("*")

    def bounded_pause(self, category: str, seconds: float) -> float:
        """``seconds`` of pause a server asked for ``category``, at most the longest
        its configured rule allows (:func:`~requests_bloxs_errors.storage.windows.longest_pause`):
        one hostile answer cannot hold a category for a fleet. Logged once per category."""
        longest = longest_pause(self.rule(category))
        if seconds <= longest:
            return seconds
        self._clamped(
            category,
            f"a pause of {seconds:.0f}s asked by the server was cut to {longest:g}s, the "
            "longest the category's rule allows",
        )
        return longest

    def longest_learned(self, category: str) -> float:
        """The longest period a rule learned for ``category`` may have: its configured
        rule's, or :data:`MAX_LEARNED_PERIOD` without one."""
        configured = self.rule(category)
        return configured[1] if configured is not None else MAX_LEARNED_PERIOD

    def bounded_rule(self, category: str, limit: int, period: float) -> RuleValue:
        """A rule the server stated for ``category``, its period at most the configured
        rule's (or :data:`MAX_LEARNED_PERIOD` without one). Logged once per category."""
        configured = self.rule(category)
        longest = self.longest_learned(category)
        if period <= longest:
            return limit, period
        self._clamped(
            category,
            f"a rule of {limit} per {period:.0f}s stated by the server was taken as "
            f"{limit} per {longest:g}s, the longest period "
            + ("the category's rule has" if configured is not None else "learned without one"),
        )
        return limit, longest

    def _clamped(self, category: str, what: str) -> None:
        with self._warned_lock:
            if category in self._warned:
                return
            self._warned.add(category)
        logger.warning("Rate limit %r: %s", category, what)

    def key(self, request: PreparedRequest, category: str) -> str:
        """The store key of ``category`` for ``request``: namespaced by API."""
        return f"{self.namespace or origin_of(request.url or '')}|{category}"

    def __repr__(self) -> str:
        return (
            f"RateLimit({self._rules!r}, storage={self.storage.shown!r}, "
            f"namespace={self.namespace!r}, max_wait={self.max_wait:g})"
        )

    # -- the store, as the pacing step uses it ---------------------------------

    @property
    def store(self) -> Fallback:
        """The permit store (falls back to memory while the configured one fails)."""
        return self._store

    def close(self) -> None:
        """Close the store's connections (reopened on the next use)."""
        self._store.close()
