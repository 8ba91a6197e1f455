"""requests-bloxs-errors: a resilience layer for requests, by the Bloxs error table.

Usage::

    >>> import requests, requests_bloxs_errors as rbe
    >>> session = requests.Session()
    >>> rbe.mount(session, "https://acme.bloxs.io/", auth=rbe.TokenAuth(fetch_token))
    >>> response = session.get("https://acme.bloxs.io/api/v1/realestateobjects/complexes")
    >>> response.raise_for_status()       # a typed rbe.BloxsError, still a requests.HTTPError

The logger ``requests_bloxs_errors`` has a NullHandler; configure logging to
see retries (WARNING), re-authentication (INFO) and give-ups (ERROR).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .adapter import AdapterOptions, BloxsAdapter, BloxsResponse, attempts, mount
from .credentials.auth import CachedTokenAuth, Credential, TokenAuth
from .errors.classify import BODY_CAP, ErrorInfo, classify, error_for
from .errors.table import RULES, Retryable, Rule, rule_for
from .events import AlertEvent, Attempt, GiveUpEvent, ReauthEvent, RetryEvent
from .exceptions import (
    AuthenticationError,
    BadRequestError,
    BloxsError,
    CircuitOpenError,
    ClientError,
    DeadlineExceeded,
    MethodNotAllowedError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TokenResponseError,
    UnsupportedMediaTypeError,
)
from .patch import install, installed, uninstall
from .pipeline.retry import BloxsRetry
from .pipeline.steps import Step

if TYPE_CHECKING:  # loaded on first use: see __getattr__
    from .credentials.providers import (
        BloxsHmacAuth,
        BloxsTokenAuth,
        ClientCredentialsAuth,
        bloxs_signature,
    )
    from .resilience.breaker import CircuitBreaker
    from .resilience.outbox import Outbox, OutboxEntry, ReplayReport
    from .resilience.ratelimit import RateLimit
    from .tools.envconfig import ConfigError, install_from_env

__version__ = "0.1.0"

__all__ = [
    "BODY_CAP",
    "RULES",
    "AdapterOptions",
    "AlertEvent",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BloxsAdapter",
    "BloxsError",
    "BloxsHmacAuth",
    "BloxsResponse",
    "BloxsRetry",
    "BloxsTokenAuth",
    "CachedTokenAuth",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientCredentialsAuth",
    "ClientError",
    "ConfigError",
    "Credential",
    "DeadlineExceeded",
    "ErrorInfo",
    "GiveUpEvent",
    "MethodNotAllowedError",
    "NotFoundError",
    "Outbox",
    "OutboxEntry",
    "PermissionDeniedError",
    "RateLimit",
    "RateLimitError",
    "ReauthEvent",
    "ReplayReport",
    "RetryEvent",
    "Retryable",
    "Rule",
    "ServerError",
    "ServiceUnavailableError",
    "Step",
    "TokenAuth",
    "TokenResponseError",
    "UnsupportedMediaTypeError",
    "attempts",
    "bloxs_signature",
    "classify",
    "error_for",
    "install",
    "install_from_env",
    "installed",
    "mount",
    "rule_for",
    "uninstall",
]

#: Public names whose modules load on first use (the vendors' credentials, ``sqlite3``,
#: the outbox and the environment's configuration stay out of a plain
#: ``import requests_bloxs_errors``).
_LAZY = {
    "BloxsHmacAuth": "credentials.providers",
    "BloxsTokenAuth": "credentials.providers",
    "CircuitBreaker": "resilience.breaker",
    "ClientCredentialsAuth": "credentials.providers",
    "ConfigError": "tools.envconfig",
    "Outbox": "resilience.outbox",
    "OutboxEntry": "resilience.outbox",
    "RateLimit": "resilience.ratelimit",
    "ReplayReport": "resilience.outbox",
    "bloxs_signature": "credentials.providers",
    "install_from_env": "tools.envconfig",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
