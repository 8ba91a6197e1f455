"""Plain terminal output for the command line: aligned tables, optional colour.

Colour only when stdout is a terminal and ``NO_COLOR`` is not set, so piped
output and logs stay plain text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

_CODES = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "dim": "2", "bold": "1"}


class Terminal:
    """Writes lines to ``stream``, coloured when it is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.colour = bool(isatty and isatty()) and "NO_COLOR" not in os.environ

    def paint(self, text: str, style: str | None) -> str:
        if not self.colour or style is None:
            return text
        return f"\x1b[{_CODES[style]}m{text}\x1b[0m"

    def line(self, text: str = "", style: str | None = None) -> None:
        print(self.paint(text, style), file=self.stream, flush=True)

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[str]],
        styles: Sequence[str | None] = (),
    ) -> None:
        """Print ``rows`` under ``header``, columns aligned; ``styles`` colours whole rows."""
        widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
        self.line(
            "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)).rstrip(), "bold"
        )
        self.line("  ".join("-" * w for w in widths))
        for index, row in enumerate(rows):
            text = "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
            self.line(text, styles[index] if index < len(styles) else None)


def safe_text(text: str, limit: int = 2000) -> str:
    """Text from the network made safe to print: at most ``limit`` characters, line
    breaks kept, every other control or format character (terminal escapes, bare
    carriage returns, bidi overrides) shown as ``?``."""
    cut = text[:limit].replace("\r\n", "\n")
    shown = "".join(c if c.isprintable() or c in "\n\t" else "?" for c in cut)
    return shown + ("\u2026" if len(text) > limit else "")


def status_style(status: int | None) -> str:
    """Green below 400, yellow for 429/503, red for other errors and no response."""
    if status is None:
        return "red"
    if status < 400:
        return "green"
    return "yellow" if status in (429, 503) else "red"
