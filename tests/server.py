"""A scriptable HTTP/1.1 server on loopback for the tests.

Routes answer from a script: a list of :class:`Reply` objects consumed in
order (the last one repeats), or a function of the recorded request. Every
request is recorded whole (method, path, headers, body), so a test can prove
what reached the server: how many times, with which token, with which bytes.
Replies can also misbehave at the socket level (reset, stall, truncate).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Union


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float  # time.monotonic() when the request was read


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | str = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    fault: str | None = None  # "reset": close with RST before any byte


Script = Union[list[Reply], Callable[[Recorded], Reply]]


def json_reply(status: int, text: str, **headers: str) -> Reply:
    return Reply(status, text, {"Content-Type": "application/json", **headers})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
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
        body = self._read_body()
        recorded = Recorded(
            self.command, self.path, dict(self.headers.items()), body, time.monotonic()
        )
        reply = self.server.owner._answer(recorded)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops SYNs when 32 threads connect at once
    owner: ScriptServer

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that timed out and hung up is a scripted case, not a server bug
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class ScriptServer:
    """Start on construction; :meth:`close` stops it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Script] = {}
        self.requests: list[Recorded] = []
        self._httpd = _Server((host, 0), _Handler)
        self._httpd.owner = self
        self.host = host
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(self, method: str, path: str, *replies: Reply) -> None:
        """Answer ``method path`` with ``replies`` in order; the last repeats."""
        with self._lock:
            self._routes[(method, path)] = list(replies)

    def route_fn(self, method: str, path: str, fn: Callable[[Recorded], Reply]) -> None:
        with self._lock:
            self._routes[(method, path)] = fn

    def seen(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (path is None or r.path.split("?")[0] == path)
            ]

    def _answer(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            script = self._routes.get((recorded.method, recorded.path.split("?")[0]))
            if script is None:
                return Reply(404, b"no route")
            if isinstance(script, list):
                return script.pop(0) if len(script) > 1 else script[0]
        return script(recorded)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
