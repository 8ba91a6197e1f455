"""Sphinx configuration: ``python -m nox -s docs`` builds the site with warnings as
errors and runs its doctests (``python -m sphinx -W -b html docs docs/_build/html``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

from requests_bloxs_errors import __version__

project = "requests-bloxs-errors"
author = "requests-bloxs-errors contributors"
copyright = "2026, requests-bloxs-errors contributors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "rbe_docs",
]
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"requests-bloxs-errors {release}"

# The API reference: members in the order the source gives them, type hints in the
# description (the signatures stay readable), and the names as users write them.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
add_module_names = False

# Examples marked ``.. doctest::`` run under ``sphinx -b doctest``; the longer
# examples (``.. code-block:: python``) run in tests/test_docs.py against the
# simulator, as the README's do.
doctest_global_setup = "import requests\nimport requests_bloxs_errors as rbe"

# Quotes stay as written: the pages quote commands and values to be copied.
smartquotes = False
