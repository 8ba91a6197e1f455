"""``python -m requests_bloxs_errors status``: what the shared stores hold, at a glance.

Three sections, each read from the store its flag names, or else its variable:

rate limits (``--storage``, ``RBE_STORAGE``)
    per key (the API's origin, or a namespace) and category: the rule in
    force, configured (``RBE_RATE_LIMIT``) or stated by the server (and for
    how long it still holds), the requests of the current period (in flight
    and ended) and any pause with its seconds left;
the token cache (``--token-cache``, ``RBE_TOKEN_CACHE``)
    per entry: whose it is, when the environment's credentials name it (an
    entry's name is an HMAC only its credential's secret can produce), and its
    seconds left. Never a token: entries are not opened;
the outbox (``--outbox``, ``RBE_OUTBOX``)
    its entries by host and state.

``--json`` prints one JSON document instead. A store that cannot be read is
one line on stderr naming it (password masked) and exit status 1; the other
sections still print. A key of a readable store that is not what this
package writes there (a stray key, another type, a value that is not a
number) is skipped and named under its section (``skipped`` in JSON); the
rest still shows. Key names and values are printed neutralised
(:func:`~._term.neutral`): nothing a store holds reaches the terminal raw.
:func:`check_stores` is ``config --check``: it tries each configured store
the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..storage import (
    STORE_TIMEOUT,
    OutboxStore,
    PermitLog,
    StorageURL,
    TokenStore,
    accepted,
    open_backend,
    parse,
)
from ._term import Terminal, complain

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
        "token) and the outbox's entries by host and state. A store that cannot be read is "
        "one line on stderr, and the exit status is 1.",
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
class RateLimitRow:
    """One key of the rate-limit store, as ``status`` shows it."""

    namespace: str
    category: str
    rule: tuple[int, float] | None
    learned: bool
    learned_for: float
    used: int
    in_flight: int
    paused_for: float


def run_status(term: Terminal, args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print what each store given (or configured) holds; return the exit status."""
    urls = {
        flag: getattr(args, flag) or env.get(variable, "").strip() or None
        for flag, variable, _, _ in SECTIONS
    }
    if not any(urls.values()):
        raise StoreError(
            "no store to read: give --storage, --token-cache or --outbox, or set "
            "RBE_STORAGE, RBE_TOKEN_CACHE or RBE_OUTBOX"
        )
    readers: dict[str, Callable[[StorageURL, Mapping[str, str]], Any]] = {
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
            found[flag] = {"url": storage.shown, **readers[flag](storage, env)}
        except StoreError as exc:
            complain(str(exc))
            found[flag] = {"url": url and parse_shown(url), "error": str(exc)}
            failed = True
    if args.json:
        term.json(found, default=_plain)
    else:
        _print(term, found)
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
            _reach(storage, what, create=True)
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
    """The store's backend, after one read that proves it answers.

    An SQLite file that does not exist is an error unless ``create`` (then its
    directory must take it): status never creates a file.
    """
    if storage.scheme == "sqlite" and not os.path.lexists(storage.path):
        directory = os.path.dirname(storage.path) or "."
        if not create:
            raise StoreError(f"{what} {storage.shown}: no such file")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(f"{what} {storage.shown}: its directory cannot take the file")
        return None
    backend = open_backend(storage)
    try:
        _probe(backend)
    except Exception as exc:
        _close(backend)
        raise StoreError(f"{what} {storage.shown} {_why(exc)}") from None
    return backend


def _probe(backend: Any) -> None:
    """One cheap read of whatever the backend keeps."""
    for method in ("snapshot", "token_entries", "queued"):
        probe = getattr(backend, method, None)
        if probe is not None:
            probe() if method == "queued" else probe(timeout=STORE_TIMEOUT)
            return


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


def _survey(backend: Any) -> tuple[list[Any], list[tuple[str, str]]]:
    """The store's permit states, and the keys it skipped (a backend without
    ``survey`` skips none)."""
    survey = getattr(backend, "survey", None)
    if survey is not None:
        states, skipped = survey(timeout=STORE_TIMEOUT)
        return list(states), list(skipped)
    return list(backend.snapshot(timeout=STORE_TIMEOUT)), []


def _rate_limits(storage: StorageURL, env: Mapping[str, str]) -> dict[str, Any]:
    configured = _configured_limit(storage, env)
    held, skipped = _read(storage, "rate-limit storage", _survey)
    rows = []
    for state in held:
        namespace, _, category = state.key.partition("|")
        rule = state.learned or (configured.rule(category) if configured is not None else None)
        rows.append(
            RateLimitRow(
                namespace=namespace,
                category=category,
                rule=rule,
                learned=state.learned is not None,
                learned_for=round(state.learned_for, 1),
                used=state.in_flight + state.ended,
                in_flight=state.in_flight,
                paused_for=round(state.paused_for, 1),
            )
        )
    found: dict[str, Any] = {"entries": rows}
    if skipped:
        found["skipped"] = [{"key": name, "why": why} for name, why in skipped]
    return found


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


def _tokens(storage: StorageURL, env: Mapping[str, str]) -> dict[str, Any]:
    names = _credential_names(storage, env)
    listed = _read(
        storage,
        "token cache",
        lambda b: b.token_entries(timeout=STORE_TIMEOUT) if hasattr(b, "token_entries") else None,
    )
    if listed is None:
        raise StoreError(f"token cache {storage.shown}: this kind of store cannot list entries")
    entries = [
        {
            "entry": name[:12],
            "credential": names.get(name, "another credential (not in this environment)"),
            "seconds_left": round(left, 1),
        }
        for name, left in listed
    ]
    return {"entries": entries}


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


def _outbox(storage: StorageURL, env: Mapping[str, str]) -> dict[str, Any]:
    rows = _read(storage, "outbox", lambda b: b.entry_rows())
    counts = Counter((row[4], row[10]) for row in rows)  # (host, state); nothing unsealed
    entries = [
        {"host": host, "state": state, "entries": count}
        for (host, state), count in sorted(counts.items())
    ]
    return {"entries": entries}


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
    return text + (f", stated by the server ({row.learned_for:.0f}s more)" if row.learned else "")


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
        entries = section["entries"]
        if not entries:
            term.line("  (empty)", "dim")
        elif flag == "storage":
            term.table(
                ["api", "category", "rule in force", "this period", "pause"],
                [
                    [
                        row.namespace,
                        row.category,
                        _rule_text(row),
                        f"{row.used} ({row.in_flight} in flight)",
                        f"{row.paused_for:g}s left" if row.paused_for else "-",
                    ]
                    for row in entries
                ],
            )
        elif flag == "token_cache":
            term.table(
                ["entry", "credential", "expires in"],
                [[e["entry"], e["credential"], f"{e['seconds_left']:.0f}s"] for e in entries],
            )
        else:
            term.table(
                ["host", "state", "entries"],
                [[e["host"], e["state"], str(e["entries"])] for e in entries],
            )
        skipped = section.get("skipped", ())
        if skipped:
            term.line(
                f"  skipped {len(skipped)} key(s) that are not what this package writes:",
                "yellow",
            )
            for stray in skipped:
                term.line(f"    {stray['key']}: {stray['why']}", "yellow")
