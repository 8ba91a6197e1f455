"""A raw-socket loopback server: each connection gets a scripted byte-level behaviour.

For faults below HTTP that a well-behaved server cannot produce: resets,
truncation, trickling, malformed status lines, huge headers, endless bodies.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

Behaviour = Callable[[socket.socket, bytes], None]


def read_request(conn: socket.socket) -> bytes:
    """Read one request head and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def reset(conn: socket.socket) -> None:
    """Close with RST instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class Listener:
    """A loopback socket that accepts connections and handles each in a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted(conn)
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def accepted(self, conn: socket.socket) -> None:
        """Called in the accepting thread for each connection."""

    def _connection(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


class RawServer(Listener):
    """Accepts connections; the n-th request runs ``behaviours[n]`` (the last repeats)."""

    def __init__(self, *behaviours: Behaviour) -> None:
        self.behaviours = list(behaviours)
        self.requests: list[bytes] = []
        self.sent = 0  # bytes the behaviours report as sent
        super().__init__()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _connection(self, conn: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                request = read_request(conn)
                if not request:
                    return
                with self._lock:
                    index = len(self.requests)
                    self.requests.append(request)
                    behaviour = self.behaviours[min(index, len(self.behaviours) - 1)]
                behaviour(conn, request)
                if conn.fileno() == -1:
                    return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def count(self, sent: int) -> None:
        with self._lock:
            self.sent += sent


def respond(status: bytes, body: bytes = b"", headers: tuple[bytes, ...] = ()) -> Behaviour:
    """A correct keep-alive response."""

    def behaviour(conn: socket.socket, _: bytes) -> None:
        lines = [b"HTTP/1.1 " + status, b"Content-Length: " + str(len(body)).encode(), *headers]
        conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)

    return behaviour


def trickle(payload: bytes, interval: float) -> Behaviour:
    """Send ``payload`` one byte at a time."""

    def behaviour(conn: socket.socket, _: bytes) -> None:
        for byte in payload:
            conn.sendall(bytes([byte]))
            time.sleep(interval)

    return behaviour
