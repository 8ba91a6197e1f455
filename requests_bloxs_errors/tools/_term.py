"""Plain terminal output for the command line: aligned tables, optional colour, and
nothing a terminal would obey.

Every command writes through :class:`Terminal` (stdout) or :func:`complain`
(stderr), and both pass what they print through :func:`neutral`: a control or
format character (a terminal escape, a bare carriage return, a bell, a bidi
override) from a server, a shared store or anywhere else is written as its
escape (``\\x1b``, ``\\r``, ``\\u202e``), never raw. :meth:`Terminal.line` is one
line, so a line break inside a value is shown as ``\\n`` too; the program's
own multi-line layout (a wrapped paragraph, a response body's lines) goes
through :meth:`Terminal.lines`.

Colour only when stdout is a terminal and ``NO_COLOR`` is not set, so piped
output and logs stay plain text. A table given a ``width`` (:attr:`Terminal.width`:
``COLUMNS``, else the terminal's) wraps its widest columns to fit; output that
is not a terminal, without ``COLUMNS``, is not wrapped.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = ["PROGRAM", "Terminal", "complain", "neutral", "safe_text", "status_style"]

#: How every message of the command line starts.
PROGRAM = "requests-bloxs-errors"

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}
#: No column of a fitted table is wrapped narrower than this.
NARROWEST = 12


def neutral(text: str, keep: str = "") -> str:
    """``text`` with each control or format character written as its Python escape.

    :param keep: characters left as they are (``"\\n\\t"`` for a block of lines).
    :return: printable text (and the ``keep`` characters): no terminal escape,
        bare carriage return, bell, C1 control or bidi override can act.
    """
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


class Terminal:
    """Writes lines to ``stream``, coloured when it is a terminal, each made
    :func:`neutral` first."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.colour = bool(isatty and isatty()) and "NO_COLOR" not in os.environ

    @property
    def width(self) -> int | None:
        """The columns to fit: ``COLUMNS`` when it is a number, else the terminal's
        width; None (no limit) for output that is not a terminal (a pipe, a file)."""
        columns = os.environ.get("COLUMNS", "").strip()
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal, or no file at all
            return None

    def paint(self, text: str, style: str | None) -> str:
        if not self.colour or style is None:
            return text
        return f"\x1b[{_CODES[style]}m{text}\x1b[0m"

    def line(self, text: str = "", style: str | None = None) -> None:
        """Print ``text`` as one line: a line break in it is shown as ``\\n``."""
        print(self.paint(neutral(text), style), file=self.stream, flush=True)

    def lines(self, text: str, style: str | None = None) -> None:
        """Print ``text`` line by line (the program's own layout, or a body's): line
        breaks and tabs are kept, every other control character is neutralised."""
        for line in text.split("\n"):
            print(self.paint(neutral(line, keep="\t"), style), file=self.stream, flush=True)

    def json(self, value: Any, default: Callable[[Any], Any] | None = None) -> None:
        """Print ``value`` as indented JSON (every control character escaped by JSON)."""
        self.lines(json.dumps(value, indent=2, default=default, ensure_ascii=True))

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        styles: Sequence[str | None] = (),
        width: int | None = None,
        wrap: Sequence[int] | None = None,
    ) -> None:
        """Print ``rows`` under ``header``, columns aligned; ``styles`` colours whole rows.
        Each cell is one line (:func:`neutral`), so the columns stay aligned.

        :param width: the columns the table may take (:attr:`width`); when it is
            wider, its widest columns are narrowed (to :data:`NARROWEST` at least)
            and their cells wrapped onto lines of their own. None: no limit.
        :param wrap: the indexes of the columns that may be narrowed; None: any.
        """
        cells = [[neutral(str(c)) for c in row] for row in rows]
        widths = [max(len(str(c)) for c in column) for column in zip(header, *cells, strict=False)]
        if width is not None:
            widths = _fitted(widths, width, range(len(widths)) if wrap is None else wrap)
        for line in _wrapped(header, widths):
            self.line(line, "bold")
        self.line("  ".join("-" * w for w in widths))
        for index, row in enumerate(cells):
            for line in _wrapped(row, widths):
                self.line(line, styles[index] if index < len(styles) else None)


def _fitted(widths: Sequence[int], width: int, narrowed: Sequence[int]) -> list[int]:
    """``widths`` with the ``narrowed`` columns narrowed, widest first, until the
    columns and the gaps between them fit ``width`` (or each of them is down to
    :data:`NARROWEST`)."""
    fitted = list(widths)
    room = width - 2 * (len(fitted) - 1)
    while narrowed and sum(fitted) > room:
        widest = max(narrowed, key=fitted.__getitem__)
        if fitted[widest] <= NARROWEST:
            break
        fitted[widest] -= 1
    return fitted


def _wrapped(row: Sequence[str], widths: Sequence[int]) -> list[str]:
    """The lines of one row: each cell wrapped to its column, the columns aligned."""
    parts = [
        (textwrap.wrap(cell, w, break_on_hyphens=False) or [""]) if len(cell) > w else [cell]
        for cell, w in zip(row, widths, strict=False)
    ]
    return [
        "  ".join(
            (part[n] if n < len(part) else "").ljust(w)
            for part, w in zip(parts, widths, strict=False)
        ).rstrip()
        for n in range(max(len(part) for part in parts))
    ]


def complain(message: str, label: str = "error") -> None:
    """One line on stderr: ``requests-bloxs-errors: error: message``, :func:`neutral`."""
    Terminal(sys.stderr).line(f"{PROGRAM}: {label}: {message}")


def safe_text(text: str, limit: int = 2000) -> str:
    """Text from the network cut to print as a block (:meth:`Terminal.lines`): at
    most ``limit`` characters, line breaks kept (``\\r\\n`` as ``\\n``), every other
    control or format character as its escape (:func:`neutral`)."""
    cut = neutral(text[:limit].replace("\r\n", "\n"), keep="\n\t")
    return cut + ("\u2026" if len(text) > limit else "")


def status_style(status: int | None) -> str:
    """Green below 400, yellow for 429/503, red for other errors and no response."""
    if status is None:
        return "red"
    if status < 400:
        return "green"
    return "yellow" if status in (429, 503) else "red"
