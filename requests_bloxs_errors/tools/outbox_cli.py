"""``python -m requests_bloxs_errors outbox list|show ID|replay|drop ID --db sqlite:///path``.

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
import datetime
import os
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from ..adapter import mount
from ..resilience.outbox import Outbox, OutboxEntry
from ..storage import parse
from . import _argtypes as argtypes
from ._term import Terminal, safe_text

if TYPE_CHECKING:
    from ..credentials.auth import Credential

__all__ = ["add_commands", "run_outbox"]

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
    for name, help_text in (
        ("list", "list the entries"),
        ("show", "show one entry"),
        ("replay", "send the queued entries again"),
        ("drop", "remove one entry"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--db", required=True, help="the outbox: sqlite:///path")
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


def open_outbox(url: str) -> Outbox:
    """The outbox at ``url``; an absent file is an error here, never created."""
    storage = parse(url, what="--db")
    if storage.scheme != "sqlite":
        raise OutboxUsageError("--db must be sqlite:///path, the outbox an adapter writes")
    if not os.path.lexists(storage.path):
        raise OutboxUsageError(f"no outbox at {storage.path}")
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
    outbox = open_outbox(args.db)
    try:
        if args.outbox_command == "list":
            return _list(term, outbox)
        if args.outbox_command == "show":
            return _show(term, outbox, args.id)
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


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _list(term: Terminal, outbox: Outbox) -> int:
    entries = outbox.entries()
    if not entries:
        term.line("the outbox is empty")
        return 0
    rows = [
        [
            str(e.id),
            _when(e.created),
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


def _show(term: Terminal, outbox: Outbox, entry_id: int) -> int:
    entry = outbox.get(entry_id)
    if entry is None:
        raise OutboxUsageError(f"no entry {entry_id} in the outbox")
    term.line(f"{entry.id}. {entry.method} {entry.shown_url}", "bold")
    term.line(f"  queued:     {_when(entry.created)} ({entry.kind}"
              + (f", {entry.status}" if entry.status else "") + ")")  # fmt: skip
    term.line(
        f"  state:      {entry.state}" + (f" ({entry.last_error})" if entry.last_error else "")
    )
    term.line(
        "  uncertain:  "
        + ("yes: the server may have processed it already" if entry.uncertain else "no")
    )
    if entry.trace_id:
        term.line(f"  trace id:   {entry.trace_id}")
    for name, value in entry.headers.items():
        masked = "***" if any(word in name.lower() for word in _SECRET_WORDS) else value
        term.line(f"  {name}: {safe_text(masked)}")
    term.line(f"  body:       {len(entry.body)} bytes")
    if entry.body:
        term.line("  " + safe_text(entry.body[:500].decode("utf-8", "replace")))
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
    for label, ids, style in (
        ("sent", report.sent, "green"),
        ("failed", report.failed, "red"),
        ("skipped", report.skipped, "dim"),
    ):
        for entry_id in ids:
            entry = by_id.get(entry_id)
            what = f"{entry.method} {entry.shown_url}" if entry else ""
            term.line(f"  {label:8} {entry_id}  {what}", style)
    term.line(
        f"{len(report.sent)} sent, {len(report.failed)} failed, {len(report.skipped)} skipped"
        + (" (uncertain: --include-uncertain sends them)" if report.skipped else "")
    )
    return 0 if report.ok else 1
