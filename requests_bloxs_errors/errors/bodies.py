"""Reading error bodies: a bounded look for classification, and nothing lost.

:func:`read_error_body` reads at most :data:`BODY_CAP` bytes (plus one
chunk) of an error response to classify it. A body that ends within that is
kept on the response as usual (``response.content``). A longer one is not
cut: the adapter has looked at its start, and the response's ``raw`` is
replaced by a :class:`PeekedRaw` that gives those bytes back first and then
reads on from the connection, so ``response.content``, ``.text``,
``iter_content()`` and ``raw.read()`` see every byte, in order, as without
the adapter, and memory stays bounded until the caller reads.

Two cases do cut the body: a deadline that passes while reading (the call's
bound wins; the connection is closed) and a body that breaks off (what
arrived is kept). :func:`drain_error_body` finishes with an intermediate
response before a retry: it reads a short body to reuse the connection and
closes the connection under a long one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from requests import Response

from ..clock import SYSTEM, Clock

__all__ = ["BODY_CAP", "PeekedRaw", "drain_error_body", "read_error_body"]

#: The most bytes of an error body read before the caller asks for them.
BODY_CAP = 64 * 1024

_CHUNK = 16 * 1024


def read_error_body(
    response: Response,
    cap: int = BODY_CAP,
    *,
    deadline: float | None = None,
    keep_rest: bool = True,
    clock: Clock = SYSTEM,
) -> tuple[bytes, bool]:
    """Read the first ``cap`` bytes of ``response``'s body for classification.

    :param deadline: a ``clock.monotonic()`` value: reading stops there, what
        arrived is kept, and the connection is closed (a server that trickles
        a byte at a time cannot hold the call past it).
    :param keep_rest: for a body longer than ``cap``, leave the rest readable
        (see the module docstring); False closes the connection instead.
    :param clock: the clock ``deadline`` is read on.
    :return: ``(first bytes, truncated)``; ``truncated`` is True when the body
        goes on past them. Never raises: a body that breaks off midway gives
        what arrived; one already streamed away gives ``b""``.
    """
    content = getattr(response, "_content", False)
    if isinstance(content, bytes):
        return content[:cap], len(content) > cap
    raw = response.raw
    if isinstance(raw, PeekedRaw):  # looked at before: its start is at hand
        if not keep_rest:
            return _cut(response, raw, raw.head[:cap])
        return raw.head[:cap], True
    if getattr(response, "_content_consumed", False) or raw is None:
        return b"", False
    chunks = body_chunks(raw)
    buffer = bytearray()
    try:
        while len(buffer) <= cap:
            if deadline is not None and clock.monotonic() >= deadline:
                return _cut(response, raw, bytes(buffer[:cap]))
            chunk = next(chunks, None)
            if chunk is None:  # the whole body: kept as requests keeps it
                response._content = bytes(buffer)
                response._content_consumed = True  # type: ignore[attr-defined]
                return response._content, False
            buffer += chunk
    except Exception:  # reset mid-body, bad gzip, ...: keep what arrived
        return _cut(response, raw, bytes(buffer[:cap]))
    if not keep_rest:
        return _cut(response, raw, bytes(buffer[:cap]))
    response.raw = PeekedRaw(raw, bytes(buffer), chunks)
    return bytes(buffer[:cap]), True


def _cut(response: Response, raw: Any, body: bytes) -> tuple[bytes, bool]:
    """Keep ``body`` as the whole content and close the connection under the rest."""
    response._content = body
    response._content_consumed = True  # type: ignore[attr-defined]
    # not response.close() alone: with the content consumed, it would hand the
    # connection back to the pool with the rest of the body still unread
    with contextlib.suppress(Exception):
        raw.close()
    response.close()
    return body, True


def drain_error_body(
    response: Response, deadline: float | None = None, clock: Clock = SYSTEM
) -> bytes:
    """Finish with an intermediate error response before the next attempt; return
    the first bytes of its body (for its trace id).

    A body of at most :data:`BODY_CAP` bytes is read, so its connection goes
    back to the pool; a longer one (or one still arriving at ``deadline``)
    is not downloaded only to be thrown away: its connection is closed.
    """
    body, truncated = read_error_body(response, deadline=deadline, keep_rest=False, clock=clock)
    raw = response.raw
    if not truncated and raw is not None and hasattr(raw, "release_conn"):
        raw.release_conn()  # read to the end: the connection serves the next attempt
    return body


def body_chunks(raw: Any) -> Iterator[bytes]:
    """The body of ``raw``, decoded, in chunks as they arrive; ends at its end.

    Each read returns what has arrived rather than waiting for a whole
    chunk, so a body trickled a byte at a time never holds a read past a
    deadline checked between chunks.
    """
    read, options = _reader(raw)
    urllib3_raw = hasattr(raw, "stream")
    empty_reads = 0
    while True:
        chunk = read(_CHUNK, **options)
        if chunk:
            empty_reads = 0
            yield chunk
            continue
        # the end; but urllib3's decoder may yield nothing for a chunk before it
        empty_reads += 1
        if not urllib3_raw or getattr(raw, "closed", True) or empty_reads > 64:
            break
    if urllib3_raw and getattr(read, "__self__", raw) is not raw:
        raw.read()  # read past urllib3 1.26's back: let it see the end and release


def _reader(raw: Any) -> tuple[Callable[..., bytes], dict[str, bool]]:
    if not hasattr(raw, "stream"):  # not urllib3's: a file, say
        return raw.read, {}
    read1 = getattr(raw, "read1", None)
    if read1 is not None:  # urllib3 2
        return read1, {"decode_content": True}
    # urllib3 1.26: its read(n) waits for n bytes; http.client's read1 does not,
    # and for a body without Content-Encoding it gives the same bytes
    inner = getattr(raw, "_fp", None)
    encoding = str(raw.headers.get("Content-Encoding", "")).strip().lower()
    if inner is not None and hasattr(inner, "read1") and encoding in ("", "identity"):
        return inner.read1, {}
    return raw.read, {"decode_content": True}


class PeekedRaw:
    """The ``raw`` of an error response whose first bytes the adapter has read.

    Gives those bytes back first, then reads on from the connection; every
    other attribute is the original urllib3 response's. The body comes out
    decoded (``Content-Encoding`` undone), as ``iter_content`` gives it.

    :ivar head: the bytes read ahead (at least :data:`BODY_CAP`).
    """

    def __init__(self, raw: Any, head: bytes, chunks: Iterator[bytes]) -> None:
        self._raw = raw
        self.head = head
        self._buffer = bytearray(head)
        self._chunks = chunks
        self._ended = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def _fill(self, size: int | None) -> None:
        while not self._ended and (size is None or len(self._buffer) < size):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
            else:
                self._buffer += chunk

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, amt: int | None = None, decode_content: bool | None = None, **_: Any) -> bytes:
        """Up to ``amt`` bytes (all that is left for None); ``b""`` at the end."""
        self._fill(amt)
        return self._take(len(self._buffer) if amt is None else amt)

    def read1(self, amt: int = -1, decode_content: bool | None = None) -> bytes:
        """What is at hand, at most ``amt`` bytes, reading once if nothing is."""
        if not self._buffer:
            self._fill(1)
        return self._take(len(self._buffer) if amt is None or amt < 0 else amt)

    def stream(
        self, amt: int | None = 2**16, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        """The rest of the body in pieces of ``amt`` bytes, as urllib3's ``stream``."""
        while True:
            data = self.read(amt or _CHUNK)
            if not data:
                return
            yield data

    def __iter__(self) -> Iterator[bytes]:
        return self.stream()

    @property
    def data(self) -> bytes:
        """The rest of the body."""
        return self.read()

    def readable(self) -> bool:
        return True
