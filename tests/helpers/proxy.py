"""A forward HTTP proxy on loopback that demands Basic credentials.

It serves absolute-form requests (``GET http://127.0.0.1:port/path``) the way
a plain-HTTP proxy does, answers 407 without the right
``Proxy-Authorization``, strips that header, and forwards to loopback
targets only. ``CONNECT`` is answered with ``connect_status`` (407 by
default: a proxy that refuses to open tunnels), or reset when it is None.
"""

from __future__ import annotations

import base64
import http.client
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from requests_bloxs_errors.urls import is_loopback


class ForwardProxy:
    def __init__(self, user: str = "proxyuser", password: str = "proxy-s3cret") -> None:
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.user, self.password = user, password
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # (method, target, headers)
        #: The answer to CONNECT: a status, or None to reset the connection.
        self.connect_status: int | None = 407
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.seen.append(("CONNECT", self.path, dict(self.headers)))
                if proxy.connect_status is None:  # reset the tunnel instead of answering
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                self.send_response(proxy.connect_status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _forward(self) -> None:
                headers = dict(self.headers.items())
                proxy.seen.append((self.command, self.path, headers))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if headers.get("Proxy-Authorization") != proxy.expected:
                    self.send_response(407)
                    self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                target = urlsplit(self.path)
                assert is_loopback(target.hostname), "the test proxy forwards to loopback only"
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                forwarded = {
                    k: v
                    for k, v in headers.items()
                    if k.lower() not in ("proxy-authorization", "proxy-connection")
                }
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path, body=body, headers=forwarded)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, with_credentials: bool = True) -> str:
        auth = f"{self.user}:{self.password}@" if with_credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
