"""``RBE_ALERT``: where ``run`` sends each :class:`~requests_bloxs_errors.AlertEvent`.

Two forms:

``https://hooks.example.com/services/...`` (or ``http://``)
    a webhook (:class:`Webhook`): each alert is POSTed to it as JSON
    (:func:`alert_json`) by a thread of its own, so the call that raised the
    alert never waits for it. The POST goes out through the standard library,
    never through the adapter: it is not paced, not retried (one POST per
    alert) and cannot raise an alert of its own. It has :data:`TIMEOUT`
    seconds to connect and as long to answer, and follows no redirect. A POST
    that fails (no answer, or a status of 300 or more) is one WARNING on the
    library's logger, then nothing more until a POST succeeds again; the
    WARNING names the webhook's origin only (a webhook's path or query is
    often its secret). At exit, alerts still waiting get up to
    :data:`TIMEOUT` seconds to go.
``package.module:function``
    a callable that receives each AlertEvent, as ``on_alert=`` does (in the
    thread of the call that raised it; what it raises is logged and ignored).
    It is imported when the configuration is read, so a typo stops ``run``
    before the script starts; the module must be importable from where
    ``run`` starts (the current directory, ``PYTHONPATH``, or installed).

The JSON holds the AlertEvent's fields (which carry no query string, header,
token or body), its times in ISO 8601 UTC, the process that raised it, and a
``text`` line that chat webhooks (Slack, Mattermost) show as the message.
"""

from __future__ import annotations

import atexit
import http.client
import importlib
import json
import logging
import os
import queue
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..clock import SYSTEM
from ..events import AlertEvent
from ..urls import origin, safe_for_message
from ._times import iso

__all__ = ["QUEUE_SIZE", "TIMEOUT", "Webhook", "alert_json", "alert_shown", "alert_target"]

logger = logging.getLogger("requests_bloxs_errors")

#: Seconds a webhook POST has to connect, and again to answer; and what alerts
#: still waiting get at exit.
TIMEOUT = 5.0
#: Alerts waiting for the webhook at most; one more is dropped (and said so once).
QUEUE_SIZE = 100
_CALLABLE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)
_FORMS = "an http:// or https:// webhook URL, or package.module:function"


def alert_target(value: str, what: str = "RBE_ALERT") -> Callable[[AlertEvent], object]:
    """The hook ``value`` names: a :class:`Webhook` for a URL, else the callable
    ``module:function`` names (imported now).

    :param what: the variable's name, for the error message.
    :raises ValueError: naming ``what``, in one line.
    """
    if "://" in value:
        return Webhook(value, what=what)
    if not _CALLABLE.fullmatch(value):
        raise ValueError(f"{what} must be {_FORMS}; not {safe_for_message(value)}")
    module_name, _, path = value.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{what}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module's own code failed: say so, in one line
        raise ValueError(
            f"{what}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    for name in path.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise ValueError(f"{what}: {module_name!r} has no {path!r}") from None
    if not callable(found):
        raise ValueError(f"{what}: {value} is a {type(found).__name__}, not a callable")
    hook: Callable[[AlertEvent], object] = found
    return hook


def alert_shown(value: str) -> str:
    """``RBE_ALERT`` as ``config`` shows it: a webhook by its origin only."""
    if "://" not in value:
        return safe_for_message(value)
    try:
        return f"{origin(value)}/... (webhook)"
    except ValueError:
        return "(a webhook URL that does not parse)"


def alert_json(event: AlertEvent) -> dict[str, Any]:
    """What a webhook receives for ``event``."""
    return {
        "text": f"[{event.kind}] {event.message}",
        "kind": event.kind,
        "host": event.host,
        "message": event.message,
        "failures": event.failures,
        "rejected": event.rejected,
        "outbox_id": event.outbox_id,
        "at": iso(event.at) if event.at else None,
        "until": iso(event.until) if event.until is not None else None,
        "trace_id": event.trace_id,
        "process": {"hostname": socket.gethostname(), "pid": os.getpid()},
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new address: an alert goes where it was told."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Webhook:
    """A hook that POSTs each alert to ``url`` as JSON, from a thread of its own.

    Calling it only queues the alert: it never blocks and never raises.

    :param url: an ``http://`` or ``https://`` URL.
    :param timeout: seconds to connect, and to answer.
    :raises ValueError: for another kind of URL, or one with ``user:password@``.
    """

    def __init__(self, url: str, *, timeout: float = TIMEOUT, what: str = "RBE_ALERT") -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            home = origin(url)
        except ValueError:
            home, parts = "", None
        if parts is None or parts.scheme.lower() not in ("http", "https") or not home:
            raise ValueError(f"{what} must be {_FORMS}; not {safe_for_message(url)}")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"{what} must not contain credentials (user:password@): a webhook's secret "
                "goes in its path or query"
            )
        self._url = url
        #: How logs and ``config`` name it: its origin, never its path or query.
        self.shown = home
        self.timeout = timeout
        self._queue: queue.Queue[AlertEvent] = queue.Queue(QUEUE_SIZE)
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0  # the process the thread runs in
        self._failing = False
        self._dropping = False

    def __repr__(self) -> str:
        return f"Webhook('{self.shown}/...')"

    def __call__(self, event: AlertEvent) -> None:
        """Queue ``event`` for the webhook."""
        self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                said, self._dropping = self._dropping, True
            if not said:
                logger.warning(
                    "Alert webhook %s: %d alerts wait already; alerts are dropped until it "
                    "catches up (each is still logged here)",
                    self.shown,
                    QUEUE_SIZE,
                )

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued alerts to be sent (or to
        fail); whether none is left."""
        deadline = SYSTEM.monotonic() + timeout  # (real time: the sockets wait on it)
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - SYSTEM.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def _start(self) -> None:
        pid = os.getpid()
        with self._lock:
            if self._thread is not None and self._pid == pid:
                return
            if self._thread is not None:  # a forked child: the thread stayed in the parent
                self._queue = queue.Queue(QUEUE_SIZE)
            self._pid = pid
            self._thread = threading.Thread(
                target=self._deliver, name="rbe-alert-webhook", daemon=True
            )
            self._thread.start()
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        if not self.flush(self.timeout):
            logger.warning("Alert webhook %s: alerts still unsent at exit are dropped", self.shown)

    def _deliver(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._post(event)
            finally:
                self._queue.task_done()

    def _post(self, event: AlertEvent) -> None:
        request = urllib.request.Request(
            self._url,
            data=json.dumps(alert_json(event)).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"requests-bloxs-errors/{__version__} (alert)",
            },
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
        except (OSError, http.client.HTTPException) as exc:
            self._failed(event, _why(exc, self.timeout))
            return
        with self._lock:
            recovered, self._failing, self._dropping = self._failing, False, False
        if recovered:
            logger.info("Alert webhook %s: delivering again", self.shown)

    def _failed(self, event: AlertEvent, why: str) -> None:
        with self._lock:
            said, self._failing = self._failing, True
        if not said:
            logger.warning(
                "Alert webhook %s: the %s alert was not delivered (%s); no more is said "
                "until one is (each alert is still logged here)",
                self.shown,
                event.kind,
                why,
            )


def _why(exc: BaseException, timeout: float) -> str:
    """Why a POST failed, in words that hold no URL: a status, or the error's kind."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        return f"it answered {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        exc = reason if isinstance(reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    strerror = getattr(exc, "strerror", None)
    return strerror.lower() if isinstance(strerror, str) and strerror else type(exc).__name__
