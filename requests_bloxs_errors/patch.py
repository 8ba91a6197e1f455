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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import requests
import requests.sessions
from requests import PreparedRequest, Response

from .adapter import AdapterOptions, BloxsAdapter, mount

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ORIGINAL_SESSION",
    "InstalledSession",
    "count_usage",
    "install",
    "install_mounts",
    "installed",
    "uninstall",
    "usage",
]

#: requests' own Session class, as it was when this module was imported.
ORIGINAL_SESSION = requests.sessions.Session


class _State:
    """What install() changed, guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: The mounts, ``(prefix, adapter arguments)`` each, while installed, else None.
        self.config: tuple[tuple[str, dict[str, Any]], ...] | None = None
        #: (requests.Session, requests.sessions.Session) as they were before install().
        self.saved: tuple[type, type] | None = None
        #: Requests sent through installed sessions, and how many an adapter served
        #: (counted only while :func:`count_usage` is on: ``run`` reports them).
        self.counting = False
        self.sent = 0
        self.served = 0

    def snapshot(self) -> tuple[type, type, Any, Any]:
        return (requests.Session, requests.sessions.Session, self.config, self.saved)

    def restore(self, snapshot: tuple[type, type, Any, Any]) -> None:
        requests.Session, requests.sessions.Session, self.config, self.saved = snapshot  # type: ignore[misc,assignment]


_state = _State()


class InstalledSession(ORIGINAL_SESSION):
    """A :class:`requests.Session` that mounts the installed adapters when created."""

    def __init__(self) -> None:
        super().__init__()
        for prefix, kwargs in _state.config or ():
            mount(self, prefix, **kwargs)

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        """Send as requests does; while :func:`count_usage` is on, count the request."""
        if _state.counting:
            served = isinstance(self.get_adapter(request.url or ""), BloxsAdapter)
            with _state.lock:
                _state.sent += 1
                _state.served += served
        return super().send(request, **kwargs)


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
    install_mounts([(prefix, dict(adapter_kwargs))])


def install_mounts(mounts: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """:func:`install` several adapters at once, each on its prefix (two APIs, each with
    its own credentials: what ``run`` installs when both vendors are configured).

    :param mounts: ``(prefix, adapter arguments)`` pairs, validated now.
    :raises ValueError: for an empty list, or bad arguments.
    """
    if not mounts:
        raise ValueError("install_mounts needs at least one (prefix, arguments) pair")
    for prefix, kwargs in mounts:
        BloxsAdapter(prefix=prefix, **kwargs).close()
    with _state.lock:
        if _state.saved is None:
            _state.saved = (requests.Session, requests.sessions.Session)
        _state.config = tuple((prefix, dict(kwargs)) for prefix, kwargs in mounts)
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


def count_usage() -> None:
    """Count the requests installed sessions send from now on (see :func:`usage`)."""
    with _state.lock:
        _state.counting, _state.sent, _state.served = True, 0, 0


def usage() -> tuple[int, int]:
    """``(requests sent through installed sessions, of which an adapter served)``
    since :func:`count_usage`."""
    with _state.lock:
        return _state.sent, _state.served
