"""The loopback servers the benchmarks talk to, each in a process of its own.

One process serves every HTTP scenario (a small body, a token endpoint with
revocable tokens, a quota with fixed windows, the Retry-After probe, an API
that an outage can take down, and a 256 MiB stream); the client side then
owns its own core and GIL. The rate limiter's scenarios also start a real
``redis-server`` on loopback (:class:`RedisServer`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import secrets
import socket
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import requests

from requests_bloxs_errors.simulator import Answer, Request
from requests_bloxs_errors.simulator._http import LoopbackServer

STREAM_CHUNK = b"\0" * (1 << 20)


class App:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token_calls = 0
        self.valid: set[str] = set()
        self.quota = 100
        self.window = 1.0
        self.windows: dict[int, int] = {}
        self.served = {"200": 0, "429": 0}
        self.arrivals: list[float] = []  # when each /quota request came, since the last reset
        self.probe: dict[str, float] = {}
        self.gaps: dict[str, float] = {}
        self.outage = False  # while True, /api answers 503 without Retry-After
        self.outage_requests = 0  # requests to /api since the outage began
        self.api_ok = 0  # 200s from /api since the outage began

    def __call__(self, request: Request) -> Answer:
        path, query = request.path, {k: v[-1] for k, v in parse_qs(request.query).items()}
        if path == "/small":
            return Answer(
                200, b'{"ok": true, "padding": "0123456789"}', {"Content-Type": "application/json"}
            )
        if path == "/slow":  # a call that stays in flight a while (scenario 8c)
            return Answer(200, b"ok", delay=float(query.get("seconds", "0.05")))
        if path == "/token":
            time.sleep(0.05)  # a token endpoint is slow: that is what makes storms hurt
            token = secrets.token_hex(16)
            with self.lock:
                self.token_calls += 1
                self.valid.add(token)
            return Answer.json(200, {"access_token": token, "expires_in": 3600})
        if path == "/data":
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            with self.lock:
                ok = token in self.valid
            return Answer(200, b"data") if ok else Answer.json(401, {"error": "invalid_token"})
        if path == "/quota":
            now = time.monotonic()
            index = int(now // self.window)
            with self.lock:
                self.arrivals.append(now)
                count = self.windows.get(index, 0) + 1
                self.windows[index] = count
                allowed = count <= self.quota
                self.served["200" if allowed else "429"] += 1
            if allowed:
                return Answer(200, b"ok")
            headers = {}
            if query.get("variant") == "retry-after":
                headers["Retry-After"] = str(max(1, math.ceil((index + 1) * self.window - now)))
            return Answer(429, b"API calls quota exceeded!", headers)
        if path == "/probe":  # 429 with a given wait, then 200; the gap is measured here
            key = query["id"]
            now = time.monotonic()
            with self.lock:
                first = self.probe.get(key)
                if first is None:
                    self.probe[key] = now
                else:
                    self.gaps[key] = now - first
            if first is None:
                return Answer(429, b"wait", {"Retry-After": query["wait"]})
            return Answer(200, b"ok")
        if path == "/api":  # an API that an outage takes down: 503, no Retry-After
            with self.lock:
                down = self.outage
                if down:
                    self.outage_requests += 1
                else:
                    self.api_ok += 1
            if down:
                return Answer(503, b"Service Unavailable")
            return Answer(200, b'{"ok": true}', {"Content-Type": "application/json"})
        if path == "/control":
            return self.control(query)
        return Answer(404, b"")

    def control(self, query: dict[str, str]) -> Answer:
        with self.lock:
            action = query.get("action")
            if action == "revoke":
                self.valid.clear()
            elif action == "reset":
                self.token_calls = 0
                self.valid.clear()
                self.windows.clear()
                self.served = {"200": 0, "429": 0}
                self.arrivals = []
            elif action == "outage":  # begin (counts from zero) or end the outage
                self.outage = query["state"] == "on"
                if self.outage:
                    self.outage_requests = self.api_ok = 0
            elif action == "quota":
                self.quota = int(query["quota"])
                self.windows.clear()
                self.served = {"200": 0, "429": 0}
                self.arrivals = []
            state: dict[str, Any] = {
                "token_calls": self.token_calls,
                "served": dict(self.served),
                "worst_second": most_in_any(self.arrivals, 1.0),
                "gaps": dict(self.gaps),
                "outage": self.outage,
                "outage_requests": self.outage_requests,
                "api_ok": self.api_ok,
            }
        return Answer.json(200, state)


def most_in_any(times: list[float], period: float) -> int:
    """The most arrivals in any half-open interval of ``period`` seconds (sorted ``times``)."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= period:
            first += 1
        best = max(best, last - first + 1)
    return best


def _serve(ready: Any) -> None:
    server = LoopbackServer(App())
    ready.send(server.port)
    server.serve_forever()


def _stream(ready: Any, size: int) -> None:
    """A raw server answering every request with ``size`` bytes of zeros."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    ready.send(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_stream_one, args=(conn, size), daemon=True).start()


def _stream_one(conn: Any, size: int) -> None:
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        conn.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        sent = 0
        try:
            while sent < size:
                piece = STREAM_CHUNK[: min(len(STREAM_CHUNK), size - sent)]
                conn.sendall(piece)
                sent += len(piece)
        except OSError:
            pass


class Servers:
    """Start both server processes; ``close()`` stops them."""

    def __init__(self, stream_size: int) -> None:
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        self._app = context.Process(target=_serve, args=(send,), daemon=True)
        self._app.start()
        self.url = f"http://127.0.0.1:{receive.recv()}"
        receive, send = context.Pipe(duplex=False)
        self._stream = context.Process(target=_stream, args=(send, stream_size), daemon=True)
        self._stream.start()
        self.stream_url = f"http://127.0.0.1:{receive.recv()}/stream"

    def control(self, **query: Any) -> dict[str, Any]:
        answer = requests.get(self.url + "/control", params=query, timeout=10)
        result: dict[str, Any] = json.loads(answer.content)
        return result

    def close(self) -> None:
        for process in (self._app, self._stream):
            process.terminate()
            process.join(5)


class RedisServer:
    """A ``redis-server`` on a free loopback port, without persistence: the tests'
    own (``tests/helpers/redisserver.py``), reporting why it cannot run instead of raising.

    ``start()`` starts it, ``close()`` stops it.

    :ivar url: ``redis://127.0.0.1:PORT/0``, or ``""`` when it is not running.
    :ivar missing: why there is no server (``""`` when there is one).
    """

    def __init__(self) -> None:
        self.url = ""
        self.missing = "not started"
        self._server: Any = None

    def start(self) -> None:
        from tests.helpers.redisserver import RedisServer as Real
        from tests.helpers.redisserver import find_redis_server

        self.missing = ""
        try:
            import redis  # noqa: F401 - the client the limiter needs
        except ImportError:
            self.missing = "redis-py not installed (pip install 'requests-bloxs-errors[redis]')"
            return
        program = find_redis_server()
        if program is None:
            self.missing = "redis-server not found"
            return
        try:
            self._server = Real(program).start()
        except RuntimeError as exc:
            self.missing = str(exc)
            return
        self.url = self._server.url + "/0"

    def close(self) -> None:
        self.url = ""
        if self._server is not None:
            self._server.__exit__(None, None, None)  # stops it and removes its folder
            self._server = None
