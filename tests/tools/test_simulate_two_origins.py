"""``simulate`` serves both APIs on two origins for ``run``: the variables it prints
work together (each API's calls signed with its own token), it logs each request,
and it prints a summary when stopped; no token, secret or query string reaches its
log. Real subprocesses and loopback sockets, as an operator would run them."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from requests_bloxs_errors.tools.simulate_cli import LOG_HEADER, _dealcloud_port

from ..helpers import docs
from ..helpers.cli import CLI, assert_one_line_error, run

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"

#: A script that calls both APIs, as a legacy job would, with no credential of its own:
#: ``run`` signs each call. Its own token requests (with the same credentials) are
#: answered from the adapter's tokens, which it prints, so the test can look for them.
SCRIPT = textwrap.dedent(
    """
    import os
    import requests

    bloxs = os.environ["BLOXS_BASE_URL"]
    dealcloud = os.environ["DEALCLOUD_TOKEN_URL"].split("/api/rest/")[0]
    listed = requests.get(
        bloxs + "/api/v1/realestateobjects/complexes?paging.pageSize=2&note=query-s3cret",
        timeout=30,
    )
    entries = requests.get(dealcloud + "/api/rest/v4/data/entrydata/deal/entries", timeout=30)
    print("bloxs", listed.status_code, len(listed.json()["items"]))
    print("dealcloud", entries.status_code, len(entries.json()))
    bloxs_token = requests.post(
        bloxs + "/Authorization",
        json={"apiKey": os.environ["BLOXS_API_KEY"], "apiSecret": os.environ["BLOXS_API_SECRET"]},
        timeout=30,
    ).json()["token"]
    dealcloud_token = requests.post(
        os.environ["DEALCLOUD_TOKEN_URL"],
        data={
            "grant_type": "client_credentials",
            "client_id": os.environ["DEALCLOUD_CLIENT_ID"],
            "client_secret": os.environ["DEALCLOUD_CLIENT_SECRET"],
        },
        timeout=30,
    ).json()["access_token"]
    print("tokens", bloxs_token, dealcloud_token)
    """
)


class Simulate:
    """``simulate`` as a subprocess: its lines as they come, the variables it printed."""

    def __init__(self, *flags: str) -> None:
        self.process = subprocess.Popen(
            [*CLI, "simulate", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**_clean_env(), "NO_COLOR": "1"},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.banner: list[str] = []
        self.exports: dict[str, str] = {}
        while True:
            # (real time, loose: a process starting on a busy machine; it only catches a hang)
            line = self._lines.get(timeout=60)
            assert line is not None, self._failure()
            self.banner.append(line)
            found = re.fullmatch(r"  export (\w+)=(\S+)\n", line)
            if found:
                self.exports[found.group(1)] = found.group(2)
            if line.rstrip("\n") == LOG_HEADER:
                break

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _failure(self) -> str:
        """What it printed before it ended without serving."""
        self.process.wait(timeout=60)
        self._reader.join(10)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        with self.process.stdout, self.process.stderr:
            return "".join(self.banner) + self.process.stderr.read()

    def stop(self, how: int = signal.SIGINT) -> tuple[str, str]:
        """Stop it with ``how``; return what it printed after the log's header, and stderr."""
        self.process.send_signal(how)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        rest = []
        while (line := self._lines.get_nowait()) is not None:
            rest.append(line)
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        self.process.stderr.close()
        assert self.process.returncode == 0, err
        return "".join(rest), err


def _clean_env() -> dict[str, str]:
    """This process's environment without the project's own variables."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RBE_", "BLOXS_", "DEALCLOUD_"))
    }


def _run_script(tmp_path: Path, exports: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "both_apis.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [*CLI, "run", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), **exports, "NO_COLOR": "1"},
        check=False,
    )


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_with_both_apis_variables_signs_each_with_its_own_token(tmp_path, how):
    simulate = Simulate()
    try:
        exports = simulate.exports
        assert sorted(exports) == [
            "BLOXS_API_KEY",
            "BLOXS_API_SECRET",
            "BLOXS_BASE_URL",
            "DEALCLOUD_CLIENT_ID",
            "DEALCLOUD_CLIENT_SECRET",
            "DEALCLOUD_TOKEN_URL",
        ]
        bloxs_url = exports["BLOXS_BASE_URL"]
        dealcloud_url = exports["DEALCLOUD_TOKEN_URL"].split("/api/rest/")[0]
        assert bloxs_url != dealcloud_url  # two origins, as in production
        finished = _run_script(tmp_path, exports)
    finally:
        log, err = simulate.stop(how)

    # run took both vendors' variables together, and each API answered 200: each
    # token is the vendor's own (the simulator refuses the other's with 401)
    assert finished.returncode == 0, finished.stderr
    assert finished.stderr == ""
    lines = finished.stdout.splitlines()
    assert lines[:2] == ["bloxs 200 2", "dealcloud 200 10"]
    _, bloxs_token, dealcloud_token = lines[2].split()

    entries = [line for line in log.splitlines() if re.match(ISO, line)]
    shown = [re.sub(ISO, "T", line) for line in entries]
    assert shown == [
        "T  Bloxs      POST /Authorization  200  apiKey=demo-key",
        "T  Bloxs      GET /api/v1/realestateobjects/complexes  200",
        "T  DealCloud  POST /api/rest/v1/oauth/token  200  client_id=demo-client",
        "T  DealCloud  GET /api/rest/v4/data/entrydata/deal/entries  200",
    ]  # (the script's own token requests were answered by run's adapter: never sent)
    assert "stopped\n" in log
    summary = log[log.index("stopped\n") :]
    assert "summary: 4 request(s)" in summary
    assert re.search(r"Bloxs authorization +1\n", summary)
    assert re.search(r"Bloxs other GETs +1\n", summary)
    assert re.search(r"DealCloud token +1\n", summary)
    assert re.search(r"DealCloud data +1\n", summary)
    assert re.search(r"Bloxs downloads +0\n", summary)
    assert "token requests: Bloxs apiKey=demo-key: 1, DealCloud client_id=demo-client: 1\n" in (
        summary
    )
    assert "429s given: 0\n" in summary

    # no token anywhere in its output; the demo secrets only in the banner that lists
    # them on purpose; no query string in the log
    everything = "".join(simulate.banner) + log + err
    for token in (bloxs_token, dealcloud_token):
        assert len(token) > 20
        assert token not in everything
    for secret in ("demo-secret", "demo-client-secret"):
        assert secret not in log + err
    assert "query-s3cret" not in everything
    assert "Traceback" not in err


def test_the_log_shows_a_429_and_a_misdirected_call_and_the_summary_counts_them(tmp_path):
    simulate = Simulate("--fail", "429", "--path", "/Test", "--retry-after", "1")
    try:
        bloxs_url = simulate.exports["BLOXS_BASE_URL"]
        dealcloud_url = simulate.exports["DEALCLOUD_TOKEN_URL"].split("/api/rest/")[0]
        script = tmp_path / "calls.py"
        script.write_text(
            "import requests\n"
            f"print(requests.get({bloxs_url + '/Test'!r}, timeout=30).status_code)\n"
            f"print(requests.get({dealcloud_url + '/api/v1/documents/3/download'!r},"
            " timeout=30).status_code)\n"
        )
        # a plain python, not run: the exact answers, nothing retried or signed
        finished = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        log, _ = simulate.stop()
    assert finished.stdout.split() == ["429", "404"], finished.stderr
    shown = [re.sub(ISO, "T", line) for line in log.splitlines() if re.match(ISO, line)]
    assert shown == [
        "T  Bloxs      GET /Test  429  (fault fail-429-1)",
        "T  DealCloud  GET /api/v1/documents/3/download  404  (Bloxs's path, on the DealCloud "
        "origin)",
    ]
    assert "summary: 2 request(s)\n" in log
    assert re.search(r"Bloxs other GETs +1\n", log)
    assert re.search(r"Bloxs downloads +0\n", log)  # the misdirected one is counted apart
    assert re.search(r"on the wrong origin +1 \(404\)\n", log)
    assert "token requests: none\n" in log
    assert "429s given: 1 (Bloxs other GETs 1)\n" in log


def test_the_dealcloud_port_is_the_next_one_unless_given():
    assert _dealcloud_port(8080, None) == 8081
    assert _dealcloud_port(8080, 9000) == 9000
    assert _dealcloud_port(0, None) == 0  # any free one, as Bloxs's
    assert _dealcloud_port(8080, 0) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--port", "65535"), "--port 65535 leaves no next port for DealCloud"),
        (("--port", "18080", "--dealcloud-port", "18080"), "must differ from --port (18080)"),
        (("--dealcloud-port", "70000"), "--dealcloud-port"),
    ],
)
def test_a_dealcloud_port_it_cannot_use_is_one_line(flags, message):
    result = run("simulate", *flags)
    assert_one_line_error(result)
    assert message in result.stderr


def test_a_busy_dealcloud_port_is_named_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = run("simulate", "--port", "0", "--dealcloud-port", str(taken))
    assert_one_line_error(result)
    assert f"cannot listen on 127.0.0.1:{taken}: Address already in use" in result.stderr


def test_the_command_line_pages_variables_are_what_simulate_prints():
    page = docs.PAGES["cli"]
    documented = re.findall(r"^ +export (\w+=\S+)$", page, re.MULTILINE)
    assert documented
    simulate = Simulate()
    simulate.stop()
    printed = [f"{name}={value}" for name, value in simulate.exports.items()]
    bloxs_port = urlsplit(simulate.exports["BLOXS_BASE_URL"]).port
    dealcloud_port = urlsplit(simulate.exports["DEALCLOUD_TOKEN_URL"]).port
    as_documented = [
        line.replace(f":{bloxs_port}", ":8080").replace(f":{dealcloud_port}", ":8081")
        for line in printed
    ]
    assert documented == as_documented
