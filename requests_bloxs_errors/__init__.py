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

from .adapter import AdapterOptions, BloxsAdapter, BloxsResponse, attempts, mount
from .auth import CachedTokenAuth, Credential, TokenAuth
from .breaker import CircuitBreaker
from .classify import BODY_CAP, ErrorInfo, classify, error_for
from .envconfig import ConfigError, install_from_env
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
from .outbox import Outbox, OutboxEntry, ReplayReport
from .patch import install, installed, uninstall
from .providers import BloxsHmacAuth, BloxsTokenAuth, ClientCredentialsAuth, bloxs_signature
from .ratelimit import RateLimit
from .retry import BloxsRetry
from .table import RULES, Retryable, Rule, rule_for

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
