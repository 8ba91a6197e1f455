"""A scriptable loopback server for the tests, on the package's own HTTP layer.

Routes answer from a script: a list of :class:`Reply` objects consumed in
order (the last one repeats), or a function of the recorded request. Every
request is recorded whole (method, path, headers, body, arrival time), so a
test can prove what reached the server: how many times, with which token,
with which bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from requests_bloxs_errors.simulator import Answer, Request
from requests_bloxs_errors.simulator._http import LoopbackServer

Recorded = Request


def Reply(
    status: int = 200,
    body: bytes | str = b"",
    headers: Mapping[str, str] | None = None,
    delay: float = 0.0,
    fault: str | None = None,
) -> Answer:
    """An answer; ``fault="reset"`` resets the connection instead."""
    return Answer(status, body, dict(headers or {}), delay=delay, drop=fault == "reset")


def json_reply(status: int, text: str, **headers: str) -> Answer:
    return Reply(status, text, {"Content-Type": "application/json", **headers})


Script = list[Answer] | Callable[[Request], Answer]


class ScriptServer:
    """Starts on construction; :meth:`close` stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[tuple[str, str], Script] = {}
        self.requests: list[Request] = []
        self._server = LoopbackServer(self._answer)
        self.host = self._server.host
        self.port = self._server.port
        self._server.start()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(self, method: str, path: str, *replies: Answer) -> None:
        """Answer ``method path`` with ``replies`` in order; the last repeats."""
        with self._lock:
            self._routes[(method, path)] = list(replies)

    def route_fn(self, method: str, path: str, fn: Callable[[Request], Answer]) -> None:
        with self._lock:
            self._routes[(method, path)] = fn

    def seen(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def _answer(self, request: Request) -> Answer:
        with self._lock:
            self.requests.append(request)
            script = self._routes.get((request.method, request.path))
            if script is None:
                return Reply(404, b"no route")
            if isinstance(script, list):
                return script.pop(0) if len(script) > 1 else script[0]
        return script(request)

    def close(self) -> None:
        self._server.stop()
