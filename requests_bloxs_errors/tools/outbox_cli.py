"""``python -m requests_bloxs_errors outbox list|show ID|replay|drop ID [--db sqlite:///path]``.

``--db`` defaults to ``RBE_OUTBOX``, the variable ``run`` reads: on call, the
commands find the outbox the jobs write. ``list`` and ``show`` take
``--json``; ``replay`` prints what happened to each entry (the answer, and
why it stays queued) and exits 0 only when nothing failed (entries skipped
as uncertain are reported, not failed).

``replay`` signs with the credentials the ``request`` command takes (flags,
or ``BLOXS_*`` / ``DEALCLOUD_*`` variables), and only for the API they name
(``BLOXS_BASE_URL`` / ``--base-url``, ``DEALCLOUD_TOKEN_URL`` / ``--token-url``):
where credentials go is never taken from a queued entry, so a webhook queued
beside the API's writes never sees them. Exit status: 0 when everything
went, 1 when something failed, 2 for bad input (a missing, unreadable or
damaged database is one line, never a traceback).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests

from ..adapter import mount
from ..resilience.outbox import Outbox, OutboxEntry, ReplayReport
from ..storage import STORE_TIMEOUT, OutboxStore, accepted, open_backend, parse
from ..urls import host_of
from . import _argtypes as argtypes
from ._term import Terminal, safe_text
from ._times import ago, iso

if TYPE_CHECKING:
    from ..credentials.auth import Credential

__all__ = ["add_commands", "replay_summary", "run_outbox"]

#: Header names whose values ``show`` masks: they may carry a secret of the caller's own.
_SECRET_WORDS = ("key", "token", "secret", "auth", "signature", "password", "session")


def add_commands(
    commands: Any,  # argparse's _SubParsersAction of the main parser's class
    credential_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add ``outbox`` and its subcommands to the main parser."""
    outbox = commands.add_parser(
        "outbox",
        help="list, show, replay or drop the writes kept in an outbox",
        description="The writes an adapter with outbox= kept for a later replay.",
    )
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    actions.required = True
    for name, help_text, description in (
        (
            "list",
            "list the entries",
            "Every entry: when it was queued (ISO 8601, UTC, and how long ago), the "
            "request, why it was kept, its state and how often it was replayed.",
        ),
        (
            "show",
            "show one entry",
            "One entry whole: its headers (secrets masked) and the start of its body.",
        ),
        (
            "replay",
            "send the queued entries again",
            "Send each queued entry once more, oldest first, signed only for the API the "
            "credentials name; print what happened to each, and how many stay queued and "
            "why. Exit status 0 when nothing failed, 1 when something did.",
        ),
        ("drop", "remove one entry", "Remove one entry, whatever its state."),
    ):
        action = actions.add_parser(name, help=help_text, description=description)
        action.add_argument(
            "--db", default=None, help=f"the outbox: {accepted(OutboxStore)} (default: $RBE_OUTBOX)"
        )
        if name in ("list", "show"):
            action.add_argument("--json", action="store_true", help="print JSON")
        if name in ("show", "drop"):
            action.add_argument("id", type=argtypes.entry_id, metavar="ID", help="the entry's id")
        if name == "replay":
            action.add_argument(
                "--include-uncertain",
                action="store_true",
                help="also send entries the server may have processed already",
            )
            action.add_argument(
                "--timeout",
                type=argtypes.positive,
                default=30.0,
                help="seconds per attempt (default: 30)",
            )
            credential_flags(action)


class OutboxUsageError(Exception):
    """Bad input: printed as one line by the main command, exit status 2."""


def open_outbox(url: str, what: str = "--db") -> Outbox:
    """The outbox at ``url``; one its store does not hold yet (an SQLite file nobody
    made) is an error here, never created."""
    storage = parse(url, what=what, capability=OutboxStore)
    backend = open_backend(storage)
    try:
        there = backend.exists(timeout=STORE_TIMEOUT)
    finally:
        backend.close()
    if not there:
        raise OutboxUsageError(f"no outbox at {storage.shown}")
    return Outbox(url)


def run_outbox(
    term: Terminal,
    args: argparse.Namespace,
    credentials: Callable[[argparse.Namespace, str | None], list[tuple[Credential, str]]],
) -> int:
    """Run one ``outbox`` action; return the exit status.

    A database that cannot be opened or read (damaged, not private, a
    directory, a symlink) is one line naming it: :class:`OutboxUsageError`.
    """
    url = args.db or os.environ.get("RBE_OUTBOX", "").strip()
    if not url:
        raise OutboxUsageError(f"give --db {accepted(OutboxStore)}, or set RBE_OUTBOX")
    outbox = open_outbox(url, "--db" if args.db else "RBE_OUTBOX")
    try:
        if args.outbox_command == "list":
            return _list(term, outbox, as_json=args.json)
        if args.outbox_command == "show":
            return _show(term, outbox, args.id, as_json=args.json)
        if args.outbox_command == "drop":
            if not outbox.drop(args.id):
                raise OutboxUsageError(f"no entry {args.id} in the outbox")
            term.line(f"dropped entry {args.id}")
            return 0
        return _replay(term, outbox, args, credentials)
    except (sqlite3.DatabaseError, OSError) as exc:
        raise OutboxUsageError(f"the outbox {outbox.storage.shown} {_unusable(exc)}") from None
    finally:
        outbox.close()


def _unusable(exc: BaseException) -> str:
    """Why a database cannot be used, in words that fit after its name."""
    if isinstance(exc, PermissionError) and not exc.strerror:  # not private: check_private
        return f"is refused: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot be opened: {exc.strerror.lower()}"
    return f"cannot be read: {exc}"


def _fields(entry: OutboxEntry) -> dict[str, Any]:
    """An entry as JSON: what ``list`` shows (never a header's value, never the body)."""
    return {
        "id": entry.id,
        "queued": iso(entry.created),
        "method": entry.method,
        "url": entry.shown_url,
        "host": entry.host,
        "kind": entry.kind,
        "status": entry.status,
        "state": entry.state,
        "uncertain": entry.uncertain,
        "replays": entry.tries,
        "last_error": entry.last_error,
        "trace_id": entry.trace_id,
    }


def _list(term: Terminal, outbox: Outbox, *, as_json: bool = False) -> int:
    entries = outbox.entries()
    if as_json:
        term.json([_fields(e) for e in entries])
        return 0
    if not entries:
        term.line("the outbox is empty")
        return 0
    now = outbox.clock.time()
    rows = [
        [
            str(e.id),
            ago(e.created, now),
            e.method,
            e.shown_url,
            e.kind + (f" {e.status}" if e.status else ""),
            e.state + (", uncertain" if e.uncertain else ""),
            str(e.tries),
        ]
        for e in entries
    ]
    term.table(["id", "queued", "method", "url", "why", "state", "replays"], rows)
    return 0


def _masked(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with each value that may be a secret as ``***`` (an
    ``Idempotency-Key`` names the write: it is shown)."""
    return {
        name: value
        if name.lower() == "idempotency-key"
        or not any(word in name.lower() for word in _SECRET_WORDS)
        else "***"
        for name, value in headers.items()
    }


def _show(term: Terminal, outbox: Outbox, entry_id: int, *, as_json: bool = False) -> int:
    entry = outbox.get(entry_id)
    if entry is None:
        raise OutboxUsageError(f"no entry {entry_id} in the outbox")
    if as_json:
        shown = {
            **_fields(entry),
            "headers": _masked(entry.headers),
            "body_bytes": len(entry.body),
            "body": entry.body.decode("utf-8", "replace"),
        }
        term.json(shown)
        return 0
    term.line(f"{entry.id}. {entry.method} {entry.shown_url}", "bold")
    term.line(f"  queued:     {ago(entry.created, outbox.clock.time())}, {entry.kind}"
              + (f" {entry.status}" if entry.status else ""))  # fmt: skip
    term.line(
        f"  state:      {entry.state}" + (f" ({entry.last_error})" if entry.last_error else "")
    )
    term.line(
        "  uncertain:  "
        + ("yes: the server may have processed it already" if entry.uncertain else "no")
    )
    if entry.trace_id:
        term.line(f"  trace id:   {entry.trace_id}")
    for name, value in _masked(entry.headers).items():
        term.line(f"  {name}: {value}")
    term.line(f"  body:       {len(entry.body)} bytes")
    if entry.body:
        body = safe_text(entry.body[:500].decode("utf-8", "replace"))
        term.lines("  " + body.replace("\n", "\n  "))
    return 0


def _replay(
    term: Terminal,
    outbox: Outbox,
    args: argparse.Namespace,
    credentials: Callable[[argparse.Namespace, str | None], list[tuple[Credential, str]]],
) -> int:
    entries = [e for e in outbox.entries() if e.state == "queued"]
    # the API each credential is for comes from a variable or a flag, never from
    # an entry: the first entry may be a webhook on another host
    found = credentials(args, None)
    if not found:
        term.line(
            "no credentials (BLOXS_* or DEALCLOUD_* variables, or flags): entries are sent "
            "unsigned",
            "dim",
        )
    session = requests.Session()
    try:
        mount(session, "https://")
        mount(session, "http://")
        for auth, home in found:  # entries for any other host go unsigned
            mount(session, home + "/", auth=auth)
        report = outbox.replay(
            session, include_uncertain=args.include_uncertain, timeout=args.timeout
        )
    finally:
        session.close()
    by_id: dict[int, OutboxEntry] = {e.id: e for e in entries}
    signed = {host_of(home) for _, home in found}
    styles = {"sent": "green", "failed": "red", "dead": "red", "skipped": "dim"}
    reasons: dict[int, str] = {}
    for result in report.results:
        entry = by_id.get(result.id)
        reason = result.reason
        if entry is not None and result.status in (401, 403) and entry.host not in signed:
            reason += f": no credentials for {entry.host}"
        reasons[result.id] = reason
        what = f"{entry.method} {entry.shown_url}" if entry else ""
        term.line(f"  {result.outcome:8} {result.id}  {what}: {safe_text(reason)}",
                  styles[result.outcome])  # fmt: skip
    term.line(safe_text(replay_summary(report, reasons)))
    return 0 if report.ok else 1


def replay_summary(report: ReplayReport, reasons: Mapping[int, str] | None = None) -> str:
    """What a replay did, in one line: how many entries were sent, failed, refused for
    good and skipped; how many stay queued, each reason with its count; and what to do
    about those refused for good. ``outbox replay`` and the demo print it.

    :param reasons: an entry's reason as the caller tells it (``outbox replay`` adds
        ``: no credentials for HOST`` to a refusal); the others' are the report's.
    """
    told = reasons or {}
    counts = Counter(result.outcome for result in report.results)
    summary = ", ".join(
        f"{counts[outcome]} {outcome}" for outcome in ("sent", "failed", "dead", "skipped")
    )
    stays: Counter[str] = Counter(
        told.get(result.id, result.reason)
        for result in report.results
        if result.outcome in ("failed", "skipped")
    )
    if stays:
        why = "; ".join(f"{count} x {reason}" for reason, count in stays.most_common())
        total = sum(stays.values())
        summary += f". {total} {'stays' if total == 1 else 'stay'} queued: {why}"
    if counts["dead"]:
        summary += f". {counts['dead']} refused for good: see 'outbox show ID', then drop"
    return summary
