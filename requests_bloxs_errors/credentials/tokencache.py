"""One token for a fleet: a token cache shared by processes and hosts, encrypted at rest.

A :class:`SharedTokens` sits between a credential and its token endpoint.
Asked for a token, it:

1. reads the entry of the credential from the store (SQLite or Redis) and
   uses it when it is valid and not the token just refused;
2. otherwise takes the entry's lock (Redis ``SET NX PX``; an SQLite write
   transaction on a lock row), reads again (another process may have just
   refreshed: compare-and-swap), and only then fetches, stores and unlocks;
3. while another process holds the lock, waits for its result, reading the
   entry every :data:`POLL` seconds. A holder that died blocks nobody for
   longer than :data:`LOCK_TTL`: its lock expires.

The entry is sealed with AES-GCM under a key derived (HKDF-SHA256) from the
credential's secret and bound to the entry's name, which is itself an HMAC
of the credential's identity (endpoint and API key or client id): a reader
of the store without the secret learns neither the token nor whose it is,
and cannot plant one. The secret is never stored. A store that fails (down,
locked, corrupt, slower than the call can wait) or an entry that does not
decrypt never fails a call: the process fetches its own token, one WARNING
says so, and sharing resumes when the store answers (the store's fallback,
:mod:`~requests_bloxs_errors.storage.fallback`). Needs the ``crypto`` extra
(``cryptography``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
from collections.abc import Callable
from typing import Any

from ..clock import SYSTEM, Clock
from ..events import logger
from ..exceptions import DeadlineExceeded
from ..storage import (
    TokenStore,
    accepted,
    lease_owner,
    open_backend,
    parse,
    record_timeout,
    store_timeout,
)
from ..storage.fallback import Fallback
from ..storage.sealing import Sealer, aead_class, derive_key

__all__ = ["LOCK_TTL", "POLL", "SharedTokens"]

#: Seconds a fetching process holds the lock at most (a dead holder blocks no
#: longer). Longer than a token fetch takes at worst (its timeout, three retries
#: and their back-off), or a slow fetch would lose the lock to a second one.
LOCK_TTL = 60.0
#: Seconds between reads of the entry while another process fetches.
POLL = 0.05
#: The longest an entry of a token with an unknown lifetime is kept, in seconds.
UNKNOWN_LIFETIME_TTL = 24 * 3600.0
#: Names the derivations: a new format gets a new label, never a reinterpreted entry.
_LABEL = b"requests-bloxs-errors token cache v1"
_FEATURE = "a shared token cache"

Fetch = Callable[[], "tuple[str, float | None]"]


def renew_margin(lifetime: float | None) -> float:
    """Seconds before expiry at which a token counts as expiring (as the credential renews)."""
    return 0.0 if lifetime is None else min(60.0, lifetime * 0.1)


class SharedTokens:
    """The shared cache of one credential; see the module docstring.

    :param url: ``"sqlite:///path"``, ``"redis://host:port/db"`` or ``"rediss://..."``.
    :param secret: the credential's secret: the keys that name and seal the
        entry are derived from it (it is never stored).
    :param identity: what names the credential (endpoint, API key or client id);
        stored only as an HMAC under a key derived from ``secret``.
    :param clock: where time comes from.
    :raises ValueError: for a URL that is not a shared store.
    :raises ImportError: without the ``crypto`` extra (or ``redis`` for Redis).
    """

    def __init__(self, url: str, *, secret: str, identity: str, clock: Clock = SYSTEM) -> None:
        storage = parse(url, what="cache", capability=TokenStore)
        if not storage.shared:
            raise ValueError(
                f"cache {storage.scheme}:// is not seen by other processes; it must be "
                f"{accepted(TokenStore)} (None or memory:// keeps the token in this process)"
            )
        aead_class(_FEATURE)  # a missing extra is a configuration error: say so now
        self.storage = storage
        self._args = (url, secret, identity)
        self._clock = clock
        naming = derive_key(secret, b"entry name", salt=_LABEL, feature=_FEATURE)
        #: The entry's name: an HMAC of the identity under a key from the secret.
        self.name = hmac.new(naming, identity.encode("utf-8"), hashlib.sha256).hexdigest()[:40]
        self._label = self.name.encode()
        entry_key = derive_key(secret, b"entry key|" + self._label, salt=_LABEL, feature=_FEATURE)
        self._sealer = Sealer(entry_key, _FEATURE)
        self._store = Fallback(
            open_backend(storage, clock),
            feature="Token cache",
            meanwhile="each process fetches its own token",
            clock=clock,
        )
        self._tamper_warned = False

    def __reduce__(self) -> tuple[Any, ...]:
        url, secret, identity = self._args
        return (_rebuild, (url, secret, identity))

    def __repr__(self) -> str:
        return f"SharedTokens({self.storage.shown!r})"

    def obtain(
        self, fetch: Fetch, refused: str | None, time_left: float | None
    ) -> tuple[str, float | None]:
        """A token for the credential: the fleet's, or one fetched for it.

        :param fetch: the credential's own fetch, returning ``(token, lifetime)``.
        :param refused: the token the server just refused (never reused), or None.
        :param time_left: seconds the call that needs the token has left (None:
            no deadline); waiting for another process's fetch stops then with
            :class:`DeadlineExceeded`, and each store operation gets a share of it.
        :return: ``(token, seconds_left)`` (None: unknown).
        """
        store = self._store
        deadline = None if time_left is None else self._clock.monotonic() + time_left
        while True:
            found = self._valid(refused, deadline)
            if found is not None:
                return found
            owner = lease_owner()  # this hold only
            if store.lock(self.name, owner, LOCK_TTL, self._timeout(deadline)):
                try:
                    found = self._valid(refused, deadline)  # compare-and-swap
                    if found is not None:
                        return found
                    return self._fetch_and_store(fetch, deadline)
                finally:  # (what this hold did reaches the store past the deadline too)
                    store.unlock(self.name, owner, self._timeout(deadline, record=True))
            if deadline is not None and self._clock.monotonic() + POLL >= deadline:
                raise DeadlineExceeded(
                    "the deadline passed while another process fetched the shared token"
                )
            self._clock.sleep(POLL)

    def _timeout(self, deadline: float | None, *, record: bool = False) -> float:
        """The seconds a store operation may take for a call ending at ``deadline``
        (``record``: to store what has already happened, see
        :func:`~requests_bloxs_errors.storage.record_timeout`)."""
        left = None if deadline is None else max(0.0, deadline - self._clock.monotonic())
        return record_timeout(left) if record else store_timeout(left)

    def _valid(
        self, refused: str | None, deadline: float | None
    ) -> tuple[str, float | None] | None:
        """The cached token and its seconds left, when it may be used."""
        blob = self._store.read(self.name, self._timeout(deadline))
        if blob is None:
            return None
        try:
            document = json.loads(self._sealer.open(blob, self._label))
            token, expires, lifetime = document["token"], document["expires"], document["lifetime"]
        except (ValueError, KeyError, TypeError):
            if not self._tamper_warned:
                self._tamper_warned = True
                logger.warning(
                    "Token cache %s holds an entry that does not authenticate (altered, or "
                    "sealed by another secret); fetching a new token",
                    self.storage.shown,
                )
            return None
        if token == refused:
            return None
        if expires is None:
            return token, None
        left = expires - self._clock.time()
        if left <= renew_margin(lifetime):
            return None
        return token, left

    def _fetch_and_store(self, fetch: Fetch, deadline: float | None) -> tuple[str, float | None]:
        token, lifetime = fetch()
        expires = None if lifetime is None else self._clock.time() + lifetime
        ttl = UNKNOWN_LIFETIME_TTL if lifetime is None else lifetime
        if ttl > 0 and math.isfinite(ttl):
            document = {"token": token, "expires": expires, "lifetime": lifetime}
            sealed = self._sealer.seal(json.dumps(document).encode(), self._label)
            self._store.write(self.name, sealed, ttl, self._timeout(deadline, record=True))
        return token, lifetime

    def close(self) -> None:
        """Close the store's connections (reopened on the next use)."""
        with contextlib.suppress(Exception):
            self._store.close()


def _rebuild(url: str, secret: str, identity: str) -> SharedTokens:
    return SharedTokens(url, secret=secret, identity=identity)


def shared_tokens(
    cache: object, *, secret: str, identity: str, clock: Clock = SYSTEM
) -> SharedTokens | None:
    """The ``cache`` argument of a credential: None (in-process) or a :class:`SharedTokens`."""
    if cache is None or cache == "memory://":
        return None
    if isinstance(cache, SharedTokens):
        return cache
    if not isinstance(cache, str):
        raise TypeError(f"cache must be a storage URL or None, not {type(cache).__name__}")
    return SharedTokens(cache, secret=secret, identity=identity, clock=clock)
