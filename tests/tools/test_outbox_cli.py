"""The ``outbox`` command: list, show, replay and drop, exit statuses, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import requests_bloxs_errors as rbe

from ..helpers.cli import run
from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]


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
    assert replayed.returncode == 0  # the uncertain entry is reported, not failed
    lines = replayed.stdout.splitlines()
    assert f"  sent     2  POST {server.url('/r')}: 201 Created" in lines
    assert any(
        line.startswith("  skipped  1  POST")
        and "uncertain" in line
        and "--include-uncertain" in line
        for line in lines
    )
    assert lines[-1] == (
        "1 sent, 0 failed, 0 dead, 1 skipped. 1 stays queued: 1 x uncertain: the server may "
        "have processed it already (--include-uncertain sends it)"
    )
    assert run("outbox", "drop", "1", "--db", outbox_url).returncode == 0
    assert rbe.Outbox(outbox_url).entries() == []


def test_the_outbox_command_exits_1_when_a_replay_fails(server, session, outbox_url):
    server.route("PUT", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/r"), data=b"x")
    assert run("outbox", "replay", "--db", outbox_url, "--max-retries", "0").returncode == 2
    finished = run("outbox", "replay", "--db", outbox_url)
    assert finished.returncode == 1
    assert f"  failed   1  PUT {server.url('/r')}: 500 Internal Server Error" in finished.stdout
    assert finished.stdout.splitlines()[-1] == (
        "0 sent, 1 failed, 0 dead, 0 skipped. 1 stays queued: 1 x 500 Internal Server Error"
    )


def test_a_replay_without_credentials_says_so_for_each_refused_entry(server, session, outbox_url):
    server.route("PUT", "/api/r", Reply(503, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.put(server.url("/api/r"), data=b"x")
    server.route("PUT", "/api/r", Reply(401, "who are you?"))
    host = server.url("").rstrip("/")
    finished = run("outbox", "replay", "--db", outbox_url)
    assert finished.returncode == 1
    assert (
        f"  failed   1  PUT {host}/api/r: 401 Unauthorized: no credentials for {host}"
        in finished.stdout
    )
    assert "1 stays queued: 1 x 401 Unauthorized: no credentials for" in finished.stdout


def test_the_outbox_commands_find_the_outbox_in_rbe_outbox(server, session, outbox_url):
    server.route("POST", "/r", Reply(500, "down"))
    rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
    session.post(server.url("/r"), data=b'{"a": 1}', headers={"Idempotency-Key": "k-1"})
    listed = run("outbox", "list", "--json", env={"RBE_OUTBOX": outbox_url})
    assert listed.returncode == 0
    (entry,) = json.loads(listed.stdout)
    assert (entry["id"], entry["method"], entry["state"]) == (1, "POST", "queued")
    assert entry["url"] == server.url("/r")
    assert (entry["status"], entry["kind"], entry["uncertain"]) == (
        500,
        "internal_server_error",
        False,
    )
    shown = run("outbox", "show", "1", "--json", env={"RBE_OUTBOX": outbox_url})
    assert shown.returncode == 0
    detail = json.loads(shown.stdout)
    assert detail["body"] == '{"a": 1}'
    assert detail["headers"]["Idempotency-Key"] == "k-1"
    assert run("outbox", "list", env={"RBE_OUTBOX": ""}).returncode == 2


@pytest.mark.parametrize(
    "arguments",
    [
        ("outbox", "list", "--db", "sqlite:////nonexistent/dir/outbox.db"),
        ("outbox", "show", "abc", "--db", "sqlite:////tmp/x.db"),
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


def test_13_outbox_show_and_replay_print_no_control_characters_from_the_server(session, outbox_url):
    from ..helpers.rawserver import RawServer, respond

    reason = b"503 \x1b[2J\x1b]0;pwned\x07\x1b[31mGone\x9b31m \xe2\x80\xae"
    server = RawServer(respond(reason, b"down"))
    try:
        rbe.mount(session, "http://", outbox=outbox_url, max_retries=0)
        session.post(server.url("/w"), data=b"x", headers={"Idempotency-Key": "k"})
        replayed = run("outbox", "replay", "--db", outbox_url)
    finally:
        server.close()
    assert replayed.returncode == 1
    shown = run("outbox", "show", "1", "--db", outbox_url)
    listed = run("outbox", "list", "--db", outbox_url)
    assert shown.returncode == listed.returncode == 0
    assert "Gone" in replayed.stdout  # the phrase, neutralised:
    assert "Gone" in shown.stdout
    for output in (replayed.stdout, shown.stdout, listed.stdout):
        assert not any(c in output for c in "\x1b\x07\x9b\u202e"), output
