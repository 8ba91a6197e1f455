"""One parser per variable: the settings table that ``run``, ``config``, ``run --help``
and ``install_from_env`` read, its defaults taken from the library's own, and
``RBE_MAX_WAIT`` (the rate limit's ``max_wait``) through real ``run`` processes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors.pipeline.retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_RETRIES
from requests_bloxs_errors.tools.envconfig import VARIABLES, config_from_env
from requests_bloxs_errors.tools.settings import (
    OFF_WORDS,
    ON_WORDS,
    SETTINGS,
    SWITCH_WORDS,
    ConfigError,
    parsed,
    setting,
)

from ..helpers.cli import CLI, assert_one_line_error, launch
from ..helpers.server import Reply

ROOT = str(Path(__file__).resolve().parents[2])
SWITCHES = ["RBE_RAISE_ERRORS", "RBE_TELEMETRY", "BLOXS_HMAC"]


def test_the_help_lists_the_same_rows_as_the_table_that_parses():
    assert [v.name for v in VARIABLES] == [s.name for s in SETTINGS]
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    assert [tuple(v) for v in VARIABLES] == [(s.name, s.what, s.default) for s in SETTINGS]


def test_the_defaults_shown_are_the_ones_the_library_uses():
    shown = {v.name: v.default for v in VARIABLES}
    limit = rbe.RateLimit({"*": "1/second"})
    breaker = rbe.CircuitBreaker()
    assert shown["RBE_MAX_RETRIES"] == str(DEFAULT_RETRIES)
    assert shown["RBE_MAX_RETRY_AFTER"] == f"{DEFAULT_MAX_RETRY_AFTER:g}"
    assert shown["RBE_MAX_WAIT"] == f"{limit.max_wait:g}"
    assert shown["RBE_STORAGE"] == limit.storage.url
    assert shown["RBE_CIRCUIT_BREAKER"] == (
        f"off (on means {breaker.failures}/{breaker.open_for:g})"
    )
    on = config_from_env({"RBE_CIRCUIT_BREAKER": "on"}).adapter_kwargs["circuit_breaker"]
    assert (on.failures, on.open_for) == (breaker.failures, breaker.open_for)


def test_an_empty_value_is_the_same_as_an_unset_one():
    empty = config_from_env({v.name: "  " for v in VARIABLES})
    unset = config_from_env({})
    assert empty.mounts == unset.mounts == (("https://", {}),)
    assert empty.shown == unset.shown == {}
    assert empty.warnings == unset.warnings == ()


@pytest.mark.parametrize("name", SWITCHES)
def test_an_on_off_variable_takes_one_spelling_list_that_its_help_and_error_show(name):
    assert SWITCH_WORDS in setting(name).what
    for word in (*ON_WORDS, *OFF_WORDS):
        assert re.search(rf"(^|[ (/]){word}([ ,/)]|$)", SWITCH_WORDS), word
    assert [parsed(name, word.upper()) for word in ON_WORDS] == [True] * len(ON_WORDS)
    assert [parsed(name, f" {word} ") for word in OFF_WORDS] == [False] * len(OFF_WORDS)
    with pytest.raises(ConfigError) as caught:
        parsed(name, "maybe")
    assert str(caught.value) == f"{name} must be {SWITCH_WORDS}, not 'maybe'"


def test_the_circuit_breaker_takes_the_same_words_and_a_failures_seconds_pair():
    assert SWITCH_WORDS in setting("RBE_CIRCUIT_BREAKER").what
    assert all(parsed("RBE_CIRCUIT_BREAKER", word) is None for word in OFF_WORDS)
    assert all(
        isinstance(parsed("RBE_CIRCUIT_BREAKER", word), rbe.CircuitBreaker) for word in ON_WORDS
    )
    pair = parsed("RBE_CIRCUIT_BREAKER", "3/7.5")
    assert (pair.failures, pair.open_for) == (3, 7.5)
    for value in ("none", "7", "0/10", "x/y"):
        with pytest.raises(
            ConfigError, match=f"^RBE_CIRCUIT_BREAKER must be {re.escape(SWITCH_WORDS)}"
        ):
            parsed("RBE_CIRCUIT_BREAKER", value)


@pytest.mark.parametrize(
    ("value", "telemetry"),
    [("on", True), ("YES", True), ("off", False), ("0", False), ("", None)],
)
def test_run_passes_telemetry_as_the_variable_says_and_leaves_an_empty_one_to_the_default(
    value, telemetry
):
    kwargs = config_from_env({"RBE_TELEMETRY": value}).adapter_kwargs
    assert kwargs.get("telemetry") is telemetry  # (the otel extra is installed here)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RBE_MAX_WAIT": "5"}, "RBE_MAX_WAIT needs RBE_RATE_LIMIT"),
        ({"RBE_RATE_LIMIT": "bloxs", "RBE_MAX_WAIT": "-1"}, "RBE_MAX_WAIT must be a number"),
        ({"RBE_RATE_LIMIT": "bloxs", "RBE_MAX_WAIT": "90000"}, "from 0 to 86400, not '90000'"),
        ({"RBE_RATE_LIMIT": "bloxs", "RBE_MAX_WAIT": "nan"}, "RBE_MAX_WAIT must be"),
        (
            {"BLOXS_API_KEY": "k", "BLOXS_API_SECRET": "s", "BLOXS_BASE_URL": "https://u:PW@h/"},
            "BLOXS_BASE_URL must not contain credentials",
        ),
        (
            {"DEALCLOUD_CLIENT_ID": "c", "DEALCLOUD_CLIENT_SECRET": "s",
             "DEALCLOUD_TOKEN_URL": "https://h/token?key=QS"},
            "DEALCLOUD_TOKEN_URL must not contain a query string",
        ),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_message_naming_the_variable_in_its_own_words(environ, message):
    with pytest.raises(ConfigError) as caught:
        config_from_env(environ)
    text = str(caught.value)
    assert message in text
    assert "prefix" not in text  # no other function's words, trimmed
    assert "PW" not in text
    assert "QS" not in text
    assert "\n" not in text


def test_max_wait_sets_the_rate_limits_and_the_vendors_limits_take_it_too():
    for spec in ("5/second", "bloxs", "dealcloud"):
        kwargs = config_from_env({"RBE_RATE_LIMIT": spec, "RBE_MAX_WAIT": "2.5"}).adapter_kwargs
        assert kwargs["rate_limit"].max_wait == 2.5
    unset = config_from_env({"RBE_RATE_LIMIT": "5/second"}).adapter_kwargs["rate_limit"]
    assert unset.max_wait == rbe.RateLimit({"*": "5/second"}).max_wait


def test_run_with_a_max_wait_of_0_refuses_at_once_what_the_default_waits_for(server, tmp_path):
    server.route("GET", "/x", Reply(200, "ok"))
    script = tmp_path / "job.py"
    script.write_text(
        "import requests\n"
        "for _ in range(2):\n"
        f"    answer = requests.get({server.url('/x')!r}, timeout=10)\n"
        "    print(answer.status_code, getattr(answer, 'local', False))\n"
    )
    env = {"RBE_PREFIX": "http://", "RBE_RATE_LIMIT": "1/2s", "RBE_MAX_RETRIES": "0"}
    refused = launch([*CLI, "run", str(script)], {**env, "RBE_MAX_WAIT": "0"})
    assert refused.returncode == 0, refused.stderr
    assert refused.stdout.splitlines() == ["200 False", "429 True"]  # a local 429, not sent
    assert len(server.seen("GET", "/x")) == 1
    waited = launch([*CLI, "run", str(script)], env)  # max_wait 60 > the 2 s window
    assert waited.stdout.splitlines() == ["200 False", "200 False"], waited.stderr
    assert len(server.seen("GET", "/x")) == 3


@pytest.mark.parametrize("value", ["lots", "-2", "86401"])
def test_run_names_a_bad_max_wait_in_one_line_before_the_script_starts(tmp_path, value):
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    env = {"RBE_RATE_LIMIT": "bloxs", "RBE_MAX_WAIT": value}
    result = launch([*CLI, "run", str(script)], env)
    assert_one_line_error(result)
    assert "RBE_MAX_WAIT must be a number of seconds from 0 to 86400" in result.stderr
    assert result.stdout == ""


def test_rbe_storage_with_a_breaker_alone_is_where_its_circuits_are_published(tmp_path):
    url = f"sqlite:///{tmp_path}/fleet.db"
    breaker = config_from_env({"RBE_CIRCUIT_BREAKER": "on", "RBE_STORAGE": url}).adapter_kwargs[
        "circuit_breaker"
    ]
    assert breaker.storage is not None
    assert breaker.storage.url == url
    with pytest.raises(rbe.ConfigError, match=r"RBE_STORAGE needs RBE_RATE_LIMIT .* or RBE_CIRC"):
        config_from_env({"RBE_STORAGE": url})
