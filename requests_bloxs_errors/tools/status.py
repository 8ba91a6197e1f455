"""``python -m requests_bloxs_errors status``: what the shared stores hold, at a glance.

Three sections, each read from the store its flag names, or else its variable,
and the circuits, read from the first one's:

rate limits (``--storage``, ``RBE_STORAGE``)
    per key (the API's origin, or a namespace) and category: the rule in
    force, configured (``RBE_RATE_LIMIT``) or stated by the server (and until
    when it holds), the permits of the current window that were used (sent:
    ended, or in flight now) and those waiting for their time, and any pause
    with its end; then each permit in flight or waiting with its holder (host
    and process id) and since when. A configured rule that saw no traffic is
    listed too, ``0 used``;
the token cache (``--token-cache``, ``RBE_TOKEN_CACHE``)
    per entry: whose it is, when the environment's credentials name it (an
    entry's name is an HMAC only its credential's secret can produce), and
    when it expires. Never a token: entries are not opened;
the outbox (``--outbox``, ``RBE_OUTBOX``)
    its entries by host and state;
circuits (the rate-limit storage, when its backend keeps them)
    the circuits processes published there (see
    :mod:`~requests_bloxs_errors.resilience.breaker`), by host, then process
    (host name and pid): the state, since when, the failures counted, and when
    it was published. A record lapses unless its process publishes it again.

Every time is printed in UTC, ISO 8601, with the seconds to go or gone
(:mod:`._times`). ``--json`` prints one JSON document instead, whose times
are numbers (seconds, or seconds since the epoch), each beside its ISO form.
A store is read only through its interfaces (:class:`~requests_bloxs_errors.storage.Backend` and its
capability), so a backend of your own shows as a built-in one does. A store
that does not exist yet, or cannot be read, is one line on stderr naming it
(password masked) and exit status 1; the other sections still print; status
creates nothing. A key of a readable store that is not what this package
writes there (a stray key, another type, a value that is not a number) is
skipped and named under its section (``skipped`` in JSON); the rest still
shows. Key names and values are printed neutralised (:func:`~._term.neutral`):
nothing a store holds reaches the terminal raw. :func:`check_stores` is
``config --check``: it tries each configured store the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..clock import SYSTEM, Clock
from ..storage import (
    STORE_TIMEOUT,
    CircuitBoard,
    OutboxStore,
    PermitLog,
    PermitState,
    StorageURL,
    TokenStore,
    accepted,
    open_backend,
    parse,
)
from ._term import Terminal, complain
from ._times import ago, iso, until

__all__ = ["add_command", "check_stores", "run_status"]

#: Each section: its flag, its variable, what it is called, and what its store must keep.
SECTIONS = (
    ("storage", "RBE_STORAGE", "rate-limit storage", PermitLog),
    ("token_cache", "RBE_TOKEN_CACHE", "token cache", TokenStore),
    ("outbox", "RBE_OUTBOX", "outbox", OutboxStore),
)


class StoreError(Exception):
    """A store that cannot be read: its message is one line naming it."""


def add_command(commands: Any) -> None:
    """Add ``status`` to the main parser."""
    status = commands.add_parser(
        "status",
        help="what the rate limit, the token cache and the outbox hold now",
        description="Read the shared stores (each flag defaults to its variable) and print "
        "the rate limits in force with their pauses, the token cache's entries (never a "
        "token), the outbox's entries by host and state, and the circuits processes "
        "published to the rate-limit store. A store that cannot be read is one line on "
        "stderr, and the exit status is 1.",
    )
    for flag, variable, what, capability in SECTIONS:
        status.add_argument(
            "--" + flag.replace("_", "-"),
            metavar="URL",
            default=None,
            help=f"the {what}: {accepted(capability)} (default: ${variable})",
        )
    status.add_argument("--json", action="store_true", help="print one JSON document")


@dataclass
class HolderRow:
    """One permit in flight or waiting, and who holds it, as ``status`` shows it.

    :ivar state: ``"sending"`` or ``"waiting"``.
    :ivar since: when it was sent (``"sending"``) or reserved (``"waiting"``),
        seconds since the epoch on the store's clock; ``since_iso`` is the same.
    :ivar at: its time, the earliest it may be sent; ``at_iso`` is the same.
    """

    state: str
    host: str
    pid: int
    since: float
    since_iso: str
    at: float
    at_iso: str


@dataclass
class RateLimitRow:
    """One key of the rate-limit store (or a configured rule that saw no traffic,
    ``namespace`` None), as ``status`` shows it.

    :ivar sent: permits of the current window whose request was sent: ended, or
        in flight.
    :ivar used: the same number: what the window has used of its rule.
    :ivar in_flight: of the permits sent, those whose request has not ended.
    :ivar waiting: permits reserved whose holder waits for their time (not sent).
    :ivar learned_for: seconds the server's rule still holds (``learned_until``:
        until when, ISO 8601).
    :ivar paused_for: seconds left of its pause (``paused_until``: until when).
    :ivar now: the store's time when it was read, seconds since the epoch: what
        every time of the row is measured against.
    """

    namespace: str | None
    category: str
    rule: tuple[int, float] | None
    learned: bool
    learned_for: float
    learned_until: str | None
    sent: int
    used: int
    in_flight: int
    waiting: int
    paused_for: float
    paused_until: str | None
    now: float
    holders: list[HolderRow] = field(default_factory=list)


#: What reads one section: its store's URL, the environment, and the clock.
Reader = Callable[[StorageURL, Mapping[str, str], Clock], Any]


def run_status(
    term: Terminal, args: argparse.Namespace, env: Mapping[str, str], clock: Clock = SYSTEM
) -> int:
    """Print what each store given (or configured) holds; return the exit status.

    :param clock: where this process's time comes from (the stores keep their own).
    """
    urls = {
        flag: getattr(args, flag) or env.get(variable, "").strip() or None
        for flag, variable, _, _ in SECTIONS
    }
    if not any(urls.values()):
        raise StoreError(
            "no store to read: give --storage, --token-cache or --outbox, or set "
            "RBE_STORAGE, RBE_TOKEN_CACHE or RBE_OUTBOX"
        )
    readers: dict[str, Reader] = {
        "storage": _rate_limits,
        "token_cache": _tokens,
        "outbox": _outbox,
    }
    found: dict[str, Any] = {}
    failed = False
    for flag, _, what, capability in SECTIONS:
        url = urls[flag]
        if url is None:
            continue
        try:
            storage = _parsed(url, what, capability)
            found[flag] = {"url": storage.shown, **readers[flag](storage, env, clock)}
        except StoreError as exc:
            complain(str(exc))
            found[flag] = {"url": url and parse_shown(url), "error": str(exc)}
            failed = True
    circuits = _circuits(urls["storage"], found.get("storage"), clock)
    if circuits is not None:
        found["circuits"] = circuits
        failed = failed or "error" in circuits
    if args.json:
        term.json(found, default=_plain)
    else:
        _print(term, found)
        _print_circuits(term, found.get("circuits"))
    return 1 if failed else 0


def check_stores(term: Terminal, env: Mapping[str, str]) -> int:
    """``config --check``: try every store the environment configures; 1 if one fails."""
    failed = False
    tried = False
    for _, variable, what, capability in SECTIONS:
        url = env.get(variable, "").strip()
        if not url:
            continue
        tried = True
        try:
            storage = _parsed(url, what, capability)
            _close(_reach(storage, what, create=True))
        except StoreError as exc:
            complain(str(exc))
            failed = True
        else:
            term.line(f"{variable}: {storage.shown} answers", "green")
    if not tried:
        term.line("no shared store is configured (RBE_STORAGE, RBE_TOKEN_CACHE, RBE_OUTBOX)")
    return 1 if failed else 0


def parse_shown(url: str) -> str:
    """``url`` fit for a message, whether or not it parses."""
    from ..urls import safe_for_message  # noqa: PLC0415 - (a small module, loaded anyway)

    return safe_for_message(url).strip("'\"")


def _parsed(url: str, what: str, capability: type) -> StorageURL:
    try:
        return parse(url, what=what, capability=capability)
    except (ValueError, TypeError, ImportError) as exc:
        raise StoreError(str(exc)) from None


def _reach(storage: StorageURL, what: str, *, create: bool = False) -> Any:
    """The store's backend, once its health check (``check``) says it answers.

    A store that does not exist yet (``exists``) is an error unless ``create``
    (``config --check``: then the check says whether it could be made): status
    never creates one.
    """
    backend = open_backend(storage)
    try:
        if not create and not backend.exists(timeout=STORE_TIMEOUT):
            raise StoreError(
                f"{what} {storage.shown}: no such file or database yet (status creates none)"
            )
        backend.check(timeout=STORE_TIMEOUT)
    except StoreError:
        _close(backend)
        raise
    except Exception as exc:
        _close(backend)
        raise StoreError(f"{what} {storage.shown} {_why(exc)}") from None
    return backend


def _why(exc: BaseException) -> str:
    """Why a store cannot be read, in words that fit after its name (no URL, no secret)."""
    if isinstance(exc, PermissionError):
        return f"is refused: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"cannot be read: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot be opened: {exc.strerror.lower()}"
    return f"cannot be reached ({type(exc).__name__})"


def _close(backend: Any) -> None:
    with contextlib.suppress(Exception):  # closing what failed: nothing more to tell
        backend.close()


def _read(storage: StorageURL, what: str, read: Callable[[Any], Any]) -> Any:
    backend = _reach(storage, what)
    try:
        return read(backend)
    except Exception as exc:
        raise StoreError(f"{what} {storage.shown} {_why(exc)}") from None
    finally:
        _close(backend)


# -- the three sections ----------------------------------------------------------------


def _survey(backend: PermitLog) -> tuple[list[PermitState], list[tuple[str, str]]]:
    """The store's permit states, and the keys it skipped."""
    states, skipped = backend.survey(timeout=STORE_TIMEOUT)
    return list(states), list(skipped)


def _rate_limits(storage: StorageURL, env: Mapping[str, str], clock: Clock) -> dict[str, Any]:
    configured = _configured_limit(storage, env)
    held, skipped = _read(storage, "rate-limit storage", _survey)
    wall = clock.time()
    rows = [_rate_limit_row(state, configured, wall) for state in held]
    seen = {row.category for row in rows}
    rules = configured.configured_rules if configured is not None else {}
    for category, rule in sorted(rules.items()):
        if category not in seen:  # configured, and no traffic yet
            rows.append(_idle_row(category, rule, wall))
    found: dict[str, Any] = {"entries": rows}
    if skipped:
        found["skipped"] = [{"key": name, "why": why} for name, why in skipped]
    return found


def _rate_limit_row(state: PermitState, configured: Any, wall: float) -> RateLimitRow:
    """One key's row; its times measured against the store's clock (this process's,
    ``wall``, when the store does not say)."""
    namespace, _, category = state.key.partition("|")
    now = state.now or wall
    return RateLimitRow(
        namespace=namespace,
        category=category,
        rule=state.learned or (configured.rule(category) if configured is not None else None),
        learned=state.learned is not None,
        learned_for=round(state.learned_for, 1),
        learned_until=iso(now + state.learned_for) if state.learned is not None else None,
        sent=state.in_flight + state.ended,
        used=state.in_flight + state.ended,
        in_flight=state.in_flight,
        waiting=state.waiting,
        paused_for=round(state.paused_for, 1),
        paused_until=iso(now + state.paused_for) if state.paused_for > 0 else None,
        now=now,
        holders=[
            HolderRow(h.state, h.host, h.pid, h.since, iso(h.since), h.at, iso(h.at))
            for h in state.holders
        ],
    )


def _idle_row(category: str, rule: tuple[int, float], wall: float) -> RateLimitRow:
    """A configured rule that no key of the store holds: nothing used."""
    return RateLimitRow(
        namespace=None,
        category=category,
        rule=rule,
        learned=False,
        learned_for=0.0,
        learned_until=None,
        sent=0,
        used=0,
        in_flight=0,
        waiting=0,
        paused_for=0.0,
        paused_until=None,
        now=wall,
    )


def _configured_limit(storage: StorageURL, env: Mapping[str, str]) -> Any:
    """The rate limit ``RBE_RATE_LIMIT`` configures (its rules), or None."""
    spec = env.get("RBE_RATE_LIMIT", "").strip()
    if not spec or spec.lower() == "none":
        return None
    from ..resilience.ratelimit import RateLimit  # noqa: PLC0415 - loaded when used

    try:
        if spec.lower() == "bloxs":
            return RateLimit.bloxs()
        if spec.lower() == "dealcloud":
            return RateLimit.dealcloud()
        return RateLimit({"*": spec})
    except ValueError:
        return None  # (config says what is wrong with it)


def _tokens(storage: StorageURL, env: Mapping[str, str], clock: Clock) -> dict[str, Any]:
    names = _credential_names(storage, env)
    listed = _read(storage, "token cache", lambda b: b.token_entries(timeout=STORE_TIMEOUT))
    now = clock.time()
    entries = [
        {
            "entry": name[:12],
            "credential": names.get(name, "another credential (not in this environment)"),
            "seconds_left": round(left, 1),
            "expires": iso(now + left),
        }
        for name, left in listed
    ]
    return {"entries": entries, "now": now}


def _credential_names(storage: StorageURL, env: Mapping[str, str]) -> dict[str, str]:
    """Entry name to a description of the environment's credential it belongs to."""
    from .envconfig import ConfigError, credentials_from  # noqa: PLC0415

    try:
        found = credentials_from({**env, "RBE_TOKEN_CACHE": storage.url})
    except (ConfigError, ImportError, ValueError):
        return {}
    names = {}
    for credential, home in found:
        cache = getattr(credential, "cache", None)
        if cache is not None:
            names[cache.name] = f"{type(credential).__name__} for {home}"
            cache.close()
    return names


def _outbox(storage: StorageURL, env: Mapping[str, str], clock: Clock) -> dict[str, Any]:
    rows = _read(storage, "outbox", lambda b: b.entry_rows(timeout=STORE_TIMEOUT))
    counts = Counter((row.host, row.state) for row in rows)  # nothing unsealed
    entries = [
        {"host": host, "state": state, "entries": count}
        for (host, state), count in sorted(counts.items())
    ]
    return {"entries": entries}


def _circuits(
    url: str | None, rate_limits: Mapping[str, Any] | None, clock: Clock
) -> dict[str, Any] | None:
    """The circuits processes published to the rate-limit store, by host, then process
    (host name, pid); None without that store, when its section could not be read
    (it said why), or when its backend keeps no circuits."""
    if url is None or rate_limits is None or "error" in rate_limits:
        return None
    try:
        storage = parse(url, what="rate-limit storage", capability=CircuitBoard)
    except (ValueError, TypeError, ImportError):
        return None  # a backend of one's own that keeps none
    try:
        records = _read(
            storage, "rate-limit storage", lambda b: b.circuit_records(timeout=STORE_TIMEOUT)
        )
    except StoreError as exc:
        complain(str(exc))
        return {"url": storage.shown, "error": str(exc)}
    now = clock.time()
    entries = [
        {
            "host": record.host,
            "holder_host": record.holder_host,
            "pid": record.pid,
            "state": record.state,
            "since": record.since,
            "since_iso": iso(record.since),
            "failures": record.failures,
            "published": record.published,
            "published_iso": iso(record.published),
        }
        for record in sorted(records, key=lambda r: (r.host, r.holder_host, r.pid))
    ]
    return {"url": storage.shown, "entries": entries, "now": now}


# -- printing -------------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, RateLimitRow):
        return asdict(value)
    raise TypeError(type(value).__name__)


def _rule_text(row: RateLimitRow) -> str:
    if row.rule is None:
        return "none (pauses only)"
    limit, period = row.rule
    text = f"{limit} per {period:g}s"
    if row.learned:
        text += f", stated by the server until {until(row.now + row.learned_for, row.now)}"
    return text


def _window_text(row: RateLimitRow) -> str:
    """``6 used (2 in flight), 4 waiting``: sent this window, and not sent yet."""
    text = f"{row.used} used" + (f" ({row.in_flight} in flight)" if row.in_flight else "")
    return text + (f", {row.waiting} waiting" if row.waiting else "")


def _print_rate_limits(term: Terminal, section: Mapping[str, Any]) -> None:
    entries: list[RateLimitRow] = section["entries"]
    term.table(
        ["api", "category", "rule in force", "this window", "pause"],
        [
            [
                row.namespace if row.namespace is not None else "-",
                row.category,
                _rule_text(row),
                _window_text(row),
                f"until {until(row.now + row.paused_for, row.now)}" if row.paused_for else "-",
            ]
            for row in entries
        ],
    )
    held = [(row, holder) for row in entries for holder in row.holders]
    if held:
        term.line()
        term.line("permits in flight or waiting, by holder:", "bold")
        term.table(
            ["api", "category", "state", "host", "pid", "since", "its time"],
            [
                [
                    row.namespace or "-",
                    row.category,
                    holder.state,
                    holder.host,
                    str(holder.pid),
                    ago(holder.since, row.now),
                    until(holder.at, row.now) if holder.state == "waiting" else "-",
                ]
                for row, holder in held
            ],
        )


def _print_tokens(term: Terminal, section: Mapping[str, Any]) -> None:
    now = section["now"]
    term.table(
        ["entry", "credential", "expires"],
        [
            [e["entry"], e["credential"], until(now + e["seconds_left"], now)]
            for e in section["entries"]
        ],
    )


def _print_outbox(term: Terminal, section: Mapping[str, Any]) -> None:
    term.table(
        ["host", "state", "entries"],
        [[e["host"], e["state"], str(e["entries"])] for e in section["entries"]],
    )


#: How each section prints, when it has entries.
_PRINTERS: dict[str, Callable[[Terminal, Mapping[str, Any]], None]] = {
    "storage": _print_rate_limits,
    "token_cache": _print_tokens,
    "outbox": _print_outbox,
}


def _print(term: Terminal, found: Mapping[str, Any]) -> None:
    first = True
    for flag, _, what, _ in SECTIONS:
        section = found.get(flag)
        if section is None:
            continue
        if not first:
            term.line()
        first = False
        term.line(f"{what}: {section['url']}", "bold")
        if "error" in section:
            term.line(f"  {section['error']}", "red")
            continue
        if section["entries"]:
            _PRINTERS[flag](term, section)
        else:
            term.line("  (empty)", "dim")
        skipped = section.get("skipped", ())
        if skipped:
            term.line(
                f"  skipped {len(skipped)} key(s) that are not what this package writes:",
                "yellow",
            )
            for stray in skipped:
                term.line(f"    {stray['key']}: {stray['why']}", "yellow")


def _print_circuits(term: Terminal, section: Mapping[str, Any] | None) -> None:
    """The circuits processes published, one row per host and process."""
    if section is None:
        return
    term.line()
    term.line(f"circuits published to {section['url']}", "bold")
    if "error" in section:
        term.line(f"  {section['error']}", "red")
        return
    if not section["entries"]:
        term.line("  (none published)", "dim")
        return
    now = section["now"]
    term.table(
        ["host", "process", "state", "since", "failures", "published"],
        [
            [
                e["host"],
                f"{e['holder_host']} pid {e['pid']}",
                e["state"],
                ago(e["since"], now),
                str(e["failures"]),
                ago(e["published"], now),
            ]
            for e in section["entries"]
        ],
    )
