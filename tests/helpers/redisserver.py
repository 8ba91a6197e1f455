"""A real ``redis-server`` for the tests: started on a free loopback port, stopped after."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str | None:
    """The path of ``redis-server``, or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """``with RedisServer(program) as server: server.url`` (no persistence, loopback only)."""

    def __init__(self, program: str, *, port: int = 0, password: str | None = None) -> None:
        self.program = program
        self.port = port
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="rbe-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        self.port = self.port or free_port()
        auth = ["--requirepass", self.password] if self.password else []
        self._process = subprocess.Popen(
            [
                self.program,
                *auth,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        limit = time.monotonic() + 10
        while time.monotonic() < limit:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    login = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    sock.sendall(login + b"PING\r\n")
                    if b"+PONG" in _read_some(sock):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


def _read_some(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data or (data.startswith(b"+OK") and data.count(b"\r\n") < 2):
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data
