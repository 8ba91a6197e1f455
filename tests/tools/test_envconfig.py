"""Configuration from the environment: the breaker's and the outbox's variables."""

from __future__ import annotations

from pathlib import Path

import pytest

import requests_bloxs_errors as rbe
from requests_bloxs_errors.tools import envconfig

ROOT = Path(__file__).resolve().parents[2]


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
