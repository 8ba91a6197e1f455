"""Checked by mypy (``nox -s lint``), never run: the library's types catch misuse.

Each ``type: ignore[...]`` below marks a line mypy must reject; the lint
session runs mypy with ``warn_unused_ignores`` (part of ``--strict``), so a
line that stops being rejected fails the lint.
"""

from __future__ import annotations

import requests

import requests_bloxs_errors as rbe


def misuse(session: requests.Session) -> None:
    rbe.mount(session, "https://", max_retries="lots")  # type: ignore[arg-type]
    rbe.install("https://", deadline="soon")  # type: ignore[arg-type]
    rbe.mount(session, "https://", pool_maxsize_typo=4)  # type: ignore[call-arg]
    rbe.BloxsAdapter(backoff_factor="fast")  # type: ignore[arg-type]


def fine(session: requests.Session) -> None:
    rbe.mount(session, "https://", max_retries=5, deadline=30.0, pool_maxsize=20)
    with rbe.installed("https://", raise_errors=True):
        pass
