"""A TLS server on loopback with certificates the tests make (trustme).

It counts the TCP connections it accepts and the TLS handshakes that
complete, so a test can prove how often a client tried. ``mode`` picks the
behaviour: ``"ok"`` answers 200, ``"reset"`` resets every connection before
the handshake, ``"client_cert"`` demands a client certificate signed by the
test CA.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct

import trustme

from .rawserver import Listener, read_request


class TLSServer(Listener):
    def __init__(self, ca: trustme.CA, *, names: tuple[str, ...], mode: str = "ok") -> None:
        self.ca = ca
        self.mode = mode
        self.handshakes = 0
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*names).configure_cert(self.context)
        if mode == "client_cert":
            ca.configure_trust(self.context)
            self.context.verify_mode = ssl.CERT_REQUIRED
        #: TCP connections accepted: how often a client tried.
        self.connections = 0
        super().__init__()

    def url(self, host: str = "127.0.0.1", path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def accepted(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1

    def _connection(self, conn: socket.socket) -> None:
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            return
        conn.settimeout(5)
        try:
            tls = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            try:
                tls.do_handshake()
            except ssl.SSLError:
                # the alert is on its way; read what the client sends before
                # closing, so the close is a FIN that lets the alert arrive,
                # not a reset that would destroy it
                with socket.socket(fileno=tls.detach()) as plain:
                    plain.settimeout(0.5)
                    with contextlib.suppress(OSError):
                        while plain.recv(65536):
                            pass
                return
            with tls:
                with self._lock:
                    self.handshakes += 1
                if b"\r\n\r\n" not in read_request(tls):
                    return  # (the client hung up before its request's head)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()
