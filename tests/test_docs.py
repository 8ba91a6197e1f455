"""The documentation site: it builds without a warning, the parts written from the
code say what the code does, the API reference names every public name, and each
setting's accepted storage URLs read the same in its error, ``config`` and the docs.

The site's examples run in tests/test_newcomer.py; ``nox -s docs`` builds the HTML
and runs the doctests.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import ENDPOINTS, Simulator
from requests_bloxs_errors.storage import OutboxStore, PermitLog, accepted
from requests_bloxs_errors.tools.settings import shared_token_stores

from .helpers import docs
from .helpers.cli import run

pytest.importorskip("sphinx", reason="the docs extra (or test extra) brings Sphinx")
#: One process runs them all (with ``--dist loadgroup``): the site is built once.
pytestmark = pytest.mark.xdist_group("sphinx")


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The site built, warnings as errors: each page's text (its HTML without tags) by name."""
    out = tmp_path_factory.mktemp("site")
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            str(docs.ROOT / "docs"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert finished.returncode == 0, finished.stderr
    pages = {}
    for path in out.glob("*.html"):
        if path.stem not in ("genindex", "search", "py-modindex"):
            body = path.read_text().split('<article role="main"', 1)[-1]
            blocks_apart = re.sub(r"</?(?:td|th|tr|p|li|div|pre|dt|dd|h\d)\b[^>]*>", " ", body)
            pages[path.stem] = html.unescape(re.sub(r"<[^>]+>", "", blocks_apart))
    return pages


def test_every_page_is_built_and_reached_from_the_index(built):
    assert set(built) == set(docs.PAGES)
    for name in docs.PAGES:
        if name != "index":
            assert f"   {name}\n" in docs.PAGES["index"], name


def test_the_error_page_shows_the_table_as_the_table_command_prints_it(built):
    printed = run("table").stdout
    table = printed[: printed.index("\n\n")]
    for line in table.splitlines():
        assert line.rstrip() in built["errors"], line
    from requests_bloxs_errors.errors.table import rules_text

    for rule in rules_text():
        assert _words(rule) in _words(built["errors"]), rule


def test_the_legacy_page_lists_every_variable_with_its_default(built):
    from requests_bloxs_errors.tools.envconfig import VARIABLES

    page = _words(built["legacy"])
    for variable in VARIABLES:
        for text in variable:
            assert _words(text) in page, text


def test_the_testing_page_lists_every_endpoint_and_setting_of_the_simulator(built):
    page = _words(built["testing"])
    for methods, path, what in ENDPOINTS:
        assert f"{methods} {path} {what}" in page
    for name, parameter in inspect.signature(Simulator).parameters.items():
        if name not in ("limits", "clock"):
            assert f"{name} {parameter.default!r}" in page, name
    assert "'get': 500" in page  # the limits, each from DEFAULT_LIMITS


def test_the_command_line_page_shows_every_commands_help(built):
    page = _words(built["cli"])
    commands = [
        ["demo"], ["explain"], ["table"], ["simulate"], ["run"], ["config"], ["request"],
        ["status"], ["outbox"], ["outbox", "list"], ["outbox", "show"], ["outbox", "replay"],
        ["outbox", "drop"],
    ]  # fmt: skip
    for command in commands:
        shown = run(*command, "--help", env={"COLUMNS": "88"}).stdout
        assert _words(shown) in page, command


def test_help_shows_real_defaults_only():
    for command in (["request"], ["simulate"], ["status"], ["outbox", "replay"], ["run"]):
        shown = run(*command, "--help").stdout
        assert "(default: None)" not in shown, command
        assert "(default: False)" not in shown, command
    assert "(default: 30.0)" in _words(run("request", "--help").stdout)


def test_the_api_reference_names_every_public_name(built):
    source = docs.PAGES["api"]
    documented = set(re.findall(r"^\.\. auto\w+:: (\w+)$", source, re.MULTILINE))
    assert set(rbe.__all__) <= documented, set(rbe.__all__) - documented
    for name in rbe.__all__:
        assert re.search(rf"\b{name}\b", built["api"]), name


def test_every_storage_setting_states_one_list_in_its_error_config_and_the_docs(built, tmp_path):
    page = _words(built["fleets"])
    environment = {"BLOXS_BASE_URL": "https://acme.bloxs.io", "BLOXS_API_KEY": "k"}
    environment |= {"BLOXS_API_SECRET": "s", "RBE_RATE_LIMIT": "bloxs"}
    wide = {**environment, "COLUMNS": "400"}  # a line per variable: each list whole
    config = _words(run("config", env=wide).stdout)
    shared = shared_token_stores()  # (memory:// shares no token among processes)
    for variable, forms in (
        ("RBE_STORAGE", accepted(PermitLog)),
        ("RBE_TOKEN_CACHE", f"{', '.join(shared[:-1])} or {shared[-1]}"),
        ("RBE_OUTBOX", accepted(OutboxStore)),
    ):
        assert forms in config, variable
        refused = run("config", env={**environment, variable: "file:///x"})
        assert refused.returncode == 2
        assert f"{variable} must be {forms}; got 'file:///x'" in refused.stderr
        for form in forms.replace(" or ", ", ").split(", "):
            assert form in page, form


@pytest.mark.parametrize("variable", ["RBE_OUTBOX", "RBE_STORAGE", "RBE_TOKEN_CACHE"])
def test_a_relative_sqlite_path_is_refused_in_one_line(variable):
    environment = {"BLOXS_BASE_URL": "https://acme.bloxs.io", "BLOXS_API_KEY": "k"}
    environment |= {"BLOXS_API_SECRET": "s", "RBE_RATE_LIMIT": "bloxs"}
    refused = run("config", env={**environment, variable: "sqlite:///var/tmp/rbe.db"})
    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()
    assert f"{variable} names the relative path 'var/tmp/rbe.db'" in line
    assert "'sqlite:////var/tmp/rbe.db'" in line


def test_the_readme_is_an_entry_point_whose_links_lead_somewhere():
    assert len(docs.README.splitlines()) <= 300
    for target in re.findall(r"<([\w./-]+\.rst)>`_", docs.README):
        assert (docs.ROOT / target).is_file(), target
    for name in ("mount", "fleet", "outage", "testing"):
        assert docs.included(name).strip()
        assert f":start-after: .. start: {name}" in docs.TEXT


def test_the_circuit_breaker_state_is_documented(built):
    assert "state(host)" in built["api"]
    breaker = rbe.CircuitBreaker()
    assert breaker.state("https://acme.bloxs.io:443") == "closed"
    assert "half-open" in built["outages"]


def test_install_hints_work_from_a_checkout_and_from_an_index():
    """From a checkout the extras install as ``'.[extra]'``; the message says both."""
    from requests_bloxs_errors.storage import missing_extra

    message = str(missing_extra("redis", "redis", "a redis:// storage URL"))
    assert "pip install 'requests-bloxs-errors[redis]'" in message
    assert "pip install '.[redis]'" in message
    assert "python3 -m pip install '.[redis]'" in docs.PAGES["fleets"]
