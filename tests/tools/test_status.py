"""What an operator sees (issue 21): ``status`` for the shared stores, ``config --check``,
``simulate`` staging an outage, and log lines people can use.

Every command runs as a real subprocess; stores are real SQLite files and a real
``redis-server``; the simulator and the test servers answer over loopback.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import COMPLEXES, Simulator

from ..helpers import wait_until
from ..helpers.cli import CLI, assert_one_line_error, run
from ..helpers.redisserver import free_port
from ..helpers.server import Reply, json_reply

ENTRIES = "/api/rest/v4/data/entrydata/deal/entries"


def _learn_a_quota(storage: str) -> str:
    """A DealCloud endpoint that states 2 per second, paced through ``storage``, then
    paused for 30 s (as a long ``Retry-After`` would); the API's URL."""
    with Simulator(dealcloud_quota=(2, 1.0)) as sim:
        token_url, client_id, client_secret = sim.dealcloud_credentials
        limit = rbe.RateLimit.dealcloud(storage=storage)
        with requests.Session() as session:
            rbe.mount(
                session,
                sim.url + "/",
                auth=rbe.ClientCredentialsAuth(token_url, client_id, client_secret),
                rate_limit=limit,
            )
            for _ in range(3):
                assert session.get(sim.url + ENTRIES, timeout=10).ok
        request = requests.Request("GET", sim.url + ENTRIES).prepare()
        limit.store.pause(limit.key(request, "GET " + ENTRIES), 30.0)
        limit.close()
        return sim.url


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_status_shows_the_rules_in_force_and_the_pauses(tmp_path, request, kind):
    storage = (
        f"sqlite:///{tmp_path}/limit.db"
        if kind == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    api = _learn_a_quota(storage)
    shown = run("status", "--storage", storage, env={"RBE_RATE_LIMIT": "dealcloud"})
    assert shown.returncode == 0, shown.stderr
    assert "rate-limit storage:" in shown.stdout
    line = next(line for line in shown.stdout.splitlines() if ENTRIES in line)
    assert "2 per 1s, stated by the server" in line
    assert re.search(r"until \S+Z \(in \d+s\)$", line)  # the 429's pause
    answer = run("status", "--storage", storage, "--json")
    assert answer.returncode == 0
    (row,) = [
        r
        for r in json.loads(answer.stdout)["storage"]["entries"]
        if r["category"].endswith(ENTRIES)
    ]
    assert row["namespace"] == api
    assert row["category"] == "GET " + ENTRIES
    assert (row["rule"], row["learned"]) == ([2, 1.0], True)
    assert 3500 < row["learned_for"] <= 3600  # an hour, or ten periods
    assert row["in_flight"] == 0
    assert 20 < row["paused_for"] <= 30


def test_status_shows_token_entries_by_credential_never_the_token(tmp_path):
    pytest.importorskip("cryptography")
    cache = f"sqlite:///{tmp_path}/tokens.db"
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        with requests.Session() as session:
            auth = rbe.BloxsTokenAuth(sim.url, key, secret, cache=cache)
            rbe.mount(session, sim.url + "/", auth=auth)
            assert session.get(sim.url + COMPLEXES, timeout=5).ok
        tokens = sim.secret_values()
        env = {"BLOXS_API_KEY": key, "BLOXS_API_SECRET": secret, "BLOXS_BASE_URL": sim.url}
        shown = run("status", "--token-cache", cache, env=env)
        anonymous = run("status", "--token-cache", cache, "--json")
    assert shown.returncode == 0, shown.stderr
    assert f"BloxsTokenAuth for {sim.url}" in shown.stdout
    assert re.search(r"\d+s", shown.stdout)
    for value in tokens:
        assert value not in shown.stdout
        assert value not in anonymous.stdout
    (entry,) = json.loads(anonymous.stdout)["token_cache"]["entries"]
    assert entry["credential"] == "another credential (not in this environment)"
    assert 86000 < entry["seconds_left"] <= 86400  # Bloxs tokens live a day


def test_status_shows_the_outbox_by_host_and_state(server, session, outbox_url):
    server.route("POST", "/w", Reply(503, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    for _ in range(2):
        session.post(server.url("/w"), data=b"x", headers={"Idempotency-Key": "k"})
    answer = run("status", "--json", env={"RBE_OUTBOX": outbox_url})
    assert answer.returncode == 0, answer.stderr
    host = server.url("").rstrip("/")
    assert json.loads(answer.stdout)["outbox"]["entries"] == [
        {"host": host, "state": "queued", "entries": 2}
    ]


def test_a_store_that_cannot_be_read_is_one_line_and_exit_1(tmp_path, outbox_url):
    url = f"redis://:hunter2-pw@127.0.0.1:{free_port()}/0"
    assert rbe.Outbox(outbox_url).entries() == []  # (an empty outbox: its section still prints)
    shown = run("status", "--storage", url, "--outbox", outbox_url)
    assert shown.returncode == 1
    lines = [line for line in shown.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("requests-bloxs-errors: error: rate-limit storage redis://")
    assert "cannot be reached" in lines[0]
    assert "hunter2" not in shown.stderr + shown.stdout
    assert "Traceback" not in shown.stderr
    assert "outbox:" in shown.stdout  # the other store still shows
    missing = run("status", "--storage", f"sqlite:///{tmp_path}/nothing-here.db")
    assert missing.returncode == 1
    assert "no such file" in missing.stderr
    assert not (tmp_path / "nothing-here.db").exists()  # status never creates a file


def test_status_without_a_store_is_a_usage_error():
    assert_one_line_error(run("status", env={"RBE_STORAGE": "", "RBE_OUTBOX": ""}))


def test_config_check_tries_every_configured_store(tmp_path, outbox_url):
    assert rbe.Outbox(outbox_url).entries() == []
    good = run(
        "config",
        "--check",
        env={
            "RBE_RATE_LIMIT": "bloxs",
            "RBE_STORAGE": f"sqlite:///{tmp_path}/limit.db",
            "RBE_OUTBOX": outbox_url,
        },
    )
    assert good.returncode == 0, good.stderr
    assert "RBE_STORAGE: sqlite://" in good.stdout
    assert "RBE_OUTBOX: sqlite://" in good.stdout
    bad = run(
        "config",
        "--check",
        env={"RBE_RATE_LIMIT": "bloxs", "RBE_STORAGE": f"redis://:pw-x@127.0.0.1:{free_port()}"},
    )
    assert bad.returncode == 1
    assert "answers" not in bad.stdout
    assert "rate-limit storage redis://" in bad.stderr
    assert "pw-x" not in bad.stderr + bad.stdout


# -- simulate: an outage from the command line ----------------------------------------------


def _serving(*flags: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*CLI, "simulate", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    url = re.search(r"http://[\d.]+:\d+", first)
    assert url, first + (process.stderr.read() if process.stderr else "")
    return process, url.group(0)


def test_simulate_stages_an_outage_for_a_while(tmp_path):
    process, url = _serving(
        "--fail", "503", "--for", "1.5", "--path", COMPLEXES, "--retry-after", "1"
    )
    try:
        assert process.stdout is not None
        staged = process.stdout.readline() + process.stdout.readline() + process.stdout.readline()
        staged += process.stdout.readline()
        assert f"fault: {COMPLEXES} answers 503 (Retry-After: 1) for 1.5s" in staged
        down = requests.get(url + COMPLEXES, timeout=5)
        assert (down.status_code, down.headers["Retry-After"]) == (503, "1")
        assert requests.get(url + "/Test", timeout=5).status_code != 503  # other paths answer
        assert wait_until(
            lambda: requests.get(url + COMPLEXES, timeout=5).status_code == 401, timeout=10
        )  # the outage is over: the API answers (401: no token)
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_simulate_slows_answers():
    process, url = _serving("--slow", "0.3", "--path", "/Test")
    try:
        response = requests.get(url + "/Test", timeout=5)
        # (real time: a lower bound, which a busy machine only makes easier to meet)
        assert response.elapsed.total_seconds() >= 0.29
    finally:
        process.terminate()
        process.communicate(timeout=10)


@pytest.mark.parametrize(
    "flags",
    [("--retry-after", "5"), ("--for", "10"), ("--fail", "200"), ("--fail", "503", "--for", "0")],
)
def test_simulate_refuses_a_fault_it_cannot_stage(flags):
    assert_one_line_error(run("simulate", "--port", "0", *flags))


# -- logs people can use --------------------------------------------------------------------


def test_the_happy_path_logs_one_debug_line_per_call(server, session, caplog):
    caplog.set_level(logging.DEBUG, logger="requests_bloxs_errors")
    server.route("GET", "/ok", Reply(200, "ok"))
    rbe.mount(session, "http://")
    assert session.get(server.url("/ok?token=s3cret")).ok
    (line,) = [r.getMessage() for r in caplog.records if r.name == "requests_bloxs_errors"]
    assert re.fullmatch(
        re.escape(f"GET {server.url('/ok')} -> 200 in ") + r"\d+\.\d{3}s \(1 attempt\)", line
    )


def test_every_line_about_an_error_with_a_trace_id_carries_it(server, session, caplog):
    caplog.set_level(logging.DEBUG, logger="requests_bloxs_errors")
    busy = '{"title": "Service Unavailable", "status": 503, "traceId": "trace-503"}'
    bad = '{"title": "Bad Request", "status": 400, "traceId": "trace-400", "errors": {}}'
    server.route("GET", "/t", json_reply(503, busy), json_reply(400, bad))
    rbe.mount(session, "http://", backoff_factor=0.01)
    assert session.get(server.url("/t")).status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "requests_bloxs_errors"]
    (retrying,) = [line for line in lines if line.startswith("Retrying")]
    assert retrying.endswith("; trace id trace-503")
    (done,) = [line for line in lines if " -> 400 in " in line]
    assert "(2 attempts)" in done
    assert done.endswith("; trace id trace-400")


def _keys_of_a_fleet(redis_url: str) -> None:
    """One good key: a permit that ended and a rule the server stated."""
    store = rbe.RateLimit({"*": "5/second"}, storage=redis_url).store
    key = "https://api.example:443|GET /items"
    store.finish(key, store.acquire(key, (5, 60.0), 60).stamp)
    store.learn(key, 2, 1.0)
    store.close()


def test_13_status_prints_no_control_characters_from_redis_key_names(redis_url):
    import redis

    _keys_of_a_fleet(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        planted = "https://api.example:443|GET /\x1b[2J\x1b]0;pwned\x07x\nfake row\u202e"
        client.set("rbe:{" + planted + "}:pause", str(client.time()[0] + 30), ex=60)
    finally:
        client.close()
    shown = run("status", "--storage", redis_url)
    assert shown.returncode == 0, shown.stderr
    assert "GET /items" in shown.stdout
    row = next(line for line in shown.stdout.splitlines() if "pwned" in line)
    assert re.search(r"until \S+Z \(in \d+s\)$", row)  # the planted key's row, on one line
    for output in (shown.stdout, shown.stderr):
        assert not any(c in output for c in "\x1b\x07\u202e"), output
    assert not any(line.startswith("fake row") for line in shown.stdout.splitlines())


def test_14_status_skips_a_stray_or_wrong_typed_key_and_names_it(redis_url):
    import redis

    _keys_of_a_fleet(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("rbe:{https://api.example:443|GET /stray}:flight", "not a sorted set")
        client.rpush("rbe:{https://api.example:443|GET /list}:rule", "2", "1.0")
        client.set("rbe:{https://api.example:443|GET /words}:pause", "soon")
    finally:
        client.close()
    shown = run("status", "--storage", redis_url)
    assert shown.returncode == 0, shown.stderr
    assert "cannot be reached" not in shown.stdout + shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "GET /items" in line)
    assert "2 per 1s, stated by the server" in row  # the rest is shown
    assert "  skipped 3 key(s)" in shown.stdout
    after = shown.stdout.split("  skipped 3 key(s)")[1]
    for name, why in [
        ("GET /stray}:flight", "a string where this package keeps a zset"),
        ("GET /list}:rule", "a list where this package keeps a hash"),
        ("GET /words}:pause", "a value that is not a number"),
    ]:
        assert f"rbe:{{https://api.example:443|{name}: {why}" in after
    answer = run("status", "--storage", redis_url, "--json")
    assert answer.returncode == 0, answer.stderr
    section = json.loads(answer.stdout)["storage"]
    assert [r["category"] for r in section["entries"]] == ["GET /items"]
    assert sorted(s["key"] for s in section["skipped"]) == [
        "rbe:{https://api.example:443|GET /list}:rule",
        "rbe:{https://api.example:443|GET /stray}:flight",
        "rbe:{https://api.example:443|GET /words}:pause",
    ]
