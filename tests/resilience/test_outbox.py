"""The outbox: which failed writes are kept, how (sealed, committed, private), and replayed
once each.
"""

from __future__ import annotations

import json
import logging
import os
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
from requests_bloxs_errors.storage import open_backend

from ..helpers.cli import run
from ..helpers.redisserver import free_port
from ..helpers.server import Reply, json_reply

ROOT = Path(__file__).resolve().parents[2]


def _failing(server, status: int = 500, path: str = "/x", method: str = "GET") -> None:
    server.route(method, path, json_reply(status, '{"traceId": "00-abc-01"}'))


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


@pytest.mark.slow  # two replayers in processes of their own
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


def test_a_write_the_rate_limit_refused_is_kept_as_never_sent(server, session, outbox_url):
    server.route("POST", "/r", Reply(201, "ok"))
    limit = rbe.RateLimit({"*": (1, 60.0)}, max_wait=0.1)
    rbe.mount(session, "http://", rate_limit=limit, outbox=outbox_url, raise_errors=True)
    assert session.post(server.url("/r"), data=b"first").status_code == 201
    with pytest.raises(rbe.RateLimitError) as caught:
        session.post(server.url("/r"), data=b"second", headers={b"X-Bytes": b"v\xe9"})
    (entry,) = rbe.Outbox(outbox_url).entries()
    assert caught.value.outbox_id == entry.id
    assert (entry.body, entry.kind, entry.uncertain) == (b"second", "rate_limited", False)
    assert entry.headers["X-Bytes"] == "v\xe9"
    assert len(server.seen()) == 1


def test_an_entry_that_does_not_open_is_marked_dead_on_replay(server, session, tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
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


def test_a_replayer_that_lost_its_lease_does_not_settle_the_entry(server, session, outbox_url):
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    outbox = rbe.Outbox(outbox_url)
    store = open_backend(outbox.storage)  # what each replayer claims and settles in
    assert store.claim(1, "replayer-a", time.time(), 3600)
    with sqlite3.connect(outbox.storage.path) as db:  # A's lease ran out
        db.execute("UPDATE rbe_outbox SET lease_until = 0")
    assert store.claim(1, "replayer-b", time.time(), 3600)
    store.settle(1, "replayer-a", None)  # A finishes late: B owns the entry now
    store.close()
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
    url = f"sqlite:///{tmp_path}/o.db"
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
    url = f"sqlite:///{tmp_path}/o.db"
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
