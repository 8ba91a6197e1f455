"""The README and the documentation's pages, as the tests that run their examples read them."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()
#: Each page of ``docs/`` by name (``fleets``), as written (an ``include`` not expanded).
PAGES = {path.stem: path.read_text() for path in sorted((ROOT / "docs").glob("*.rst"))}
#: Everything a user reads: the README, then every page.
TEXT = "\n".join([README, *PAGES.values()])


def code_blocks(text: str = TEXT) -> list[str]:
    """Every ``.. code-block:: python`` of ``text``, dedented, in order."""
    blocks = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        body = []
        for following in lines[index + 2 :]:
            if following.strip() and not following.startswith("    "):
                break
            body.append(following)
        blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
    return blocks


def block_with(marker: str) -> str:
    """The one code block that contains ``marker``."""
    (found,) = [block for block in code_blocks() if marker in block]
    return found


def included(name: str) -> str:
    """The README's part that a page includes (``.. start: name`` to ``.. end: name``)."""
    match = re.search(rf"\.\. start: {name}\n(.*?)\.\. end: {name}\n", README, re.DOTALL)
    assert match is not None, name
    return match.group(1)
