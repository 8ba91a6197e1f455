"""A durable outbox of writes that failed for reasons a later attempt may cure.

:class:`Outbox` keeps, in an SQLite file, the POST, PUT, PATCH and DELETE
requests whose final outcome was a 5xx, a connection error or timeout, a
429 (or 403 quota) the retries did not outlast, or a refusal before sending
(an open circuit, no rate-limit permit in time). Reads are never kept, nor
writes the server refused for good (400, 401, 403, 404, 405, 415): sending
them again cannot help.

Each entry is committed before the call returns or raises. What the
request carried (its URL with the query string, its headers minus
credentials, its body) is sealed with AES-GCM under a key kept in a file of
its own next to the database (``<path>.key``, 0600; a backend of your own
names it: its ``key_path``); the database shows only
the method, the URL without its query string, the error and the times.
:meth:`Outbox.replay` sends the entries through a session of yours (its
adapter signs with fresh credentials), each exactly once even with two
replayers at work: an entry is claimed with a lease before it is sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from base64 import b64decode, b64encode
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..clock import SYSTEM, Clock
from ..credentials.token_requests import asks_for_a_token
from ..errors.classify import classify
from ..errors.responses import is_local
from ..errors.table import QUOTA_RULE, rule_for
from ..events import AlertEvent, logger
from ..exceptions import BloxsError
from ..pipeline.steps import Step
from ..storage import (
    OutboxRow,
    OutboxStore,
    ProcessLock,
    StorageURL,
    lease_owner,
    open_backend,
    parse,
)
from ..storage.sealing import Sealer, aead_class, key_file
from ..urls import host_of, redact_url

if TYPE_CHECKING:
    import requests
    from requests import Response

    from ..pipeline.call import Call
    from ..pipeline.failures import Failure

__all__ = ["Outbox", "OutboxEntry", "Queueing", "ReplayReport", "ReplayResult"]

_UNCERTAIN = "uncertain: the server may have processed it already (--include-uncertain sends it)"
_LEASED = "another replayer is sending it"

_FEATURE = "the outbox"

#: Seconds a replayer holds an entry it claimed. Longer than any send (its
#: timeouts, retries, back-off and rate-limit waits): a send that outlived its
#: lease could be made twice. A replayer that dies mid-send leaves its entry
#: to the next replay after this long.
LEASE = 3600.0
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Methods a second delivery cannot harm.
IDEMPOTENT_WRITES = frozenset({"PUT", "DELETE"})
#: Headers never kept: credentials, and what a credential writes.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-timestamp"})

#: Set while :meth:`Outbox.replay` sends: a replayed write that fails again is not queued twice.
_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar("rbe_replaying", default=False)


@dataclass(frozen=True)
class OutboxEntry:
    """One queued write.

    :ivar id: its number in the outbox.
    :ivar created: when it was queued (Unix time).
    :ivar method: the HTTP method.
    :ivar url: the full URL, query string included (print :attr:`shown_url`).
    :ivar shown_url: the URL without query string or credentials.
    :ivar host: ``scheme://host:port``.
    :ivar headers: the request's headers, credentials removed.
    :ivar body: the request's body.
    :ivar kind: what went wrong (``"service_unavailable"``, ``"not_sent"``, ...).
    :ivar status: the last status, or None when no response came.
    :ivar trace_id: the last error's trace id, if any.
    :ivar uncertain: True when the server may have processed the request
        already (a non-idempotent write that got a 5xx or lost its answer).
    :ivar state: ``"queued"``, ``"dead"`` once refused for good on replay, or
        ``"unreadable"`` when its sealed content does not open (its key file
        was lost or replaced): it cannot be replayed.
    :ivar last_error: what the last replay got, if it failed.
    :ivar tries: replays tried so far.
    """

    id: int
    created: float
    method: str
    url: str = field(repr=False)
    shown_url: str
    host: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    kind: str
    status: int | None
    trace_id: str | None
    uncertain: bool
    state: str
    last_error: str | None
    tries: int


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did with one entry.

    :ivar id: the entry.
    :ivar outcome: ``"sent"`` (removed), ``"failed"`` (stays queued for the
        next replay), ``"dead"`` (refused for good: kept, not replayed again)
        or ``"skipped"`` (stays queued: uncertain, or another replayer has it).
    :ivar status: the server's answer, or None when none came.
    :ivar reason: in words: ``"201 Created"``, ``"503 Service Unavailable"``,
        ``"ConnectionError: no response"``, ``"uncertain: ..."``.
    """

    id: int
    outcome: str
    status: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class ReplayReport:
    """What :meth:`Outbox.replay` did: the entry ids sent, failed (dead ones
    included) and skipped, and each entry's :class:`ReplayResult`."""

    sent: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    skipped: tuple[int, ...] = ()
    results: tuple[ReplayResult, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed


class Outbox:
    """A durable queue of failed writes in an SQLite file; see the module docstring.

    Usage::

        >>> rbe.mount(session, "https://acme.bloxs.io/", outbox="sqlite:////var/lib/app/outbox.db")
        >>> report = rbe.Outbox("sqlite:////var/lib/app/outbox.db").replay(session)

    :param url: ``"sqlite:////absolute/path.db"``; the file (and ``<path>.key``)
        are created readable by their owner only.
    :raises ValueError: for another kind of URL, or a backend of your own that
        names no file for the sealing key (see
        :class:`~requests_bloxs_errors.storage.OutboxStore`).
    :raises ImportError: without the ``crypto`` extra.
    """

    def __init__(self, url: str, *, clock: Clock = SYSTEM) -> None:
        storage = parse(url, what="outbox", capability=OutboxStore)
        aead_class(_FEATURE)  # a missing extra is a configuration error: say so now
        self.storage = storage
        #: Where time comes from (entries' times, leases, alerts).
        self.clock = clock
        self._store: OutboxStore = open_backend(storage, clock)
        self._key_path = _key_path(self._store, storage)
        self._sealer: Sealer | None = None
        #: Hosts whose failing writes were announced (a "queued" alert) and have
        #: not answered since: one alert per outage, not one per write.
        self._alerted: set[str] = set()
        self._alerted_lock = ProcessLock()

    def _keys(self, *, create: bool) -> Sealer:
        """The sealer of this outbox: its key file is made on the first write."""
        if self._sealer is None:
            self._sealer = Sealer(key_file(self._key_path, create=create), _FEATURE)
        return self._sealer

    def first_for(self, host: str) -> bool:
        """Whether a write to ``host`` is the first queued since it last answered."""
        with self._alerted_lock:
            if host in self._alerted:
                return False
            self._alerted.add(host)
            return True

    def answered(self, host: str) -> None:
        """``host`` answered a call: its next failing write alerts again."""
        if host in self._alerted:
            with self._alerted_lock:
                self._alerted.discard(host)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Outbox, (self.storage.url,))

    def __repr__(self) -> str:
        return f"Outbox({self.storage.shown!r})"

    def add(
        self,
        request: requests.PreparedRequest,
        *,
        kind: str,
        status: int | None,
        trace_id: str | None,
        uncertain: bool,
        body: bytes,
    ) -> int:
        """Queue ``request``; committed before it returns the entry's id."""
        method = (request.method or "GET").upper()
        url = request.url or ""
        headers = {
            _text(name): _text(value)
            for name, value in request.headers.items()
            if _text(name).lower() not in CREDENTIAL_HEADERS
        }
        content = {"url": url, "headers": headers, "body": b64encode(body).decode()}
        shown = redact_url(url)
        label = f"{method} {shown}".encode()
        return self._store.add_entry(
            created=self.clock.time(),
            method=method,
            shown_url=shown,
            host=host_of(url),
            sealed=self._keys(create=True).seal(json.dumps(content).encode(), label),
            kind=kind,
            status=status,
            trace_id=trace_id,
            uncertain=uncertain,
        )

    def entries(self) -> list[OutboxEntry]:
        """Every entry, oldest first."""
        return [self._entry(row) for row in self._store.entry_rows()]

    def get(self, entry_id: int) -> OutboxEntry | None:
        """The entry ``entry_id``, or None."""
        rows = self._store.entry_rows(entry_id)
        return self._entry(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        """How many entries are in each state (``queued``, ``dead``), contents unopened."""
        found: dict[str, int] = {}
        for row in self._store.entry_rows():
            found[row.state] = found.get(row.state, 0) + 1
        return found

    def drop(self, entry_id: int) -> bool:
        """Remove an entry; False when there was none."""
        return self._store.drop_entry(entry_id)

    def _entry(self, row: OutboxRow) -> OutboxEntry:
        state = row.state
        label = f"{row.method} {row.shown_url}".encode()
        try:
            content = json.loads(self._keys(create=False).open(bytes(row.sealed), label))
        except (OSError, ValueError):
            content = {"url": row.shown_url, "headers": {}, "body": ""}
            state = "unreadable"
        return OutboxEntry(
            id=row.id,
            created=row.created,
            method=row.method,
            url=content["url"],
            shown_url=row.shown_url,
            host=row.host,
            headers=dict(content["headers"]),
            body=b64decode(content["body"]),
            kind=row.kind,
            status=row.status,
            trace_id=row.trace_id,
            uncertain=bool(row.uncertain),
            state=state,
            last_error=row.last_error,
            tries=row.tries,
        )

    # -- replay ----------------------------------------------------------------------

    def replay(
        self, session: requests.Session, *, include_uncertain: bool = False, timeout: float = 30.0
    ) -> ReplayReport:
        """Send the queued entries through ``session``, oldest first.

        A sent entry (any status below 400) is removed. One refused for good
        (a 4xx other than 408, 429 and a 403 quota) is kept, marked dead,
        with its error. Any other failure leaves it queued for the next
        replay. Uncertain entries are skipped unless ``include_uncertain``.
        Each entry is claimed with a lease first, so two replayers never
        send one entry twice.
        """
        store = self._store
        owner = lease_owner()
        results: list[ReplayResult] = []
        token = _replaying.set(True)
        try:
            for entry_id, uncertain in store.queued():
                if uncertain and not include_uncertain:
                    results.append(ReplayResult(entry_id, "skipped", reason=_UNCERTAIN))
                    continue
                if not store.claim(entry_id, owner, self.clock.time(), LEASE):
                    results.append(ReplayResult(entry_id, "skipped", reason=_LEASED))
                    continue
                entry = self.get(entry_id)
                if entry is None or entry.state == "unreadable":
                    status, reason = None, "its sealed content does not open (another key file?)"
                    outcome: tuple[str, bool] | None = (reason, True)
                else:
                    status, reason, outcome = self._send(session, entry, timeout)
                result = "sent" if outcome is None else "dead" if outcome[1] else "failed"
                results.append(ReplayResult(entry_id, result, status, reason))
                # (a sent entry that stayed queued would be sent again: the store
                # retries recording it while its file is busy)
                store.settle(entry_id, owner, outcome)
        finally:
            _replaying.reset(token)
        return ReplayReport(
            sent=tuple(r.id for r in results if r.outcome == "sent"),
            failed=tuple(r.id for r in results if r.outcome in ("failed", "dead")),
            skipped=tuple(r.id for r in results if r.outcome == "skipped"),
            results=tuple(results),
        )

    @staticmethod
    def _send(
        session: requests.Session, entry: OutboxEntry, timeout: float
    ) -> tuple[int | None, str, tuple[str, bool] | None]:
        """``(status, reason, outcome)``: the outcome None when sent, else
        ``(error, dead)``."""
        try:
            response = session.request(
                entry.method, entry.url, headers=entry.headers, data=entry.body, timeout=timeout
            )
        except BloxsError as exc:  # an open circuit, a rate limit, raise_errors=True
            status = exc.response.status_code if exc.response is not None else None
            reason = f"{exc.kind}: {exc}"
            return status, reason, (reason, status is not None and _dead(exc.response))
        except Exception as exc:
            reason = f"{type(exc).__name__}: no response"
            return None, reason, (reason, False)
        with response:
            reason = f"{response.status_code} {response.reason}"
            if response.status_code < 400:
                return response.status_code, reason, None
            return response.status_code, reason, (reason, _dead(response))

    def close(self) -> None:
        """Close this process's connection to the store."""
        self._store.close()


def _key_path(store: OutboxStore, storage: StorageURL) -> str:
    """Where ``store`` keeps the outbox's sealing key, or the one-line error: a
    relative path (or none) would be another file in each process's directory."""
    path = getattr(store, "key_path", None)
    if not isinstance(path, str) or not os.path.isabs(path):
        raise ValueError(
            f"outbox {storage.scheme}:// names no file for its sealing key: its backend must "
            "name one in key_path, an absolute path every process that replays the outbox reads"
        )
    return path


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _dead(response: Response | None) -> bool:
    """A refusal that sending again cannot cure: a 4xx other than 408, 429, a quota,
    and 401 or 403 (the replaying session's credentials may be what is wrong)."""
    if response is None:
        return False
    status = response.status_code
    if not 400 <= status < 500 or status in (401, 403, 408, 429):
        return False
    rule = rule_for(status, "Retry-After" in response.headers)
    return rule is not QUOTA_RULE


# -- the step -------------------------------------------------------------------------


class Queueing(Step):
    """The step that queues a call's write in an :class:`Outbox` when it failed curably."""

    __slots__ = ("outbox",)

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def on_outcome(self, call: Call, response: Response | None, failure: Failure | None) -> None:
        """Queue a write whose final outcome a later attempt may cure."""
        if response is not None and is_local(response):
            return  # the adapter answered it (a script's token request): the host did not
        if response is not None and response.status_code < 400:
            self.outbox.answered(call.host)  # it answers: the next outage alerts again
        if not _keepable(call):
            return
        if response is not None:
            status = response.status_code
            rule = rule_for(status, "Retry-After" in response.headers)
            if status >= 500:
                self._queue(
                    call, rule.kind if rule else str(status), status, response, not_sent=False
                )
            elif status == 429 or rule is QUOTA_RULE:
                self._queue(
                    call, rule.kind if rule else "rate_limited", status, response, not_sent=True
                )
        elif failure is not None and failure.rule.kind in ("not_sent", "no_answer"):
            self._queue(call, failure.kind, None, None, not_sent=failure.rule.kind == "not_sent")

    def on_refused(self, call: Call, error: BaseException) -> None:
        """Queue a write that was never sent: refused (an open circuit, no permit in
        time), or its credentials could not be had (the token endpoint down)."""
        if _keepable(call):
            kind = getattr(error, "kind", None) or type(error).__name__
            self._queue(call, kind, None, None, not_sent=True)

    def _queue(
        self,
        call: Call,
        kind: str,
        status: int | None,
        response: Response | None,
        *,
        not_sent: bool,
    ) -> None:
        if asks_for_a_token(call.request):  # a secret is never stored, nor replayed
            logger.warning(
                "%s %s failed (%s) and is not kept in the outbox: it asks for a token or "
                "carries a secret; send it again yourself",
                call.method,
                call.url,
                kind,
            )
            return
        body = _body_bytes(call)
        if body is None:
            logger.error(
                "%s %s failed (%s) and cannot be queued: its body is a stream that cannot be "
                "read again",
                call.method,
                call.url,
                kind,
            )
            return
        uncertain = not not_sent and call.method not in IDEMPOTENT_WRITES and not call.key
        info = classify(response) if response is not None else None  # (cached by the adapter)
        trace = info.trace_id if info is not None else None
        try:
            call.outbox_id = self.outbox.add(
                call.request,
                kind=kind,
                status=status,
                trace_id=trace,
                uncertain=uncertain,
                body=body,
            )
        except Exception as exc:  # the call's outcome stands; say loudly that nothing was kept
            logger.error(
                "%s %s failed (%s) and could not be queued in %s: %s",
                call.method,
                call.url,
                kind,
                self.outbox.storage.shown,
                type(exc).__name__,
            )
            return
        logger.warning(
            "Queued %s %s in the outbox as entry %d (%s%s)%s",
            call.method,
            call.url,
            call.outbox_id,
            kind,
            ", uncertain: it may have been processed" if uncertain else "",
            f"; trace id {trace}" if trace else "",
        )
        if self.outbox.first_for(call.host):
            call.hooks.alert(
                AlertEvent(
                    "queued",
                    call.host,
                    f"writes to {call.host} are failing ({kind}); they are queued in "
                    f"{self.outbox.storage.shown} for a later replay",
                    outbox_id=call.outbox_id,
                    at=self.outbox.clock.time(),
                    trace_id=trace,
                )
            )


def _keepable(call: Call) -> bool:
    """Whether a failed call is one to keep: a write (a read changes nothing), not a
    replay, not a credential's own token request (it carries a secret)."""
    return (
        call.method in WRITES and not call.read and not call.for_credential and not _replaying.get()
    )


def _body_bytes(call: Call) -> bytes | None:
    """The request body as bytes, or None when it is a stream that cannot be read again."""
    body = call.request.body
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if call.body_position is not None and hasattr(body, "read"):
        with contextlib.suppress(OSError, ValueError):
            body.seek(call.body_position)
            data = body.read()
            return data if isinstance(data, bytes) else str(data).encode("utf-8")
    return None
