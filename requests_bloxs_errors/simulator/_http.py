"""A small threaded HTTP/1.1 server on loopback, answering through one function.

It reads whole request bodies (``Content-Length`` or chunked), keeps
connections alive, and can misbehave on purpose: answer late, or reset the
connection without answering. Its time comes from the clock it is given: when
a request arrived (:attr:`Request.at`) and every answer's ``Date`` header.
Only an answer's ``delay`` is real time on the wire, whatever the clock: what
it is for, a client's read timeout, is measured by the client's socket.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from requests.structures import CaseInsensitiveDict

from ..clock import SYSTEM, Clock

__all__ = ["Answer", "LoopbackServer", "Request"]


@dataclass(frozen=True)
class Request:
    """A request as the server received it."""

    method: str
    path: str
    query: str
    headers: CaseInsensitiveDict[str]
    body: bytes
    at: float  # the server clock's monotonic() when it was read

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None


@dataclass(frozen=True)
class Answer:
    """What to send back."""

    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # real seconds to wait before answering (the client's socket times them)
    drop: bool = False  # reset the connection instead of answering

    @classmethod
    def json(cls, status: int, document: Any, **headers: str) -> Answer:
        return cls(status, json.dumps(document), {"Content-Type": "application/json", **headers})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle on, a keep-alive client's
    # delayed ACK would hold every answer back by 40 ms
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # the caller records what it needs

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header's value: now on the server's clock, as its tokens' expiry is."""
        now = self.server.clock.time() if timestamp is None else timestamp
        return super().date_time_string(now)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers=CaseInsensitiveDict(self.headers.items()),
            body=self._read_body(),
            at=self.server.clock.monotonic(),
        )
        answer = self.server.respond(request)
        if answer.delay:
            # real time, whatever the clock: a late answer is for a client's read
            # timeout, which its socket measures (a fake clock cannot make it fire)
            time.sleep(answer.delay)
        if answer.drop:
            # SO_LINGER 0: close with a reset, as a crashed proxy would
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        payload = answer.body.encode() if isinstance(answer.body, str) else answer.body
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops connections when 32 clients arrive at once
    respond: Callable[[Request], Answer]
    clock: Clock

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out and hung up is expected here, not a server bug
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """Serve ``respond(request) -> Answer`` on ``host:port`` (port 0: any free one).

    :param clock: where :attr:`Request.at` and the ``Date`` header come from.
    """

    def __init__(
        self,
        respond: Callable[[Request], Answer],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock = SYSTEM,
    ) -> None:
        self._httpd = _Server((host, port), _Handler)
        self._httpd.respond = respond
        self._httpd.clock = clock
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="bloxs-simulator", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (or KeyboardInterrupt)."""
        self._httpd.serve_forever(0.2)

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()
