"""A user's own outbox backend, registered under a scheme of its own (``vault://FOLDER``).

It keeps the queue in ``FOLDER/vault.db`` (through the SQLite backend, which
is beside the point): its URL carries no SQLite path. :class:`VaultBackend`
names no file for the outbox's sealing key; :class:`KeyedVaultBackend` names
``FOLDER/vault.key``.
"""

from __future__ import annotations

from typing import Any

from requests_bloxs_errors.clock import Clock
from requests_bloxs_errors.storage import StorageURL, parse
from requests_bloxs_errors.storage.base import OutboxRow
from requests_bloxs_errors.storage.sqlite import SQLiteBackend


class VaultBackend:
    """The outbox's methods, and nothing that says where its key goes."""

    def __init__(self, url: StorageURL, clock: Clock) -> None:
        self.folder = url.url.partition("://")[2]
        self._db = SQLiteBackend(parse(f"sqlite:///{self.folder}/vault.db"), clock)

    def add_entry(self, **entry: Any) -> int:
        return self._db.add_entry(**entry)

    def entry_rows(
        self, entry_id: int | None = None, timeout: float | None = None
    ) -> list[OutboxRow]:
        return self._db.entry_rows(entry_id, timeout)

    def queued(self, timeout: float | None = None) -> list[tuple[int, bool]]:
        return self._db.queued(timeout)

    def drop_entry(self, entry_id: int, timeout: float | None = None) -> bool:
        return self._db.drop_entry(entry_id, timeout)

    def claim(
        self, entry_id: int, owner: str, now: float, lease: float, timeout: float | None = None
    ) -> bool:
        return self._db.claim(entry_id, owner, now, lease, timeout)

    def settle(self, entry_id: int, owner: str, outcome: tuple[str, bool] | None) -> None:
        self._db.settle(entry_id, owner, outcome)

    def exists(self, timeout: float | None = None) -> bool:
        return self._db.exists(timeout)

    def check(self, timeout: float | None = None) -> None:
        self._db.check(timeout)

    def unreachable(self, exc: BaseException) -> bool:
        return self._db.unreachable(exc)

    def close(self) -> None:
        self._db.close()


class KeyedVaultBackend(VaultBackend):
    """The same, naming the file of the outbox's sealing key."""

    @property
    def key_path(self) -> str:
        return f"{self.folder}/vault.key"
