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
locked, corrupt) or an entry that does not decrypt never fails a call: the
process fetches its own token, one WARNING says so, and sharing resumes
when the store answers. Needs the ``crypto`` extra (``cryptography``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from .events import logger
from .exceptions import DeadlineExceeded
from .storage import (
    Outage,
    RedisConnection,
    SQLiteFile,
    StorageURL,
    missing_extra,
    parse,
    store_timeout,
)

__all__ = ["LOCK_TTL", "POLL", "SharedTokens"]

#: Seconds a fetching process holds the lock at most (a dead holder blocks no
#: longer). Longer than a token fetch takes at worst (its timeout, three retries
#: and their back-off), or a slow fetch would lose the lock to a second one.
LOCK_TTL = 60.0
#: Seconds between reads of the entry while another process fetches.
POLL = 0.05
#: The longest an entry of a token with an unknown lifetime is kept, in seconds.
UNKNOWN_LIFETIME_TTL = 24 * 3600.0
#: The longest any entry is kept, in seconds (a lifetime of 1e20 s is a week here).
MAX_ENTRY_TTL = 7 * 24 * 3600.0
#: Names the derivations: a new format gets a new label, never a reinterpreted entry.
_LABEL = b"requests-bloxs-errors token cache v1"

Fetch = Callable[[], "tuple[str, float | None]"]


def renew_margin(lifetime: float | None) -> float:
    """Seconds before expiry at which a token counts as expiring (as the credential renews)."""
    return 0.0 if lifetime is None else min(60.0, lifetime * 0.1)


class _Sealer:
    """AES-GCM under a key derived from the secret, bound to the entry's name."""

    def __init__(self, secret: str, identity: str) -> None:
        try:
            from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - an extra
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415
        except ImportError:
            raise missing_extra("crypto", "cryptography", "a shared token cache") from None

        def derive(info: bytes) -> bytes:
            kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_LABEL, info=info)
            return kdf.derive(secret.encode("utf-8"))

        naming = derive(b"entry name")
        self.name = hmac.new(naming, identity.encode("utf-8"), hashlib.sha256).hexdigest()[:40]
        self._aead = AESGCM(derive(b"entry key|" + self.name.encode()))

    def seal(self, token: str, expires: float | None, lifetime: float | None) -> bytes:
        document = {"token": token, "expires": expires, "lifetime": lifetime}
        nonce = os.urandom(12)
        plain = json.dumps(document).encode()
        return nonce + self._aead.encrypt(nonce, plain, self.name.encode())

    def open(self, blob: bytes) -> tuple[str, float | None, float | None]:
        """The entry's ``(token, expires, lifetime)``.

        :raises ValueError: when the blob was not sealed by this secret for
            this name (``InvalidTag`` from cryptography is turned into it).
        """
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], self.name.encode())
        except Exception as exc:  # cryptography's InvalidTag, or a short blob
            raise ValueError("the cached token does not authenticate") from exc
        document = json.loads(plain)
        return document["token"], document["expires"], document["lifetime"]


class TokenStore(Protocol):
    """What the cache asks of a store; each method is one atomic step that takes
    at most ``timeout`` seconds (None: the store's default)."""

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        """The sealed entry, or None."""

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        """Replace the entry; it disappears after ``ttl`` seconds."""

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        """Take the entry's lock for ``ttl`` seconds; False when someone holds it."""

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        """Release the lock if ``owner`` still holds it."""

    def close(self) -> None:
        """Release connections."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rbe_tokens (
    name TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rbe_token_locks (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL
);
"""


class SQLiteTokens:
    """Entries in an SQLite file (``sqlite:///``): the processes of one host."""

    def __init__(self, storage: StorageURL) -> None:
        self._file = SQLiteFile(storage, _SCHEMA)

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        row = self._file.read(
            "SELECT value FROM rbe_tokens WHERE name = ? AND expires > ?",
            (name, time.time()),
            timeout,
        )
        return bytes(row[0]) if row else None

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            now = time.time()
            db.execute("DELETE FROM rbe_tokens WHERE expires <= ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO rbe_tokens (name, value, expires) VALUES (?, ?, ?)",
                (name, blob, now + ttl),
            )

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        with self._file.transaction(timeout) as db:
            now = time.time()
            row = db.execute(
                "SELECT owner FROM rbe_token_locks WHERE name = ? AND until > ?", (name, now)
            ).fetchone()
            if row is not None:
                return False
            db.execute(
                "INSERT OR REPLACE INTO rbe_token_locks (name, owner, until) VALUES (?, ?, ?)",
                (name, owner, now + ttl),
            )
            return True

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        with self._file.transaction(timeout) as db:
            db.execute("DELETE FROM rbe_token_locks WHERE name = ? AND owner = ?", (name, owner))

    def close(self) -> None:
        self._file.close()


# KEYS: the lock. ARGV: its owner. Deletes it only if that owner still holds it.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTokens:
    """Entries in Redis (``redis://``, ``rediss://``): every host that reaches it."""

    def __init__(self, storage: StorageURL) -> None:
        self._redis = RedisConnection(storage, {"unlock": _UNLOCK})

    @staticmethod
    def _key(name: str) -> str:
        return "rbe:token:{" + name + "}"

    def read(self, name: str, timeout: float | None = None) -> bytes | None:
        value: bytes | None = self._redis.client(timeout).get(self._key(name))
        return value

    def write(self, name: str, blob: bytes, ttl: float, timeout: float | None = None) -> None:
        self._redis.client(timeout).set(self._key(name), blob, px=_milliseconds(ttl))

    def lock(self, name: str, owner: str, ttl: float, timeout: float | None = None) -> bool:
        key = self._key(name) + ":lock"
        return bool(self._redis.client(timeout).set(key, owner, nx=True, px=_milliseconds(ttl)))

    def unlock(self, name: str, owner: str, timeout: float | None = None) -> None:
        self._redis.run("unlock", [self._key(name) + ":lock"], [owner], timeout)

    def close(self) -> None:
        self._redis.close()


def _milliseconds(ttl: float) -> int:
    """A Redis expiry, at least 1 ms and at most :data:`MAX_ENTRY_TTL`."""
    return max(1, int(min(ttl, MAX_ENTRY_TTL) * 1000))


class _FetchFailed(Exception):
    """Carries an exception of the credential's own fetch past the store's handlers."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class SharedTokens:
    """The shared cache of one credential; see the module docstring.

    :param url: ``"sqlite:///path"``, ``"redis://host:port/db"`` or ``"rediss://..."``.
    :param secret: the credential's secret: the keys that name and seal the
        entry are derived from it (it is never stored).
    :param identity: what names the credential (endpoint, API key or client id);
        stored only as an HMAC under a key derived from ``secret``.
    :raises ValueError: for a URL that is not a shared store.
    :raises ImportError: without the ``crypto`` extra (or ``redis`` for Redis).
    """

    def __init__(self, url: str, *, secret: str, identity: str) -> None:
        storage = parse(url, what="cache")
        if not storage.shared:
            raise ValueError(
                "cache must be 'sqlite:///path' or 'redis://host:port/db' (a store other "
                "processes see); None keeps the token in this process"
            )
        self.storage = storage
        self._args = (url, secret, identity)
        self._sealer = _Sealer(secret, identity)
        self._store: TokenStore = (
            SQLiteTokens(storage) if storage.scheme == "sqlite" else RedisTokens(storage)
        )
        self._outage = Outage("Token cache", storage, "each process fetches its own token")
        self._tamper_warned = False

    def __reduce__(self) -> tuple[Any, ...]:
        url, secret, identity = self._args
        return (_rebuild, (url, secret, identity))

    def __repr__(self) -> str:
        return f"SharedTokens({self.storage.shown!r})"

    def obtain(
        self, fetch: Fetch, refused: str | None, deadline: float | None
    ) -> tuple[str, float | None]:
        """A token for the credential: the fleet's, or one fetched for it.

        :param fetch: the credential's own fetch, returning ``(token, lifetime)``.
        :param refused: the token the server just refused (never reused), or None.
        :param deadline: a ``time.monotonic()`` value; waiting for another
            process's fetch stops there with :class:`DeadlineExceeded`.
        :return: ``(token, seconds_left)`` (None: unknown).
        """
        if not self._outage.usable():
            return fetch()
        try:
            return self._obtain(fetch, refused, deadline)
        except _FetchFailed as failed:
            raise failed.error from None
        except DeadlineExceeded:
            raise
        except Exception as exc:  # the store failed: this process fetches its own
            self._outage.failed(exc)
            with contextlib.suppress(Exception):
                self._store.close()
            return fetch()

    def _obtain(
        self, fetch: Fetch, refused: str | None, deadline: float | None
    ) -> tuple[str, float | None]:
        name = self._sealer.name
        while True:
            found = self._valid(refused, deadline)
            if found is not None:
                return found
            owner = f"{os.getpid()}:{os.urandom(8).hex()}"  # this hold only
            if self._store.lock(name, owner, LOCK_TTL, _timeout(deadline)):
                try:
                    # compare-and-swap: refreshed meanwhile?
                    found = self._valid(refused, deadline)
                    if found is not None:
                        return found
                    return self._fetch_and_store(fetch, deadline)
                finally:
                    with contextlib.suppress(Exception):
                        self._store.unlock(name, owner, _timeout(deadline))
            if deadline is not None and time.monotonic() + POLL >= deadline:
                raise DeadlineExceeded(
                    "the deadline passed while another process fetched the shared token"
                )
            time.sleep(POLL)

    def _valid(
        self, refused: str | None, deadline: float | None
    ) -> tuple[str, float | None] | None:
        """The cached token and its seconds left, when it may be used."""
        blob = self._store.read(self._sealer.name, _timeout(deadline))
        self._outage.answered()
        if blob is None:
            return None
        try:
            token, expires, lifetime = self._sealer.open(blob)
        except ValueError:
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
        left = expires - time.time()
        if left <= renew_margin(lifetime):
            return None
        return token, left

    def _fetch_and_store(self, fetch: Fetch, deadline: float | None) -> tuple[str, float | None]:
        try:
            token, lifetime = fetch()
        except BaseException as exc:
            raise _FetchFailed(exc) from exc
        expires = None if lifetime is None else time.time() + lifetime
        ttl = UNKNOWN_LIFETIME_TTL if lifetime is None else lifetime
        if ttl > 0 and math.isfinite(ttl):
            try:
                self._store.write(
                    self._sealer.name,
                    self._sealer.seal(token, expires, lifetime),
                    ttl,
                    _timeout(deadline),
                )
            except Exception as exc:  # the token is good; only sharing it failed
                self._outage.failed(exc)
        return token, lifetime

    def close(self) -> None:
        """Close the store's connections (reopened on the next use)."""
        with contextlib.suppress(Exception):
            self._store.close()


def _timeout(deadline: float | None) -> float:
    """The seconds a store operation may take for a call ending at ``deadline``."""
    return store_timeout(None if deadline is None else max(0.0, deadline - time.monotonic()))


def _rebuild(url: str, secret: str, identity: str) -> SharedTokens:
    return SharedTokens(url, secret=secret, identity=identity)


def shared_tokens(cache: object, *, secret: str, identity: str) -> SharedTokens | None:
    """The ``cache`` argument of a credential: None (in-process) or a :class:`SharedTokens`."""
    if cache is None or cache == "memory://":
        return None
    if isinstance(cache, SharedTokens):
        return cache
    if not isinstance(cache, str):
        raise TypeError(f"cache must be a storage URL or None, not {type(cache).__name__}")
    return SharedTokens(cache, secret=secret, identity=identity)
