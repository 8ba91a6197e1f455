"""What ``status`` shows of the rate limits (issue 28): per rule, the permits of the
window that were used (sent), those in flight and those waiting, each in flight or
waiting with its holder and since when; every time in ISO 8601 UTC; the configured
rules that saw no traffic, ``0 used``.

The display is read from a backend of the test's own, registered by scheme (the
interface every backend offers, not a mock): its snapshot is what the test built.
Then end to end: permits held by this process in real SQLite and Redis stores,
``status`` in a subprocess of its own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors import storage
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import PermitHolder, PermitState, TokenEntry
from requests_bloxs_errors.storage.memory import MemoryBackend
from requests_bloxs_errors.tools._term import Terminal
from requests_bloxs_errors.tools.status import run_status

from ..helpers.cli import run

#: The store's clock when the test's snapshot was taken: 2027-01-15T08:00:00Z.
NOW = 1_800_000_000.0
API = "https://acme.bloxs.io"


class HeldStates(MemoryBackend):
    """A store whose snapshot and token entries are what the test put in ``states``
    and ``tokens``."""

    states: ClassVar[list[PermitState]] = []
    tokens: ClassVar[list[TokenEntry]] = []

    def snapshot(self, timeout: float | None = None) -> list[PermitState]:
        return list(self.states)

    def token_entries(self, timeout: float | None = None) -> list[TokenEntry]:
        return list(self.tokens)


@pytest.fixture
def held() -> Iterator[type[HeldStates]]:
    storage.register_backend("held", HeldStates)
    yield HeldStates
    HeldStates.states, HeldStates.tokens = [], []
    storage.unregister_backend("held")


def _status(env: dict[str, str], *, as_json: bool = False, **flags: str | None) -> str:
    out = io.StringIO()
    args = argparse.Namespace(
        storage=flags.get("storage"),
        token_cache=flags.get("token_cache"),
        outbox=None,
        json=as_json,
    )
    clock = FakeClock(wall=NOW + 2)  # (this process's clock: a little ahead of the store's)
    assert run_status(Terminal(out), args, env, clock) == 0
    return out.getvalue()


def _a_busy_rule() -> PermitState:
    """``get``: one request ended and one in flight this window, four waiting."""
    holders = [PermitHolder("sending", "host-a", 4242, NOW - 3, NOW - 3)]
    holders += [
        PermitHolder("waiting", f"host-{n % 2}", 5000 + n, NOW - 1, NOW + 10 * n)
        for n in range(1, 5)
    ]
    return PermitState(
        f"{API}|get", in_flight=1, ended=1, waiting=4, holders=tuple(holders), now=NOW
    )


def _a_paused_rule() -> PermitState:
    """``filter``: a rule the server stated for an hour, and a pause of 20 s."""
    return PermitState(
        f"{API}|filter",
        learned=(5, 1.0),
        learned_for=3600.0,
        paused_for=20.0,
        ended=2,
        now=NOW,
    )


def test_status_tells_used_in_flight_and_waiting_apart_and_names_each_holder(held):
    held.states = [_a_paused_rule(), _a_busy_rule()]
    shown = _status({"RBE_RATE_LIMIT": "bloxs"}, storage="held://")
    lines = shown.splitlines()
    busy = next(line for line in lines if line.startswith(API) and " get " in line)
    assert "500 per 60s" in busy
    assert "2 used (1 in flight), 4 waiting" in busy
    paused = next(line for line in lines if line.startswith(API) and " filter " in line)
    assert "5 per 1s, stated by the server until 2027-01-15T09:00:00Z (in 3600s)" in paused
    assert paused.endswith("until 2027-01-15T08:00:20Z (in 20s)")
    assert "2 used" in paused
    table = lines[lines.index("permits in flight or waiting, by holder:") + 3 :]
    holders = table[: table.index("")] if "" in table else table
    assert len(holders) == 5
    assert holders[0].split() == [
        API,
        "get",
        "sending",
        "host-a",
        "4242",
        "2027-01-15T07:59:57Z",
        "(3s",
        "ago)",
        "-",
    ]
    assert holders[1].split() == [
        API,
        "get",
        "waiting",
        "host-1",
        "5001",
        "2027-01-15T07:59:59Z",
        "(1s",
        "ago)",
        "2027-01-15T08:00:10Z",
        "(in",
        "10s)",
    ]
    assert [line.split()[4] for line in holders[1:]] == ["5001", "5002", "5003", "5004"]


def test_configured_rules_without_traffic_are_listed_0_used(held):
    held.states = [_a_busy_rule()]
    shown = _status({"RBE_RATE_LIMIT": "bloxs"}, storage="held://")
    idle = {
        line.split()[1]: line for line in shown.splitlines() if line.startswith("-  ")
    }  # (no API has used them yet)
    assert sorted(idle) == ["authorization", "download", "filter", "update"]
    assert idle["authorization"].split() == [
        "-",
        "authorization",
        "10",
        "per",
        "60s",
        "0",
        "used",
        "-",
    ]
    assert "100 per 60s" in idle["update"]
    held.states = []
    empty = _status({"RBE_RATE_LIMIT": "5/second"}, storage="held://")
    assert "(empty)" not in empty
    assert "-    *         5 per 1s       0 used       -" in empty
    assert "(empty)" in _status({}, storage="held://")  # nothing configured, nothing held


def test_status_json_keeps_numbers_and_adds_iso_times(held):
    held.states = [_a_paused_rule(), _a_busy_rule()]
    held.tokens = [TokenEntry("f" * 40, 86394.0)]
    found = json.loads(
        _status({"RBE_RATE_LIMIT": "bloxs"}, as_json=True, storage="held://", token_cache="held://")
    )
    rows = {row["category"]: row for row in found["storage"]["entries"]}
    busy = rows["get"]
    assert (busy["sent"], busy["used"], busy["in_flight"], busy["waiting"]) == (2, 2, 1, 4)
    assert busy["now"] == NOW
    assert busy["holders"][0] == {
        "state": "sending",
        "host": "host-a",
        "pid": 4242,
        "since": NOW - 3,
        "since_iso": "2027-01-15T07:59:57Z",
        "at": NOW - 3,
        "at_iso": "2027-01-15T07:59:57Z",
    }
    assert [h["state"] for h in busy["holders"]] == ["sending"] + ["waiting"] * 4
    paused = rows["filter"]
    assert (paused["paused_for"], paused["paused_until"]) == (20.0, "2027-01-15T08:00:20Z")
    assert (paused["learned_for"], paused["learned_until"]) == (3600.0, "2027-01-15T09:00:00Z")
    idle = rows["authorization"]
    assert (idle["namespace"], idle["rule"], idle["used"], idle["holders"]) == (
        None,
        [10, 60.0],
        0,
        [],
    )
    (token,) = found["token_cache"]["entries"]
    assert (token["seconds_left"], token["expires"]) == (86394.0, "2027-01-16T07:59:56Z")


def test_a_token_entry_expires_at_an_iso_time_not_in_bare_seconds(held):
    held.tokens = [TokenEntry("f" * 40, 86394.0)]
    shown = _status({}, token_cache="held://")
    row = next(line for line in shown.splitlines() if line.startswith("ffffffffffff"))
    assert row.endswith("2027-01-16T07:59:56Z (in 86394s)")
    assert "expires in" not in shown


# -- end to end: this process holds permits in real stores ---------------------------


def _hold_permits(url: str, stop: threading.Event, ready: threading.Event) -> None:
    """Two permits sent and not ended, and one waiting (renewed while it waits, as a
    waiting process does), until ``stop``."""
    limit = rbe.RateLimit({"*": "2/60s"}, storage=url)
    store, key, rule = limit.store, f"{API}|*", (2, 60.0)
    sent = [store.acquire(key, rule, 120.0) for _ in range(2)]
    assert all(g.wait == 0 and g.stamp is not None for g in sent)
    waiting = store.acquire(key, rule, 120.0)
    assert waiting.wait > 0
    assert waiting.stamp is not None
    ready.set()
    while not stop.wait(0.5):
        waiting = store.confirm(key, waiting.stamp, rule, 120.0)
    for grant in (*sent, waiting):
        store.cancel(key, grant.stamp)
    limit.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_status_shows_the_holders_of_a_real_store(tmp_path, request, kind):
    url = (
        f"sqlite:///{tmp_path}/limit.db"
        if kind == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    stop, ready = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def hold() -> None:
        try:
            _hold_permits(url, stop, ready)
        except BaseException as exc:
            failed.append(exc)
            ready.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert ready.wait(10)
        assert not failed, failed
        answer = run("status", "--storage", url, "--json", env={"RBE_RATE_LIMIT": "2/60s"})
        shown = run("status", "--storage", url, env={"RBE_RATE_LIMIT": "2/60s"})
    finally:
        stop.set()
        holder.join(10)
    assert not failed, failed
    assert answer.returncode == 0, answer.stderr
    (row,) = json.loads(answer.stdout)["storage"]["entries"]
    assert (row["sent"], row["in_flight"], row["waiting"]) == (2, 2, 1)
    who: list[dict[str, Any]] = row["holders"]
    assert sorted(h["state"] for h in who) == ["sending", "sending", "waiting"]
    assert {(h["host"], h["pid"]) for h in who} == {(socket.gethostname(), os.getpid())}
    assert all(h["since_iso"].endswith("Z") for h in who)
    assert shown.returncode == 0, shown.stderr
    assert "2 used (2 in flight), 1 waiting" in shown.stdout
    assert f"waiting  {socket.gethostname()}" in shown.stdout
