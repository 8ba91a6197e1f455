"""The demo: a realistic workload against the embedded simulator, narrated.

Each step runs real requests through a mounted :class:`requests.Session`
and prints a timeline: every request the simulated server received (token
fetches included), joined with what the adapter decided about it (status,
kind, decision, wait). A summary table closes the run. Each step states
the outcome it expects, and the demo exits non-zero if one differs, so it
doubles as an end-to-end check.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from ..adapter import attempts, mount
from ..credentials.auth import Credential
from ..credentials.providers import BloxsTokenAuth, ClientCredentialsAuth
from ..errors.classify import classify
from ..events import AlertEvent, Attempt
from ..exceptions import BloxsError, CircuitOpenError
from ..resilience.breaker import CircuitBreaker
from ..resilience.outbox import Outbox
from ..resilience.ratelimit import RateLimit
from ..simulator import BLOXS_TOKEN_PATH, COMPLEXES, DEALCLOUD_TOKEN_PATH, Seen, Simulator
from ._term import Terminal, status_style
from .outbox_cli import replay_summary

__all__ = ["run_demo"]

DEALCLOUD_ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"
#: The simulated Bloxs filter quota: 5 per 2-second window (the real one is 100 per minute).
FILTER_QUOTA, FILTER_WINDOW, FILTER_CALLS = 5, 2.0, 8


@dataclass
class _World:
    sim: Simulator
    bloxs: requests.Session
    dealcloud: requests.Session

    def url(self, path: str) -> str:
        return self.sim.url + path


@dataclass(frozen=True)
class _Step:
    title: str
    run: Callable[[_World], list[requests.Response]]
    expect: Sequence[int]  # the final status of each call


def _fetch_complexes(w: _World) -> list[requests.Response]:
    return [w.bloxs.get(w.url(COMPLEXES), params={"paging.pageSize": 5}, timeout=10)]


def _revoked_token(w: _World) -> list[requests.Response]:
    w.sim.revoke_tokens()  # the server drops the token long before its 24 h are up
    return [w.bloxs.get(w.url(f"{COMPLEXES}/1"), timeout=10)]


def _throttled_burst(w: _World) -> list[requests.Response]:
    return [w.dealcloud.get(w.url(DEALCLOUD_ENTRIES), timeout=10) for _ in range(7)]


def _paced_burst(w: _World) -> list[requests.Response]:
    url = w.url(COMPLEXES + "/filter")
    return [w.bloxs.post(url, json={"city": "Delft"}, timeout=10) for _ in range(FILTER_CALLS)]


def _maintenance(w: _World) -> list[requests.Response]:
    w.sim.maintenance(1.0)
    return [w.bloxs.get(w.url(f"{COMPLEXES}/2"), timeout=10)]


def _validation(w: _World) -> list[requests.Response]:
    return [w.bloxs.post(w.url(COMPLEXES), json={"city": "Delft", "units": -4}, timeout=10)]


def _not_found(w: _World) -> list[requests.Response]:
    return [w.bloxs.get(w.url(f"{COMPLEXES}/999"), timeout=10)]


def _post_not_retried(w: _World) -> list[requests.Response]:
    w.sim.fail(500, path=COMPLEXES, method="POST", times=1)
    return [w.bloxs.post(w.url(COMPLEXES), json={"name": "Harbour View", "units": 40}, timeout=10)]


def _post_with_key(w: _World) -> list[requests.Response]:
    w.sim.fail(500, path=COMPLEXES, method="POST", times=1)
    headers = {"Idempotency-Key": "demo-create-harbour-view"}
    body = {"name": "Harbour View", "units": 40}
    return [w.bloxs.post(w.url(COMPLEXES), json=body, headers=headers, timeout=10)]


STEPS = (
    _Step("List complexes (the first call fetches a Bloxs token)", _fetch_complexes, [200]),
    _Step("The server revokes the token early: 401, refresh, resend once", _revoked_token, [200]),
    _Step(
        "A burst of 7 DealCloud calls against a quota of 5 per second", _throttled_burst, [200] * 7
    ),
    _Step(
        f"{FILTER_CALLS} Bloxs filter calls against a quota of {FILTER_QUOTA} per "
        f"{FILTER_WINDOW:g} s: paced by the client, no 429",
        _paced_burst,
        [200] * FILTER_CALLS,
    ),
    _Step("A maintenance window: 503 with Retry-After", _maintenance, [200]),
    _Step("A create with two invalid fields: 400 with per-field errors", _validation, [400]),
    _Step("A complex that does not exist: 404", _not_found, [404]),
    _Step("A create hit by a transient 500: a POST is not sent twice", _post_not_retried, [500]),
    _Step("The same create with an Idempotency-Key: retried safely", _post_with_key, [201]),
)


# -- the outage scene: a circuit breaker, an outbox, a replay ------------------------------

OUTAGE_WRITES = 6


def _outage_scene(term: Terminal, world: _World, auth: Credential, number: int) -> list[str]:
    """A long outage opens the circuit, the writes go to the outbox, the API comes
    back, and a replay sends each write once. Returns what went unexpectedly."""
    term.line()
    term.line(f"{number}. A long outage: the circuit opens, writes go to the outbox", "bold")
    try:
        with tempfile.TemporaryDirectory(prefix="rbe-demo-") as folder:
            outbox = Outbox(f"sqlite:///{folder}/outbox.db")
            return _outage(term, world, auth, outbox, number)
    except ImportError as exc:  # the outbox seals what it keeps: it needs cryptography
        term.line(f"   (skipped: {exc})", "dim")
        return []


def _outage(
    term: Terminal, world: _World, auth: Credential, outbox: Outbox, number: int
) -> list[str]:
    sim = world.sim
    alerts: list[AlertEvent] = []
    session = requests.Session()
    mount(
        session,
        sim.url + "/api/v1/",
        auth=auth,
        max_retries=1,
        backoff_factor=0.05,
        circuit_breaker=CircuitBreaker(failures=3, open_for=30),
        outbox=outbox,
        on_alert=alerts.append,
    )
    sim.maintenance(600, retry_after=False)  # down, and no word of when it comes back
    before = len(sim.requests)
    outcomes = []
    for n in range(1, OUTAGE_WRITES + 1):
        body = {"name": f"Block {n}", "units": 10 * n}
        key = {"Idempotency-Key": f"demo-outage-{n}"}
        response = session.post(world.url(COMPLEXES), json=body, headers=key, timeout=10)
        try:
            response.raise_for_status()
        except CircuitOpenError as exc:  # a local 503: the adapter refused to send it
            outcomes.append(
                f"circuit open: a local {response.status_code}, not sent; kept as outbox "
                f"entry {exc.outbox_id}"
            )
        except BloxsError as exc:
            story = ", ".join(f"{a.status}" for a in attempts(response))
            outcomes.append(f"{story}: kept as outbox entry {exc.outbox_id}")
    for n, outcome in enumerate(outcomes, 1):
        term.line(f"   create {n}: {outcome}", "yellow")
    for alert in alerts:
        term.line(f"   alert {alert.kind}: {alert.message}", "red")
    reached = len(sim.requests) - before
    term.line(f"   {reached} requests reached the server for {OUTAGE_WRITES} creates.", "dim")
    session.close()
    term.line()
    term.line(f"{number + 1}. The API is back: 'outbox replay' sends each write once", "bold")
    sim.clear_faults()
    before = len(sim.requests)
    report = outbox.replay(world.bloxs)  # fresh credentials, the usual rules
    creates = [r for r in sim.requests[before:] if r.method == "POST" and r.path == COMPLEXES]
    for record in creates:
        term.line(
            f"   POST   {record.path}  {record.status}  replayed", status_style(record.status)
        )
    term.line(f"   {replay_summary(report)}", "dim")  # as 'outbox replay' says it
    problems = []
    if len(outcomes) != OUTAGE_WRITES or [a.kind for a in alerts] != ["queued", "circuit_open"]:
        problems.append(f"outage: {len(outcomes)} writes kept, alerts {[a.kind for a in alerts]}")
    if len(report.sent) != OUTAGE_WRITES or len(creates) != OUTAGE_WRITES:
        problems.append(f"replay: {len(report.sent)} sent, {len(creates)} creates reached the API")
    return problems


def _describe(attempt: Attempt) -> str:
    decision = attempt.decision
    if decision == "retry":
        decision = f"retry after {attempt.wait:.2f}s"
    elif decision == "reauth":
        decision = "refresh credentials, resend once"
    if attempt.paced:
        return f"waited {attempt.paced:.2f}s for a rate-limit permit, then sent; {decision}"
    return decision


def _timeline(
    records: list[Seen], responses: list[requests.Response]
) -> Iterator[tuple[list[str], str]]:
    """Rows for the requests the server saw, each joined with the adapter's decision."""
    decisions = [a for r in responses for a in attempts(r)]
    for record in records:
        status = "dropped" if record.status is None else str(record.status)
        if record.path in (BLOXS_TOKEN_PATH, DEALCLOUD_TOKEN_PATH):
            outcome = "token issued" if record.status == 200 else "token refused"
            yield ["token", record.method, record.path, status, "", outcome], "blue"
            continue
        attempt = decisions.pop(0) if decisions else None
        kind = attempt.kind if attempt else ""
        decision = _describe(attempt) if attempt else ""
        number = f"#{attempt.number}" if attempt else ""
        yield (
            [number, record.method, record.path, status, kind, decision],
            status_style(record.status),
        )


_WIDTHS = (5, 5, 42, 4, 22)  # attempt, method, path, status, kind; the decision ends the line


def _timeline_line(row: list[str]) -> str:
    cells = [cell.ljust(width) for cell, width in zip(row, _WIDTHS, strict=False)]
    return "  ".join([*cells, row[-1]]).rstrip()


def _summary_row(
    title: str, responses: list[requests.Response], took: float
) -> tuple[list[str], str]:
    last = responses[-1]
    story = [a for r in responses for a in attempts(r)]
    waited = sum(a.wait + a.paced for a in story)
    info = classify(last)
    result = f"{last.status_code} " + (info.rule.exception.__name__ if info else "OK")
    if len(responses) > 1:
        codes = sorted({r.status_code for r in responses})
        result = f"{len(responses)} x " + "/".join(map(str, codes))
    return [title, result, str(len(story)), f"{waited:.2f}s", f"{took:.2f}s"], status_style(
        last.status_code
    )


def _details(term: Terminal, responses: list[requests.Response]) -> None:
    for response in responses:
        info = classify(response)
        if info is None:
            continue
        term.line(f"    -> {info.rule.exception.__name__}: {info.message}", "dim")
        for line in info.error_lines:
            term.line(f"         {line}", "dim")
        if info.trace_id:
            term.line(f"         trace id: {info.trace_id}", "dim")
        term.line(f"         what to do: {info.action}", "dim")


def run_demo(term: Terminal | None = None) -> int:
    """Run the demo; return the exit status (0 when every step went as expected)."""
    term = term or Terminal()
    started = time.monotonic()
    with Simulator(window=FILTER_WINDOW, limits={"filter": FILTER_QUOTA}) as sim:
        api_key, api_secret = sim.bloxs_credentials
        token_url, client_id, client_secret = sim.dealcloud_credentials
        bloxs, dealcloud = requests.Session(), requests.Session()
        common: dict[str, Any] = {"backoff_factor": 0.2, "max_retry_after": 10}
        # the client knows the filter quota: it paces to it instead of meeting 429s
        pacing = RateLimit.bloxs(rules={"filter": (FILTER_QUOTA, FILTER_WINDOW)})
        bloxs_auth = BloxsTokenAuth(sim.url, api_key, api_secret)
        mount(
            bloxs,
            sim.url + "/api/v1/",
            auth=bloxs_auth,
            rate_limit=pacing,
            **common,
        )
        mount(
            dealcloud,
            sim.url + "/api/rest/v4/",
            auth=ClientCredentialsAuth(token_url, client_id, client_secret, scope="data"),
            **common,
        )
        world = _World(sim, bloxs, dealcloud)
        term.line("requests-bloxs-errors demo", "bold")
        term.line(f"A simulated Bloxs and DealCloud API is running on {sim.url}; two Sessions")
        term.line("have a BloxsAdapter mounted (Bloxs token auth, DealCloud client credentials).")
        summary: list[tuple[list[str], str]] = []
        failures = []
        for number, step in enumerate(STEPS, 1):
            term.line()
            term.line(f"{number}. {step.title}", "bold")
            before = len(sim.requests)
            step_started = time.monotonic()
            responses = step.run(world)
            took = time.monotonic() - step_started
            for row, style in _timeline(sim.requests[before:], responses):
                term.line("   " + _timeline_line(row), style)
            _details(term, responses)
            summary.append(_summary_row(step.title, responses, took))
            got = [r.status_code for r in responses]
            if got != list(step.expect):
                failures.append(f"step {number}: expected {list(step.expect)}, got {got}")
        failures += _outage_scene(term, world, bloxs_auth, len(STEPS) + 1)
        bloxs.close()
        dealcloud.close()
        seen = sim.requests
    term.line()
    term.line("Summary", "bold")
    term.table(
        ["step", "result", "attempts", "waited", "took"],
        [row for row, _ in summary],
        [style for _, style in summary],
    )
    tokens = sum(1 for r in seen if r.path in (BLOXS_TOKEN_PATH, DEALCLOUD_TOKEN_PATH))
    term.line()
    term.line(
        f"{len(seen)} requests reached the server ({tokens} token fetches) "
        f"in {time.monotonic() - started:.1f}s."
    )
    for failure in failures:
        term.line(f"UNEXPECTED: {failure}", "red")
    return 1 if failures else 0
