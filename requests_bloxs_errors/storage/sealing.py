"""Sealing what a store keeps: AES-GCM, with the key from a secret or from a private file.

One :class:`Sealer` serves every feature that keeps something a reader of
the store must not see or alter: the token cache (a key derived from the
credential's secret, :func:`derive_key`) and the outbox (a random key in a
file of its own beside the database, :func:`key_file`). A sealed blob is a
12-byte random nonce and the ciphertext; the label it was sealed under (an
entry's name, a request's method and URL) must be given again to open it,
so a blob moved to another entry does not open. Needs the ``crypto`` extra.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from .base import check_private, missing_extra

__all__ = ["KEY_BYTES", "Sealer", "aead_class", "derive_key", "key_file"]

#: The length of every key, in bytes (AES-256).
KEY_BYTES = 32


def aead_class(feature: str) -> Any:
    """cryptography's ``AESGCM``, or the one-line error naming the extra ``feature`` needs."""
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415
    except ImportError:
        raise missing_extra("crypto", "cryptography", feature) from None
    return AESGCM


class Sealer:
    """AES-GCM under one key.

    :param key: :data:`KEY_BYTES` bytes.
    :param feature: what seals, for the error when the extra is missing.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes, feature: str) -> None:
        self._aead = aead_class(feature)(key)

    def seal(self, data: bytes, label: bytes) -> bytes:
        """``data`` sealed under ``label``."""
        nonce = os.urandom(12)
        sealed: bytes = self._aead.encrypt(nonce, data, label)
        return nonce + sealed

    def open(self, blob: bytes, label: bytes) -> bytes:
        """The data ``blob`` holds.

        :raises ValueError: when it was not sealed by this key under this label,
            or was altered (cryptography's ``InvalidTag`` is turned into it).
        """
        try:
            opened: bytes = self._aead.decrypt(blob[:12], blob[12:], label)
        except Exception as exc:  # InvalidTag, or a blob too short to hold a nonce
            raise ValueError("the sealed data does not open with this key") from exc
        return opened


def derive_key(secret: str, info: bytes, *, salt: bytes, feature: str) -> bytes:
    """A key derived from ``secret`` (HKDF-SHA256): another ``info`` gives another key.

    :param salt: names the derivation: a new format gets a new salt, never a
        reinterpreted entry.
    """
    try:
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415 - an extra
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: PLC0415
    except ImportError:
        raise missing_extra("crypto", "cryptography", feature) from None
    kdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=info)
    return kdf.derive(secret.encode("utf-8"))


def key_file(path: str, *, create: bool) -> bytes:
    """The random key kept in the file ``path`` (0600), made first when ``create``.

    A key is never read from a file someone else could have planted or can
    read (:func:`~requests_bloxs_errors.storage.base.check_private`). Two
    processes that make it at once agree on one: each writes its own to a
    temporary file and links it into place, and the loser reads the winner's.

    :raises OSError: when the file is missing (and not to be made) or refused.
    :raises ValueError: when it does not hold a key.
    """
    if create and not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, os.urandom(KEY_BYTES))
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(temporary, path)
        os.unlink(temporary)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        check_private(fd, path)
        key = os.read(fd, 2 * KEY_BYTES)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key file {path} is damaged")
    return key
