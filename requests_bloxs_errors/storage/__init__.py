"""Where state shared between threads, processes and hosts lives: one layer for every feature.

A store is named by a URL, and its scheme picks the backend, one class per
kind of store:

``memory://``
    this process only (its threads share it): :mod:`.memory`.
``sqlite:////absolute/path.db``
    every process on one host: ``sqlite:///`` then the file's absolute path
    (``sqlite:////var/lib/app/rbe.db`` is ``/var/lib/app/rbe.db``, as
    SQLAlchemy writes it; a relative path is refused). The file (and
    SQLite's side files) are created readable by their owner only:
    :mod:`.sqlite`.
``redis://[:password@]host:port/db`` and ``rediss://...``
    every process on every host that reaches the server; needs the
    ``redis`` extra: :mod:`.redis`.
``redis+sentinel://[:password@]host:26379[,host:port...]/service[/db]``
    the same, in the master the Sentinels name for ``service`` (as ``limits``
    writes it), followed across a failover; the password is given to the
    Sentinels and the master alike.
``redis+cluster://[:password@]host:port[,host:port...]``
    the same, in a Redis Cluster: a limiter key's keys (and a token entry's)
    share one slot, so each permit stays one script on one master.

Each feature asks for a capability (:mod:`.base`): the rate limit for a
:class:`~.base.PermitLog`, the token cache for a :class:`~.base.TokenStore`,
the outbox for an :class:`~.base.OutboxStore`, the circuit breaker (to publish
its circuits for ``status``) for a :class:`~.base.CircuitBoard`. A URL is parsed, and an
unknown scheme, one whose backend lacks the capability, or a malformed URL
refused with a ``ValueError``, when the feature is configured: never at the
first request. Connections are opened lazily, in the process that uses them
(a forked child opens its own). :mod:`.fallback` keeps a feature working
within its process while its store fails; :mod:`.sealing` seals what a
store keeps; :mod:`.windows` is the sliding window's arithmetic.

Your own backend plugs in by scheme, without touching the package::

    >>> from requests_bloxs_errors import storage
    >>> storage.register_backend("etcd", EtcdBackend)   # a class, or "module:Class"
    >>> rbe.RateLimit({"*": "5/second"}, storage="etcd://etcd.internal:2379")

(:func:`unregister_backend` undoes it, as a test's teardown does.) A
distribution installed beside this package registers one for every process,
``run``, ``status``, ``outbox`` and every ``RBE_*`` URL included, in the entry
point group ``requests_bloxs_errors.storage`` (:data:`ENTRY_POINT_GROUP`): the
entry point's name is the scheme, its value the class::

    [project.entry-points."requests_bloxs_errors.storage"]
    etcd = "mycompany.rbe_etcd:EtcdBackend"

An entry point is loaded when a URL first names its scheme and no backend is
registered for it (once per process; a built-in scheme is never taken over),
and one that cannot be loaded is a one-line ``ValueError`` naming it.
:func:`schemes` lists the installed ones without importing them.

The class is made as ``EtcdBackend(parsed_url, clock)``, may check a URL in a
classmethod ``check_url(parsed_url, what) -> parsed_url`` (raising
``ValueError``), and offers the methods of :class:`~.base.Backend` (``exists``,
``check``, ``unreachable``, ``close``) and those of the capabilities it has. An
outbox backend also names the file of the outbox's sealing key in
``key_path`` (see :class:`~.base.OutboxStore`).

May import: :mod:`..clock`, :mod:`..events`, :mod:`..urls`. Nothing here
knows HTTP. Backends (and ``sqlite3``, ``redis``, ``cryptography``) load on
first use.
"""

from __future__ import annotations

import importlib
import threading
from importlib.metadata import EntryPoint
from typing import Any

from ..clock import SYSTEM, Clock
from ..urls import safe_for_message
from .base import (
    RECORD_TIMEOUT,
    RETRY_STORE_AFTER,
    STORE_MIN_TIME,
    STORE_SHARE,
    STORE_TIMEOUT,
    WAIT_LEASE,
    WAIT_RENEW,
    Backend,
    CircuitBoard,
    CircuitRecord,
    NoTimeLeft,
    OutboxRow,
    OutboxStore,
    PermitHolder,
    PermitLog,
    PermitState,
    ProcessLock,
    StorageURL,
    StoreBusy,
    TokenEntry,
    TokenStore,
    check_private,
    holder,
    lease_owner,
    missing_extra,
    record_timeout,
    store_timeout,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "RECORD_TIMEOUT",
    "RETRY_STORE_AFTER",
    "STORE_MIN_TIME",
    "STORE_SHARE",
    "STORE_TIMEOUT",
    "WAIT_LEASE",
    "WAIT_RENEW",
    "Backend",
    "CircuitBoard",
    "CircuitRecord",
    "NoTimeLeft",
    "OutboxRow",
    "OutboxStore",
    "PermitHolder",
    "PermitLog",
    "PermitState",
    "ProcessLock",
    "StorageURL",
    "StoreBusy",
    "TokenEntry",
    "TokenStore",
    "accepted",
    "backend_class",
    "check_private",
    "holder",
    "lease_owner",
    "missing_extra",
    "open_backend",
    "parse",
    "record_timeout",
    "register_backend",
    "schemes",
    "store_timeout",
    "unregister_backend",
]

#: What each capability is called in messages.
_CAPABILITY_NAMES: dict[type, str] = {
    PermitLog: "rate-limit permits",
    TokenStore: "shared tokens",
    OutboxStore: "outbox",
    CircuitBoard: "published circuits",
}
#: Scheme to backend: a class, or ``"module:Class"`` imported on first use.
_BACKENDS: dict[str, Any] = {
    "memory": f"{__name__}.memory:MemoryBackend",
    "sqlite": f"{__name__}.sqlite:SQLiteBackend",
    "redis": f"{__name__}.redis:RedisBackend",
    "rediss": f"{__name__}.redis:RedisBackend",
    "redis+sentinel": f"{__name__}.redis:RedisBackend",
    "redis+cluster": f"{__name__}.redis:RedisBackend",
}
#: How each built-in scheme is written in messages, the docs and ``config``.
_FORMS = {
    "memory": "memory://",
    "sqlite": "sqlite:////absolute/path.db",
    "redis": "redis://host:port/db",
    "rediss": "rediss://host:port/db",
    "redis+sentinel": "redis+sentinel://host:26379[,host:port...]/service[/db]",
    "redis+cluster": "redis+cluster://host:port[,host:port...]",
}
#: What each built-in backend offers, known without importing it (so that a message
#: or ``run --help`` costs no import of ``sqlite3``); a test holds it to the classes.
_BUILT_IN_OFFERS: dict[str, tuple[type, ...]] = {
    "memory": (PermitLog, TokenStore, CircuitBoard),
    "sqlite": (PermitLog, TokenStore, OutboxStore, CircuitBoard),
    "redis": (PermitLog, TokenStore, CircuitBoard),
    "rediss": (PermitLog, TokenStore, CircuitBoard),
    "redis+sentinel": (PermitLog, TokenStore, CircuitBoard),
    "redis+cluster": (PermitLog, TokenStore, CircuitBoard),
}
_lock = threading.Lock()

#: The entry point group in which an installed distribution names its backends:
#: the entry point's name is the scheme, its value ``"module:Class"``.
ENTRY_POINT_GROUP = "requests_bloxs_errors.storage"
#: The backends installed distributions name, by scheme: read once per process.
_installed: dict[str, EntryPoint] | None = None
#: Schemes whose entry point was loaded (or tried): each is loaded once per process.
_tried: set[str] = set()
#: Why the entry point of a scheme could not be loaded, by scheme.
_broken: dict[str, str] = {}
#: Held while an entry point loads (re-entrant: its module may parse a URL).
_loading = threading.RLock()


def register_backend(scheme: str, backend: Any) -> None:
    """Serve URLs ``scheme://...`` with ``backend``: a class, or ``"module:Class"``.

    The class is made as ``backend(parsed_url, clock)`` when a feature opens
    the store, and offers the methods of :class:`Backend` and of the
    capabilities it has (:class:`PermitLog`, :class:`TokenStore`,
    :class:`OutboxStore`; an outbox's also has a ``key_path``). A classmethod
    ``check_url(parsed_url, what)`` may refuse a malformed URL with a
    ``ValueError``. Registering a scheme again replaces its backend.

    For every process (``run``, ``status``, the ``RBE_*`` variables), name it
    in the entry point group :data:`ENTRY_POINT_GROUP` of a distribution
    instead (see the module docstring).

    :raises ValueError: for a scheme that is not a lower-case word.
    """
    if not isinstance(scheme, str) or not scheme.isidentifier() or scheme != scheme.lower():
        raise ValueError(f"scheme must be a lower-case word such as 'etcd', not {scheme!r}")
    with _lock:
        _BACKENDS[scheme] = backend


def unregister_backend(scheme: str) -> None:
    """Stop serving ``scheme://`` URLs: undoes :func:`register_backend` (a test's
    backend, a plugin unloaded). A URL with the scheme is refused from then on, as
    one nobody registered (an installed entry point is not loaded again); features
    already configured with one keep their backend.

    :raises ValueError: for a built-in scheme (``memory``, ``sqlite``, ``redis``,
        ``rediss``), which are always served.
    :raises KeyError: for a scheme nobody registered.
    """
    if scheme in _BUILT_IN_OFFERS:
        raise ValueError(f"{scheme}:// is built in and cannot be unregistered")
    with _lock:
        del _BACKENDS[scheme]


def backend_class(scheme: str) -> Any:
    """The backend class registered for ``scheme`` (imported now, when it was a name;
    loaded from its entry point, when an installed distribution names it).

    :raises KeyError: for a scheme nobody registered.
    :raises ValueError: for an entry point that cannot be loaded.
    """
    if scheme not in _BACKENDS:
        _load_entry_point(scheme)
    found = _BACKENDS[scheme]
    if isinstance(found, str):
        module, _, name = found.partition(":")
        found = getattr(importlib.import_module(module), name)
        with _lock:
            _BACKENDS[scheme] = found
    return found


def _installed_backends() -> dict[str, EntryPoint]:
    """The entry points of :data:`ENTRY_POINT_GROUP`, by scheme (the first one on
    ``sys.path`` of each name; a name that is not a lower-case word never matches a
    URL's scheme and is left out). Read once per process; nothing is imported."""
    global _installed  # noqa: PLW0603 - one read of the installed metadata per process
    if _installed is None:
        from importlib.metadata import entry_points  # noqa: PLC0415 - read when needed

        found: dict[str, EntryPoint] = {}
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name.isidentifier() and entry.name == entry.name.lower():
                found.setdefault(entry.name, entry)
        _installed = found
    return _installed


def _load_entry_point(scheme: str) -> None:
    """Register the backend an installed distribution names for ``scheme``, once per
    process (nothing when none does).

    :raises ValueError: when it cannot be loaded (then, and on every later use),
        in one line naming the entry point and its distribution.
    """
    with _loading:
        if scheme not in _tried and scheme not in _BACKENDS:
            _tried.add(scheme)
            entry = _installed_backends().get(scheme)
            if entry is not None:
                try:
                    backend = entry.load()
                    if not callable(backend):
                        raise TypeError(f"{entry.value} is a {type(backend).__name__}, not a class")
                except Exception as exc:  # whatever its import raised: one line, its cause
                    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    _broken[scheme] = (
                        f"{_entry_point_shown(entry)} cannot be loaded: "
                        f"{type(exc).__name__}{': ' + cause if cause else ''}"
                    )
                else:
                    register_backend(scheme, backend)
    if scheme in _broken and scheme not in _BACKENDS:
        raise ValueError(f"{scheme}:// is served by {_broken[scheme]}")


def _entry_point_shown(entry: EntryPoint) -> str:
    """``the entry point 'etcd = mycompany.rbe_etcd:EtcdBackend' of rbe-etcd 1.2``."""
    dist = getattr(entry, "dist", None)
    origin = ""
    if dist is not None:
        origin = f" of {dist.metadata['Name'] or '?'} {dist.version or ''}".rstrip()
    return f"the entry point '{entry.name} = {entry.value}'{origin} ({ENTRY_POINT_GROUP})"


def schemes(capability: type | None = None) -> list[str]:
    """The schemes registered, or those whose backend has ``capability``, as messages
    write them (``sqlite:////absolute/path.db``): the one list of what a setting
    accepts, which its errors, ``config`` and the documentation all show.

    Without ``capability``, the schemes installed distributions name
    (:data:`ENTRY_POINT_GROUP`) are listed too, unimported; with one, each of
    those only once a URL has named it (what it offers is known when it is
    loaded)."""
    found = []
    for scheme, backend in list(_BACKENDS.items()):
        if capability is None:
            offers = True
        elif isinstance(backend, str) and scheme in _BUILT_IN_OFFERS:
            offers = capability in _BUILT_IN_OFFERS[scheme]
        else:
            offers = _offers(backend_class(scheme), capability)
        if offers:
            found.append(_FORMS.get(scheme, f"{scheme}://..."))
    if capability is None:
        found += [f"{s}://..." for s in sorted(_installed_backends()) if s not in _BACKENDS]
    return found


def accepted(capability: type | None = None) -> str:
    """:func:`schemes` as one phrase: ``memory://, sqlite:////absolute/path.db or ...``."""
    forms = schemes(capability)
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"


def _offers(cls: Any, capability: type) -> bool:
    return all(callable(getattr(cls, name, None)) for name in _methods(capability))


def _methods(capability: type) -> list[str]:
    """The methods ``capability`` asks for, those of the protocols it extends
    (:class:`Backend`) included."""
    return sorted(
        {
            name
            for protocol in capability.__mro__
            if getattr(protocol, "_is_protocol", False)
            for name, value in vars(protocol).items()
            if callable(value) and not name.startswith("_")
        }
    )


def parse(url: object, *, what: str = "storage", capability: type | None = None) -> StorageURL:
    """Parse a storage URL; see the module docstring for the forms.

    A scheme nobody registered is looked up among the installed distributions'
    entry points (:data:`ENTRY_POINT_GROUP`) and loaded, the first time only.

    :param what: the argument's name, for the error message.
    :param capability: what the store must offer (:class:`PermitLog`,
        :class:`TokenStore`, :class:`OutboxStore`); None: anything.
    :raises ValueError: for an unknown scheme, an entry point that cannot be
        loaded, a backend without the capability, or a malformed URL (the
        message never shows a password).
    :raises ImportError: when the backend's optional package is missing.
    """
    if not isinstance(url, str):
        raise TypeError(f"{what} must be a URL string ({accepted(capability)}), not {url!r}")
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if sep and scheme not in _BACKENDS and scheme.isidentifier():
        try:
            _load_entry_point(scheme)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    if not sep or scheme not in _BACKENDS:
        raise ValueError(f"{what} must be {accepted(capability)}; got {safe_for_message(url)}")
    cls = backend_class(scheme)
    if capability is not None and not _offers(cls, capability):
        raise ValueError(
            f"{what} cannot be {scheme}:// ({scheme}:// keeps no "
            f"{_CAPABILITY_NAMES.get(capability, capability.__name__)}); "
            f"it must be {accepted(capability)}"
        )
    parsed = StorageURL(scheme, url)
    check_url = getattr(cls, "check_url", None)
    return check_url(parsed, what) if check_url is not None else parsed


def open_backend(storage: StorageURL, clock: Clock = SYSTEM) -> Any:
    """The backend of a parsed URL (nothing connects until its first operation)."""
    return backend_class(storage.scheme)(storage, clock)
