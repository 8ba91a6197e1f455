"""The global drop-in: :func:`install`, :func:`uninstall`, :func:`installed`.

``requests.get()`` and friends build a fresh ``requests.sessions.Session`` on
every call. :func:`install` replaces ``requests.Session`` and
``requests.sessions.Session`` (as requests-cache's ``install_cache`` does)
with a subclass that mounts a :class:`~requests_bloxs_errors.BloxsAdapter` on
the configured prefix, so a legacy script's plain ``requests.get(...)`` gets
retries, classification and credentials without being edited.
:func:`uninstall` puts back exactly the classes that were there before.

Sessions created before :func:`install` are not changed, and while it is
active ``isinstance(old_session, requests.Session)`` is False for them: use
:func:`~requests_bloxs_errors.mount` on sessions you already hold.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import requests
import requests.sessions

from .adapter import AdapterOptions, BloxsAdapter, mount

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ORIGINAL_SESSION", "InstalledSession", "install", "installed", "uninstall"]

#: requests' own Session class, as it was when this module was imported.
ORIGINAL_SESSION = requests.sessions.Session


class _State:
    """What install() changed, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: (prefix, adapter arguments) while installed, else None.
        self.config: tuple[str, dict[str, Any]] | None = None
        #: (requests.Session, requests.sessions.Session) as they were before install().
        self.saved: tuple[type, type] | None = None

    def snapshot(self) -> tuple[type, type, Any, Any]:
        return (requests.Session, requests.sessions.Session, self.config, self.saved)

    def restore(self, snapshot: tuple[type, type, Any, Any]) -> None:
        requests.Session, requests.sessions.Session, self.config, self.saved = snapshot  # type: ignore[misc,assignment]


_state = _State()


class InstalledSession(ORIGINAL_SESSION):
    """A :class:`requests.Session` that mounts the installed adapter when created."""

    def __init__(self) -> None:
        super().__init__()
        config = _state.config
        if config is not None:
            prefix, kwargs = config
            mount(self, prefix, **kwargs)


def install(prefix: str = "https://", **adapter_kwargs: Unpack[AdapterOptions]) -> None:
    """Route every new :class:`requests.Session` (and ``requests.get``) through the adapter.

    Usage::

        >>> rbe.install("https://acme.bloxs.io/", auth=rbe.TokenAuth(fetch))
        >>> requests.get("https://acme.bloxs.io/api/v1/realestateobjects/complexes")

    Installing again replaces the configuration. Each new session gets its
    own adapter (and connection pool); ``auth`` and ``rate_limit`` are shared,
    so all of them use one token and one quota.

    :param prefix: as for :func:`~requests_bloxs_errors.mount`.
    :param adapter_kwargs: :class:`~requests_bloxs_errors.BloxsAdapter` arguments,
        validated now: bad configuration raises here, not at the first request.
    """
    BloxsAdapter(prefix=prefix, **adapter_kwargs).close()
    with _state.lock:
        if _state.saved is None:
            _state.saved = (requests.Session, requests.sessions.Session)
        _state.config = (prefix, dict(adapter_kwargs))
        requests.Session = requests.sessions.Session = InstalledSession  # type: ignore[misc]


def uninstall() -> None:
    """Undo :func:`install`: restore the session classes it replaced. Safe to call twice."""
    with _state.lock:
        if _state.saved is not None:
            _state.restore((*_state.saved, None, None))
        _state.config = None


@contextmanager
def installed(prefix: str = "https://", **adapter_kwargs: Unpack[AdapterOptions]) -> Iterator[None]:
    """:func:`install` for the duration of a ``with`` block, then restore the previous state.

    Usage::

        >>> with rbe.installed("https://acme.bloxs.io/", max_retries=5):
        ...     legacy_script.main()
    """
    with _state.lock:
        before = _state.snapshot()
    install(prefix, **adapter_kwargs)
    try:
        yield
    finally:
        with _state.lock:
            _state.restore(before)
