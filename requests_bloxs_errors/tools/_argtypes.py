"""Argument types for the command line: numbers within bounds, as argparse's one-line errors."""

from __future__ import annotations

import argparse

__all__ = [
    "RealDefaults",
    "count",
    "entry_id",
    "error_status",
    "number",
    "port",
    "positive",
    "seconds_or_none",
]

_SMALLEST = 1e-6  # "above 0", for seconds
_FOREVER = 1e9
#: The largest entry id SQLite can hold.
_LARGEST_ID = 2**63 - 1


class RealDefaults(argparse.HelpFormatter):
    """``--help`` with each option's default, where it has one: an option whose
    default is None or False (unset, or a flag) shows none, and one whose help
    already says its default is left as it is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def number(
    text: str, kind: type[float] | type[int], lowest: float, highest: float, what: str
) -> float:
    """``text`` as a ``kind`` within ``[lowest, highest]``, or argparse's one-line error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
    if not lowest <= value <= highest:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 for any free one."""
    return int(number(text, int, 0, 65535, "a port from 0 to 65535 (0: any free port)"))


def positive(text: str) -> float:
    """Seconds above 0."""
    return number(text, float, _SMALLEST, _FOREVER, "a number of seconds above 0")


def seconds_or_none(text: str) -> float | None:
    """Seconds, 0 or more, or ``none`` for no limit."""
    if text.strip().lower() in ("none", "inf"):
        return None
    return number(text, float, 0, _FOREVER, "0 or more seconds, or 'none'")


def count(text: str) -> int:
    """A whole number, 0 or more."""
    return int(number(text, int, 0, 10**9, "a whole number, 0 or more"))


def entry_id(text: str) -> int:
    """An outbox entry's id."""
    return int(number(text, int, 1, _LARGEST_ID, f"a whole number from 1 to {_LARGEST_ID}"))


def error_status(text: str) -> int:
    """An HTTP error status, 400 to 599."""
    return int(number(text, int, 400, 599, "an HTTP error status from 400 to 599"))
