"""Failing gracefully (issue 9): the circuit breaker, the outbox, alerts.

Real loopback servers throughout; the durability and two-replayer claims run
in real subprocesses.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.tools import envconfig

from .redisserver import free_port
from .server import Reply, json_reply
from .test_cli import run

ROOT = Path(__file__).resolve().parent.parent


def _failing(server, status: int = 500, path: str = "/x", method: str = "GET") -> None:
    server.route(method, path, json_reply(status, '{"traceId": "00-abc-01"}'))


# -- the circuit breaker -----------------------------------------------------------------


def test_five_failed_calls_open_the_circuit_and_the_sixth_fails_fast(server, session):
    _failing(server)
    breaker = rbe.CircuitBreaker(failures=5, open_for=30)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    for _ in range(5):
        assert session.get(server.url("/x")).status_code == 500
    started = time.monotonic()
    with pytest.raises(rbe.CircuitOpenError) as caught:
        session.get(server.url("/x?secret=zz"))
    assert time.monotonic() - started < 0.5
    error = caught.value
    assert isinstance(error, rbe.ServiceUnavailableError)
    assert isinstance(error, requests.HTTPError)
    assert error.response is None
    assert 25 < error.retry_after <= 30
    assert "zz" not in str(error)
    assert len(server.seen()) == 5  # the sixth never reached the network
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "open"


def test_4xx_429_and_successes_do_not_count_and_a_success_resets(server, session):
    outcomes = iter([500] * 4 + [404, 429, 200] + [500] * 4 + [200])
    server.route_fn("GET", "/x", lambda r: Reply(next(outcomes), "x"))
    breaker = rbe.CircuitBreaker(failures=5, open_for=30)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    statuses = [session.get(server.url("/x")).status_code for _ in range(12)]
    assert statuses == [500] * 4 + [404, 429, 200] + [500] * 4 + [200]
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "closed"


def test_connection_failures_count_but_a_bad_url_does_not(session):
    port = free_port()  # nothing listens there
    breaker = rbe.CircuitBreaker(failures=3, open_for=30)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0)
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            session.get(f"http://127.0.0.1:{port}/")
    with pytest.raises(rbe.CircuitOpenError):
        session.get(f"http://127.0.0.1:{port}/")
    for _ in range(4):
        with pytest.raises(requests.exceptions.InvalidURL):
            session.get("http://[::1/")
    assert breaker.state("http://[::1]:80") == "closed"


def test_after_open_for_exactly_one_probe_goes_while_the_others_fail_fast(server, session):
    server.route("GET", "/x", Reply(500, "down"))
    breaker = rbe.CircuitBreaker(failures=2, open_for=0.3)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retries=0, pool_maxsize=8)
    for _ in range(2):
        session.get(server.url("/x"))
    server.route("GET", "/x", Reply(200, "back", delay=2.0))  # the probe takes a while
    time.sleep(0.35)
    before = len(server.seen())

    def call(_: int) -> str:
        try:
            return str(session.get(server.url("/x")).status_code)
        except rbe.CircuitOpenError:
            return "fast"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(call, range(8)))
    assert sorted(outcomes) == ["200"] + ["fast"] * 7
    assert len(server.seen()) - before == 1
    assert breaker.state(f"http://127.0.0.1:{server.port}") == "closed"
    assert session.get(server.url("/x")).status_code == 200


def test_a_failed_probe_opens_the_circuit_again_for_longer(server, session):
    server.route("GET", "/x", Reply(500, "down"))
    rbe.mount(
        session,
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=1, open_for=1.0),
        max_retries=0,
    )
    session.get(server.url("/x"))
    time.sleep(1.05)
    assert session.get(server.url("/x")).status_code == 500  # the probe, failed
    with pytest.raises(rbe.CircuitOpenError) as caught:
        session.get(server.url("/x"))
    assert 1.5 < caught.value.retry_after <= 2.0  # twice open_for


def test_an_announced_maintenance_opens_the_circuit_for_its_length(server, session):
    server.route("GET", "/x", Reply(503, "maintenance", {"Retry-After": "120"}))
    rbe.mount(session, "http://", circuit_breaker=rbe.CircuitBreaker(), max_retry_after=60)
    response = session.get(server.url("/x"))
    assert response.status_code == 503  # Retry-After over max_retry_after: returned at once
    with pytest.raises(rbe.CircuitOpenError) as caught:
        session.get(server.url("/x"))
    assert 115 < caught.value.retry_after <= 120


def test_alerts_come_once_per_transition(server, session, caplog):
    alerts: list[rbe.AlertEvent] = []
    server.route("GET", "/x", json_reply(500, '{"traceId": "00-trace-7"}'))
    rbe.mount(
        session,
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=3, open_for=3.0),
        on_alert=alerts.append,
        max_retries=0,
    )
    for _ in range(3):
        session.get(server.url("/x"))
    for _ in range(1000):
        with pytest.raises(rbe.CircuitOpenError):
            session.get(server.url("/x"))
    assert [a.kind for a in alerts] == ["circuit_open"]
    opened = alerts[0]
    assert opened.host == f"http://127.0.0.1:{server.port}"
    assert opened.failures == 3
    assert opened.trace_id == "00-trace-7"
    assert opened.until is not None
    assert opened.until > opened.at
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and "circuit_open" in r.getMessage()
    ]
    assert len(errors) == 1
    assert "00-trace-7" in errors[0].getMessage()
    server.route("GET", "/x", Reply(200, "ok"))
    time.sleep(max(0.0, opened.until - time.time()) + 0.05)
    assert session.get(server.url("/x")).ok
    assert [a.kind for a in alerts] == ["circuit_open", "circuit_closed"]
    assert alerts[1].rejected == 1000


def test_a_closed_circuit_does_not_serialize_calls(server, session):
    server.route("GET", "/slow", Reply(200, "ok", delay=0.3))
    rbe.mount(session, "http://", circuit_breaker=rbe.CircuitBreaker(), pool_maxsize=64)
    started = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda _: session.get(server.url("/slow")).status_code, range(64)))
    assert statuses == [200] * 64
    # serialized, 64 calls of 0.3 s would take 19 s; in parallel they take about 0.3 s
    assert time.monotonic() - started < 6


def test_an_adapter_with_a_breaker_and_an_outbox_pickles(tmp_path):
    adapter = rbe.BloxsAdapter(
        circuit_breaker=rbe.CircuitBreaker(failures=2), outbox=f"sqlite://{tmp_path}/o.db"
    )
    copy = pickle.loads(pickle.dumps(adapter))
    assert copy.circuit_breaker.failures == 2
    assert copy.outbox.storage.path == f"{tmp_path}/o.db"


def test_bad_configuration_is_refused_when_the_adapter_is_made(tmp_path):
    with pytest.raises(ValueError, match="failures"):
        rbe.CircuitBreaker(failures=0)
    with pytest.raises(ValueError, match="open_for"):
        rbe.CircuitBreaker(open_for=-1)
    with pytest.raises(TypeError, match="circuit_breaker"):
        rbe.BloxsAdapter(circuit_breaker="yes")
    with pytest.raises(ValueError, match="outbox"):
        rbe.BloxsAdapter(outbox="redis://127.0.0.1:6379/0")
    with pytest.raises(TypeError, match="on_alert"):
        rbe.BloxsAdapter(on_alert=42)


# -- the outbox ----------------------------------------------------------------------------


@pytest.fixture
def outbox_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/outbox.db"


def test_a_failed_post_is_kept_without_credentials_and_its_error_names_the_entry(
    server, session, outbox_url
):
    server.route("POST", "/orders", json_reply(500, '{"traceId": "00-t-1"}'))
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.TokenAuth(lambda: "tok-123456"),
        outbox=outbox_url,
        max_retries=0,
    )
    response = session.post(
        server.url("/orders?apikey=q-secret"),
        json={"n": 1},
        headers={"Cookie": "sid=c-secret", "X-Custom": "kept"},
    )
    assert response.status_code == 500
    with pytest.raises(rbe.ServerError) as caught:
        response.raise_for_status()
    entry_id = caught.value.outbox_id
    assert entry_id is not None
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert entry.id == entry_id
    assert (entry.method, entry.url, entry.body) == (
        "POST",
        server.url("/orders?apikey=q-secret"),
        b'{"n": 1}',
    )
    assert entry.shown_url == server.url("/orders")
    assert entry.headers["X-Custom"] == "kept"
    assert not {"authorization", "cookie"} & {name.lower() for name in entry.headers}
    assert (entry.kind, entry.status, entry.trace_id) == ("internal_server_error", 500, "00-t-1")
    assert entry.uncertain  # a POST that got a 5xx may have been processed
    assert entry.state == "queued"
    assert "q-secret" not in repr(entry)


@pytest.mark.parametrize(
    "case",
    [("PUT", {}, False), ("DELETE", {}, False), ("POST", {"Idempotency-Key": "k1"}, False),
     ("PATCH", {}, True)],
)  # fmt: skip
def test_uncertain_only_when_a_second_delivery_could_harm(server, session, outbox_url, case):
    method, headers, uncertain = case
    _failing(server, 502, "/r", method)
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.request(method, server.url("/r"), data=b"x", headers=headers)
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert entry.uncertain is uncertain


@pytest.mark.parametrize(
    ("method", "status"),
    [("GET", 500), ("POST", 400), ("POST", 401), ("POST", 403), ("POST", 404), ("POST", 405),
     ("POST", 415), ("POST", 201)],
)  # fmt: skip
def test_reads_final_refusals_and_successes_are_not_kept(
    server, session, outbox_url, method, status
):
    server.route(method, "/r", Reply(status, "x"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.request(method, server.url("/r"))
    assert rbe.Outbox(outbox_url).entries() == []


def test_a_429_the_retries_did_not_outlast_is_kept_as_certain(server, session, outbox_url):
    server.route("POST", "/r", Reply(429, "slow down", {"Retry-After": "0"}))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=1)
    assert session.post(server.url("/r"), data=b"x").status_code == 429
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert (entry.kind, entry.status, entry.uncertain) == ("rate_limited", 429, False)


def test_a_refused_connection_is_kept_as_never_sent(session, outbox_url):
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    with pytest.raises(requests.ConnectionError) as caught:
        session.post(f"http://127.0.0.1:{free_port()}/r", data=b"x")
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert caught.value.outbox_id == entry.id
    assert entry.uncertain is False
    assert entry.status is None


def test_a_lost_answer_to_a_post_is_kept_as_uncertain(server, session, outbox_url):
    server.route("POST", "/slow", Reply(200, "late", delay=1.0))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    with pytest.raises(requests.ReadTimeout) as caught:
        session.post(server.url("/slow"), data=b"x", timeout=(2, 0.2))
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert caught.value.outbox_id == entry.id
    assert entry.uncertain is True


def test_a_write_refused_by_an_open_circuit_is_kept_as_never_sent(server, session, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    alerts: list[rbe.AlertEvent] = []
    rbe.mount(
        session,
        "http://",
        circuit_breaker=rbe.CircuitBreaker(failures=1),
        outbox=outbox_url,
        on_alert=alerts.append,
        max_retries=0,
    )
    session.post(server.url("/r"), data=b"first")
    with pytest.raises(rbe.CircuitOpenError) as caught:
        session.post(server.url("/r"), data=b"second")
    entries = rbe.Outbox(outbox_url).entries()
    assert [e.body for e in entries] == [b"first", b"second"]
    assert caught.value.outbox_id == entries[1].id
    assert (entries[1].kind, entries[1].uncertain) == ("circuit_open", False)
    assert sorted(a.kind for a in alerts) == ["circuit_open", "queued"]  # one "queued", not two


def test_a_stream_body_cannot_be_kept_and_says_so(server, session, outbox_url, caplog):
    server.route("POST", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    response = session.post(server.url("/r"), data=(chunk for chunk in [b"a", b"b"]))
    assert response.status_code == 500
    assert rbe.Outbox(outbox_url).entries() == []
    with pytest.raises(rbe.ServerError) as caught:
        response.raise_for_status()
    assert caught.value.outbox_id is None
    assert any("cannot be queued" in r.getMessage() for r in caplog.records)


def test_the_entry_is_on_disk_when_the_process_dies_right_after(server, outbox_url, tmp_path):
    server.route("POST", "/r", Reply(503, "down"))
    script = (
        "import os, requests, requests_bloxs_errors as rbe\n"
        "s = requests.Session()\n"
        f"rbe.mount(s, 'http://', outbox={outbox_url!r}, max_retries=0)\n"
        f"r = s.post({server.url('/r')!r}, data=b'payload')\n"
        "os._exit(7)  # no clean-up, no atexit, no flush\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60, check=False)
    assert finished.returncode == 7
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert entry.body == b"payload"


def test_the_outbox_file_is_private_and_holds_no_query_body_or_token(
    server, session, tmp_path, outbox_url
):
    server.route("POST", "/r", Reply(500, "down"))
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.TokenAuth(lambda: "tok-zzz-999"),
        outbox=outbox_url,
        max_retries=0,
    )
    session.post(server.url("/r?apikey=query-secret"), data=b"body-secret-42")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {"outbox.db", "outbox.db-wal", "outbox.db.key"} <= set(files)
    for name in files:
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        if name.endswith(".key"):
            continue
        data = path.read_bytes()
        for clear in (b"query-secret", b"body-secret-42", b"tok-zzz-999"):
            assert clear not in data, (name, clear)


def test_replay_sends_with_fresh_credentials_and_keeps_what_fails(server, session, outbox_url):
    server.route("POST", "/a", Reply(500, "down"))
    server.route("POST", "/b", Reply(500, "down"))
    server.route("POST", "/c", Reply(500, "down"))
    server.route("PUT", "/d", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    for path in ("/a", "/b", "/c"):
        session.post(server.url(path), data=path.encode(), headers={"Idempotency-Key": path})
    session.put(server.url("/d"), data=b"/d")
    session.post(server.url("/a"), data=b"uncertain")  # no key: it may have been processed
    server.route("POST", "/a", Reply(201, "created"))
    server.route("POST", "/b", Reply(422, "never"))
    server.route("POST", "/c", Reply(503, "still down"))
    server.route("PUT", "/d", Reply(200, "ok"))
    outbox = rbe.Outbox(outbox_url)
    with requests.Session() as replayer:
        rbe.mount(
            replayer, server.url("/"), auth=rbe.TokenAuth(lambda: "fresh-token"), max_retries=0
        )
        report = outbox.replay(replayer)
    ids = {e.body: e.id for e in rbe.Outbox(outbox_url).entries()}
    assert set(report.sent) == {1, 4}
    assert set(report.failed) == {2, 3}
    assert report.skipped == (5,)
    assert not report.ok
    left = {e.body: e for e in outbox.entries()}
    assert set(left) == {b"/b", b"/c", b"uncertain"}
    assert (left[b"/b"].state, left[b"/b"].last_error) == ("dead", "422 Unprocessable Entity")
    assert (left[b"/c"].state, left[b"/c"].tries) == ("queued", 1)
    assert ids == {b"/b": 2, b"/c": 3, b"uncertain": 5}
    replayed = [r for r in server.seen() if r.headers.get("Authorization") == "Bearer fresh-token"]
    assert len(replayed) == 4
    # a replayed write that failed again was not queued a second time
    assert len(outbox.entries()) == 3
    assert outbox.replay(requests.Session(), include_uncertain=True).skipped == ()


def test_two_replayers_at_once_send_each_entry_exactly_once(server, session, outbox_url):
    server.route("POST", "/w", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    for n in range(30):
        session.post(server.url("/w"), data=str(n).encode(), headers={"Idempotency-Key": str(n)})
    server.route("POST", "/w", Reply(201, "ok", delay=0.02))
    before = len(server.seen())
    script = (
        "import json, requests, requests_bloxs_errors as rbe\n"
        f"report = rbe.Outbox({outbox_url!r}).replay(requests.Session())\n"
        "print(json.dumps(report.sent))\n"
    )
    replayers = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    sent = [json.loads(p.communicate(timeout=60)[0]) for p in replayers]
    bodies = [r.body for r in server.seen()[before:]]
    assert sorted(bodies, key=int) == [str(n).encode() for n in range(30)]  # each once
    assert sorted(sent[0] + sent[1]) == list(range(1, 31))
    assert rbe.Outbox(outbox_url).entries() == []


def test_the_outbox_needs_its_extra(monkeypatch, outbox_url):
    for name in list(sys.modules):
        if name == "cryptography" or name.startswith("cryptography."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(ImportError, match=r"requests-bloxs-errors\[crypto\]"):
        rbe.Outbox(outbox_url)


# -- the outbox command --------------------------------------------------------------------


def test_the_outbox_command_lists_shows_replays_and_drops(server, session, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.post(
        server.url("/r?token=cli-secret"), data=b"one", headers={"X-Api-Key": "hdr-secret"}
    )
    session.post(server.url("/r"), data=b"two", headers={"Idempotency-Key": "2"})
    listed = run("outbox", "list", "--db", outbox_url)
    assert listed.returncode == 0
    assert "/r" in listed.stdout
    assert "cli-secret" not in listed.stdout
    shown = run("outbox", "show", "1", "--db", outbox_url)
    assert shown.returncode == 0
    assert "X-Api-Key: ***" in shown.stdout
    assert "hdr-secret" not in shown.stdout
    assert "cli-secret" not in shown.stdout
    assert "uncertain:  yes" in shown.stdout
    server.route("POST", "/r", Reply(201, "ok"))
    replayed = run("outbox", "replay", "--db", outbox_url)
    assert replayed.returncode == 0
    assert "1 sent, 0 failed, 1 skipped" in replayed.stdout
    assert run("outbox", "drop", "1", "--db", outbox_url).returncode == 0
    assert rbe.Outbox(outbox_url).entries() == []


def test_the_outbox_command_exits_1_when_a_replay_fails(server, session, outbox_url):
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    assert run("outbox", "replay", "--db", outbox_url, "--max-retries", "0").returncode == 2
    finished = run("outbox", "replay", "--db", outbox_url)
    assert finished.returncode == 1
    assert "0 sent, 1 failed" in finished.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        ("outbox", "list", "--db", "sqlite:///nonexistent/dir/outbox.db"),
        ("outbox", "show", "abc", "--db", "sqlite:///tmp/x.db"),
        ("outbox", "drop", "99", "--db", "mongo://x"),
        ("outbox", "list"),
    ],
)
def test_bad_outbox_input_is_one_line_and_exit_2(arguments):
    finished = run(*arguments)
    assert finished.returncode == 2
    assert len(finished.stderr.strip().splitlines()) == 1
    assert "Traceback" not in finished.stderr


def test_dropping_an_entry_that_is_not_there_is_exit_2(server, session, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.post(server.url("/r"), data=b"x")
    finished = run("outbox", "drop", "42", "--db", outbox_url)
    assert finished.returncode == 2
    assert "no entry 42" in finished.stderr


def test_install_shares_one_outbox_and_its_alerts(server, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    alerts: list[rbe.AlertEvent] = []
    rbe.install("http://", outbox=outbox_url, on_alert=alerts.append, max_retries=0)
    for _ in range(3):
        requests.post(server.url("/r"), data=b"x")  # a new Session each time
    assert len(rbe.Outbox(outbox_url).entries()) == 3
    assert [a.kind for a in alerts] == ["queued"]


def test_threads_queue_concurrently_without_losing_an_entry(server, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    with requests.Session() as session:
        rbe.mount(session, "http://", outbox=outbox_url, max_retries=0, pool_maxsize=16)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: session.post(server.url("/r"), data=str(n)), range(64)))
    bodies = sorted(int(e.body) for e in rbe.Outbox(outbox_url).entries())
    assert bodies == list(range(64))


def test_the_demo_shows_the_outage_and_the_replay():
    finished = run("demo", timeout=120)
    assert finished.returncode == 0, finished.stdout[-2000:]
    assert "circuit open: not sent; kept as outbox entry" in finished.stdout
    assert "6 sent, 0 failed, 0 skipped; 0 left in the outbox." in finished.stdout


def test_the_demo_runs_without_the_crypto_extra_and_says_what_it_skipped():
    code = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys([n for n in sys.modules if 'cryptography' in n]))\n"
        "sys.modules['cryptography'] = None\n"
        "from requests_bloxs_errors.tools.cli import main\n"
        "sys.exit(main(['demo']))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-2000:]
    assert "skipped: the outbox needs the 'cryptography' package" in finished.stdout


def test_the_environment_configures_a_breaker_and_an_outbox(outbox_url):
    config = envconfig.config_from_env({"RBE_CIRCUIT_BREAKER": "3/12.5", "RBE_OUTBOX": outbox_url})
    breaker = config.adapter_kwargs["circuit_breaker"]
    assert (breaker.failures, breaker.open_for) == (3, 12.5)
    assert config.adapter_kwargs["outbox"].storage.url == outbox_url
    assert (
        envconfig.config_from_env({"RBE_CIRCUIT_BREAKER": "on"})
        .adapter_kwargs["circuit_breaker"]
        .failures
        == 5
    )
    assert (
        "circuit_breaker"
        not in envconfig.config_from_env({"RBE_CIRCUIT_BREAKER": "off"}).adapter_kwargs
    )


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"RBE_CIRCUIT_BREAKER": "lots"}, "RBE_CIRCUIT_BREAKER"),
        ({"RBE_CIRCUIT_BREAKER": "0/10"}, "RBE_CIRCUIT_BREAKER"),
        ({"RBE_OUTBOX": "redis://127.0.0.1:6379/0"}, "RBE_OUTBOX"),
    ],
)
def test_a_bad_breaker_or_outbox_variable_is_named(environ, named):
    with pytest.raises(rbe.ConfigError, match=named):
        envconfig.config_from_env(environ)


def test_a_write_the_rate_limit_refused_is_kept_as_never_sent(server, session, outbox_url):
    server.route("POST", "/r", Reply(201, "ok"))
    limit = rbe.RateLimit({"*": (1, 60.0)}, max_wait=0.1)
    rbe.mount(session, "http://", rate_limit=limit, outbox=outbox_url)
    assert session.post(server.url("/r"), data=b"first").status_code == 201
    with pytest.raises(rbe.RateLimitError) as caught:
        session.post(server.url("/r"), data=b"second", headers={b"X-Bytes": b"v\xe9"})
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert caught.value.outbox_id == entry.id
    assert (entry.body, entry.kind, entry.uncertain) == (b"second", "rate_limited", False)
    assert entry.headers["X-Bytes"] == "v\xe9"
    assert len(server.seen()) == 1


def test_an_entry_that_does_not_open_is_marked_dead_on_replay(server, session, tmp_path):
    url = f"sqlite://{tmp_path}/o.db"
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    (tmp_path / "o.db.key").write_bytes(os.urandom(32))  # the key file replaced
    report = rbe.Outbox(url).replay(requests.Session())
    assert report.failed == (1,)
    with sqlite3.connect(tmp_path / "o.db") as db:
        state, error = db.execute("SELECT state, last_error FROM rbe_outbox").fetchone()
    assert state == "dead"
    assert "does not open" in error


# -- regressions found in review ------------------------------------------------------------


def test_a_token_endpoint_that_is_down_counts_for_the_breaker_and_keeps_the_write(
    server, session, outbox_url
):
    server.route("POST", "/w", Reply(201, "ok"))
    breaker = rbe.CircuitBreaker(failures=2)
    rbe.mount(
        session,
        server.url("/"),
        auth=rbe.BloxsTokenAuth(f"http://127.0.0.1:{free_port()}", "k", "s", max_retries=0),
        circuit_breaker=breaker,
        outbox=outbox_url,
        max_retries=0,
    )
    for n in range(2):
        with pytest.raises(requests.ConnectionError) as caught:
            session.post(server.url("/w"), data=str(n).encode())
        assert caught.value.outbox_id == n + 1
    with pytest.raises(rbe.CircuitOpenError):
        session.post(server.url("/w"), data=b"2")
    entries = rbe.Outbox(outbox_url).entries()
    assert [e.body for e in entries] == [b"0", b"1", b"2"]
    assert not any(e.uncertain for e in entries)  # none was sent
    assert server.seen() == []


def test_announced_maintenance_wins_over_the_failure_count_and_the_probe(server, session):
    server.route("GET", "/m", Reply(503, "maintenance", {"Retry-After": "600"}))
    breaker = rbe.CircuitBreaker(failures=1, open_for=0.2)
    rbe.mount(session, "http://", circuit_breaker=breaker, max_retry_after=60, max_retries=0)
    session.get(server.url("/m"))  # the 503 that crosses the count announces 600 s
    with pytest.raises(rbe.CircuitOpenError) as caught:
        session.get(server.url("/m"))
    assert caught.value.retry_after > 590
    assert caught.value.attempts == 0  # nothing was sent


def test_only_the_probe_reopens_a_half_open_circuit():
    breaker = rbe.CircuitBreaker(failures=1, open_for=0.05)
    host = "https://api.example:443"
    breaker.record(host, True)
    time.sleep(0.06)
    assert breaker.admit(host) == (True, 0.0, True)  # the probe goes
    breaker.record(host, True, probe=False)  # a call admitted earlier fails its retries
    assert breaker.state(host) == "half-open"
    admitted, _, probe = breaker.admit(host)
    assert (admitted, probe) == (False, False)  # the probe is still in flight
    breaker.record(host, False, probe=True)
    assert breaker.state(host) == "closed"


def test_a_replayer_that_lost_its_lease_does_not_settle_the_entry(server, session, outbox_url):
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    outbox = rbe.Outbox(outbox_url)
    store = outbox._store
    assert store.claim(1, "replayer-a", time.time(), 3600)
    with sqlite3.connect(outbox.storage.path) as db:  # A's lease ran out
        db.execute("UPDATE rbe_outbox SET lease_until = 0")
    assert store.claim(1, "replayer-b", time.time(), 3600)
    store.settle(1, "replayer-a", None)  # A finishes late: B owns the entry now
    (entry,) = outbox.entries()
    assert entry.id == 1


def test_a_401_on_replay_keeps_the_entry_queued(server, session, outbox_url):
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    server.route("PUT", "/r", Reply(401, "who are you"))
    assert rbe.Outbox(outbox_url).replay(requests.Session()).failed == (1,)
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert entry.state == "queued"  # the replayer's credentials may be what was wrong


def test_unreadable_entries_are_listed_and_marked_dead_without_a_traceback(
    server, session, tmp_path
):
    url = f"sqlite://{tmp_path}/o.db"
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=url, max_retries=0)
    session.put(server.url("/r?k=query-secret"), data=b"x")
    key = tmp_path / "o.db.key"
    key.write_bytes(os.urandom(32))  # restored from another backup
    key.chmod(0o600)
    listed = run("outbox", "list", "--db", url)
    assert listed.returncode == 0
    assert "unreadable" in listed.stdout
    assert "Traceback" not in listed.stderr
    replayed = run("outbox", "replay", "--db", url)
    assert replayed.returncode == 1
    assert "Traceback" not in replayed.stderr
    (entry,) = rbe.Outbox(url).entries()
    assert "does not open" in entry.last_error


def test_a_planted_key_file_is_refused_and_nothing_is_kept(server, session, tmp_path, caplog):
    url = f"sqlite://{tmp_path}/o.db"
    key = tmp_path / "o.db.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)  # someone else may know or read it
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=url, max_retries=0)
    response = session.put(server.url("/r"), data=b"secret-body")
    assert response.status_code == 500  # the call's outcome stands
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("could not be queued" in e and "PermissionError" in e for e in errors)
    database = tmp_path / "o.db"
    assert not database.exists() or b"secret-body" not in database.read_bytes()


def test_the_vendor_shorthands_share_one_limit_per_process(session):
    with requests.Session() as other:
        first = rbe.mount(session, "http://", rate_limit="bloxs").rate_limit
        second = rbe.mount(other, "https://", rate_limit="bloxs").rate_limit
    assert first is second


def test_threads_behind_a_locked_store_do_not_queue_for_seconds(tmp_path):
    path = tmp_path / "locked.db"
    limit = rbe.RateLimit({"*": "1000/second"}, storage=f"sqlite://{path}")
    request = requests.Request("GET", "http://127.0.0.1/").prepare()
    key = limit.key(request, "*")
    limit.store.acquire(key, (1000, 1.0), 1)  # creates the file
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    def permit() -> None:
        started = time.monotonic()
        limit.store.acquire(key, (1000, 1.0), 1)
        waits.append(time.monotonic() - started)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: permit(), range(16)))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # one busy timeout, not sixteen in turn (a loose bound, for a busy machine)
    assert max(waits) < 5


def test_a_redis_password_with_a_slash_never_reaches_an_error(monkeypatch):
    with pytest.raises(rbe.ConfigError) as caught:
        envconfig.config_from_env(
            {"RBE_RATE_LIMIT": "bloxs", "RBE_STORAGE": "redis://:hun/ter2@127.0.0.1:6399/x"}
        )
    assert "ter2" not in str(caught.value)
    assert "hun" not in str(caught.value)
    with pytest.raises(ValueError, match="not a valid Redis URL") as invalid:
        rbe.RateLimit({"*": "1/second"}, storage="redis://:hun/ter2@h:1/0")
    assert "ter2" not in str(invalid.value)
