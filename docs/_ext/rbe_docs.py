"""Directives that write parts of the documentation from the code, so they cannot drift.

``.. rbe-error-table::``
    the error table as ``python -m requests_bloxs_errors table`` prints it.
``.. rbe-retry-rules::``
    the retry rules (:func:`requests_bloxs_errors.errors.table.rules_text`).
``.. rbe-cli::``
    the program's ``--help``, then every command's (a section each), from the
    parsers the command line uses.
``.. rbe-variables::``
    every environment variable ``run`` reads, what it sets and its default.
``.. rbe-endpoints::``
    what the simulator serves.
``.. rbe-schemes::``
    the storage URLs each setting accepts.
``.. rbe-simulator-settings::``
    the simulator's keywords, their defaults and what they set.
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from requests_bloxs_errors.errors.table import rules_text
from requests_bloxs_errors.simulator import DEFAULT_LIMITS, ENDPOINTS, Simulator
from requests_bloxs_errors.storage import OutboxStore, PermitLog, TokenStore, schemes
from requests_bloxs_errors.tools._term import Terminal
from requests_bloxs_errors.tools.cli import _parser
from requests_bloxs_errors.tools.cli import _table as print_table
from requests_bloxs_errors.tools.envconfig import VARIABLES

#: The width ``--help`` is wrapped to on the page.
HELP_COLUMNS = "88"


def _literal(text: str) -> nodes.literal_block:
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


def _table(header: list[str], rows: list[list[str]], widths: list[int]) -> list[str]:
    """A ``list-table`` directive's lines (cells given as reST)."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        f"   :widths: {' '.join(map(str, widths))}",
        "",
    ]
    for row in [header, *rows]:
        for number, cell in enumerate(row):
            lines.append(f"   {'*' if number == 0 else ' '} - {cell}")
    return lines


class _Generated(SphinxDirective):
    """A directive whose content is reST written by :meth:`lines`."""

    has_content = False

    def lines(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(
            self.state, StringList(self.lines(), source="generated"), container
        )
        return list(container.children)


class ErrorTable(SphinxDirective):
    """The table as the ``table`` command prints it (the rules it prints after the
    table are :class:`RetryRules`, as a list)."""

    def run(self) -> list[nodes.Node]:
        out = io.StringIO()
        print_table(Terminal(out))
        table = out.getvalue().split("\n\n", 1)[0]
        return [_literal(table.rstrip())]


class RetryRules(_Generated):
    """The retry rules, one item each, as ``table`` prints them under the table."""

    def lines(self) -> list[str]:
        return [f"* {line}" for line in rules_text()]


class Variables(_Generated):
    def lines(self) -> list[str]:
        rows = [[f"``{v.name}``", v.what, v.default] for v in VARIABLES]
        return _table(["variable", "what", "default"], rows, [22, 58, 20])


class Endpoints(_Generated):
    def lines(self) -> list[str]:
        rows = [[methods, f"``{path}``", what] for methods, path, what in ENDPOINTS]
        return _table(["method", "path", "what"], rows, [16, 44, 40])


class SimulatorSettings(_Generated):
    """``Simulator``'s keywords: each default from its signature, each meaning from
    its docstring's ``:param:`` lines."""

    def lines(self) -> list[str]:
        meaning = _params(Simulator.__doc__ or "")
        rows = []
        # the values themselves: autodoc_preserve_defaults rewrites the signature's
        defaults = Simulator.__init__.__kwdefaults__ or {}
        for name, default in defaults.items():
            shown = dict(DEFAULT_LIMITS) if name == "limits" else default
            text = "SYSTEM (the real clock)" if name == "clock" else repr(shown)
            rows.append([f"``{name}``", f"``{text}``", meaning.get(name, "")])
        return _table(["keyword", "default", "what"], rows, [22, 30, 48])


def _params(doc: str) -> dict[str, str]:
    """The ``:param name: text`` entries of a docstring, each text on one line."""
    found: dict[str, str] = {}
    name = None
    for line in inspect.cleandoc(doc).splitlines():
        if line.startswith(":param "):
            name, _, text = line.removeprefix(":param ").partition(":")
            found[name] = text.strip()
        elif line.startswith(":"):
            name = None
        elif name and line.strip():
            found[name] += " " + line.strip()
        else:
            name = None
    return found


class Schemes(_Generated):
    def lines(self) -> list[str]:
        settings = [
            ("the rate limit: ``RateLimit(storage=...)``, ``RBE_STORAGE``", PermitLog),
            (
                "the token cache: ``cache=`` of a credential, ``RBE_TOKEN_CACHE`` (all but "
                "``memory://``, which shares nothing among processes)",
                TokenStore,
            ),
            ("the outbox: ``outbox=``, ``rbe.Outbox(...)``, ``RBE_OUTBOX``, ``--db``", OutboxStore),
        ]
        rows = [
            [where, ", ".join(f"``{form}``" for form in schemes(capability))]
            for where, capability in settings
        ]
        return _table(["setting", "accepts"], rows, [50, 50])


@contextmanager
def _help_width() -> Iterator[None]:
    """argparse wraps ``--help`` to ``$COLUMNS``: the same width on every machine."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _commands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
    """``(command line, --help text)`` of ``parser`` and every subcommand below it."""
    yield path, parser.format_help()
    for action in parser._actions:  # argparse keeps subcommands here, and only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


class CommandLine(_Generated):
    """The program's ``--help`` (its commands, one line each), then every command's
    under a title of its own."""

    def lines(self) -> list[str]:
        with _help_width():
            found = list(_commands(_parser(), "requests-bloxs-errors"))
        lines: list[str] = []
        for number, (command, text) in enumerate(found):
            if number:  # the program's own help stands above the commands' sections
                name = command.removeprefix("requests-bloxs-errors ")
                lines += [name, "~" * len(name), ""]
            lines += [".. code-block:: text", ""]
            lines += [f"    {line}" if line else "" for line in text.rstrip().splitlines()]
            lines.append("")
        return lines


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("rbe-error-table", ErrorTable)
    app.add_directive("rbe-retry-rules", RetryRules)
    app.add_directive("rbe-variables", Variables)
    app.add_directive("rbe-endpoints", Endpoints)
    app.add_directive("rbe-schemes", Schemes)
    app.add_directive("rbe-simulator-settings", SimulatorSettings)
    app.add_directive("rbe-cli", CommandLine)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
