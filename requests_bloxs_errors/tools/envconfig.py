"""Configuration from the environment: :func:`install_from_env` and the ``run`` command.

Every variable is listed once, in :data:`VARIABLES`; the README's table and
the ``config`` command show the same list. A bad value is a
:class:`ConfigError` naming the variable, raised before anything is
installed.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..credentials.auth import Credential
from ..credentials.providers import (
    DEALCLOUD_TOKEN_PATH,
    BloxsHmacAuth,
    BloxsTokenAuth,
    ClientCredentialsAuth,
    masked,
)
from ..patch import install
from ..resilience.breaker import CircuitBreaker
from ..resilience.outbox import Outbox
from ..resilience.ratelimit import RateLimit
from ..storage import PermitLog, TokenStore
from ..storage import parse as parse_storage
from ..urls import Prefix, origin, redact_url, safe_for_message

__all__ = [
    "VARIABLES",
    "ConfigError",
    "EnvConfig",
    "config_from_env",
    "credential_from",
    "install_from_env",
]

#: Each variable: its name, and what it sets.
VARIABLES: tuple[tuple[str, str], ...] = (
    ("RBE_PREFIX", "the URLs to serve (default https://; with credentials, their host)"),
    ("RBE_MAX_RETRIES", "retries per call (default 3)"),
    ("RBE_DEADLINE", "seconds for a whole call (default: none)"),
    ("RBE_MAX_RETRY_AFTER", "the longest Retry-After waited for, seconds, or none (default 60)"),
    ("RBE_RAISE_ERRORS", "1 to raise the typed error from the call (default 0)"),
    ("RBE_LOG_LEVEL", "the adapter's log level on stderr: DEBUG, INFO, WARNING, ERROR"),
    (
        "RBE_RATE_LIMIT",
        "pace requests: bloxs, dealcloud, or one rule for all, such as 5/second (default: none)",
    ),
    (
        "RBE_STORAGE",
        "where the limit is shared: memory://, sqlite:///path or redis://host:port/db",
    ),
    (
        "RBE_TOKEN_CACHE",
        "share one token among processes: sqlite:///path or redis://host:port/db",
    ),
    (
        "RBE_CIRCUIT_BREAKER",
        "fail fast while a host keeps failing: on, or FAILURES/OPEN_SECONDS such as 5/30",
    ),
    ("RBE_OUTBOX", "keep failed writes for a replay: sqlite:///path"),
    ("BLOXS_BASE_URL", "the Bloxs environment, such as https://acme.bloxs.io"),
    ("BLOXS_API_KEY", "the Bloxs API key"),
    ("BLOXS_API_SECRET", "the Bloxs API secret"),
    ("BLOXS_HMAC", "1 to sign with the Bloxs v1 HMAC scheme instead of tokens"),
    ("DEALCLOUD_TOKEN_URL", "the DealCloud token endpoint"),
    ("DEALCLOUD_CLIENT_ID", "the DealCloud client id"),
    ("DEALCLOUD_CLIENT_SECRET", "the DealCloud client secret"),
    ("DEALCLOUD_SCOPE", "the DealCloud scopes, such as 'data'"),
)

_SECRETS = frozenset({"BLOXS_API_SECRET", "DEALCLOUD_CLIENT_SECRET"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A variable (or flag) with a value that cannot be used; the text names it."""


@dataclass(frozen=True)
class EnvConfig:
    """What the environment configures.

    :ivar prefix: the URLs the adapter serves.
    :ivar adapter_kwargs: the :class:`~requests_bloxs_errors.BloxsAdapter` arguments.
    :ivar log_level: the level for the library's logger, or None to leave it.
    :ivar shown: each variable's value as the ``config`` command prints it
        (secrets masked), for the variables that are set.
    """

    prefix: str
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    log_level: int | None = None
    shown: dict[str, str] = field(default_factory=dict)


def config_from_env(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> EnvConfig:
    """Read the configuration; ``overrides`` (the ``run`` command's flags) win.

    :raises ConfigError: naming the first variable with a bad value.
    """
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})
    get = {name: source[name].strip() for name, _ in VARIABLES if name in source}
    kwargs: dict[str, Any] = {}
    if "RBE_MAX_RETRIES" in get:
        kwargs["max_retries"] = _whole("RBE_MAX_RETRIES", get["RBE_MAX_RETRIES"])
    if "RBE_DEADLINE" in get and get["RBE_DEADLINE"].lower() not in ("", "none"):
        kwargs["deadline"] = _seconds("RBE_DEADLINE", get["RBE_DEADLINE"], positive=True)
    if "RBE_MAX_RETRY_AFTER" in get:
        value = get["RBE_MAX_RETRY_AFTER"]
        none = value.lower() in ("none", "inf")
        kwargs["max_retry_after"] = None if none else _seconds("RBE_MAX_RETRY_AFTER", value)
    if "RBE_RAISE_ERRORS" in get:
        kwargs["raise_errors"] = _flag("RBE_RAISE_ERRORS", get["RBE_RAISE_ERRORS"])
    level = None
    if get.get("RBE_LOG_LEVEL"):
        name = get["RBE_LOG_LEVEL"].upper()
        if name not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"RBE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {name!r}")
        level = getattr(logging, name)
    rate_limit = _rate_limit(get)
    if rate_limit is not None:
        kwargs["rate_limit"] = rate_limit
    breaker = _circuit_breaker(get.get("RBE_CIRCUIT_BREAKER", ""))
    if breaker is not None:
        kwargs["circuit_breaker"] = breaker
    if get.get("RBE_OUTBOX"):
        try:
            kwargs["outbox"] = Outbox(get["RBE_OUTBOX"])
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"RBE_OUTBOX: {exc}") from None
    auth, home = credential_from(get)
    prefix = get.get("RBE_PREFIX") or (home + "/" if home else "https://")
    try:
        parsed = Prefix.parse(prefix)  # its messages never repeat a password or a query
    except ValueError as exc:
        raise ConfigError(f"RBE_PREFIX: {exc}") from None
    if auth is not None:
        kwargs["auth"] = auth
        if not parsed.names_host:
            example = f"{home}/" if home else "https://acme.bloxs.io/"
            raise ConfigError(
                f"RBE_PREFIX must name the host the credentials are for (such as {example}), "
                f"not {_shown(prefix)!r}"
            )
    shown = {name: _shown_value(name, value) for name, value in get.items()}
    return EnvConfig(prefix=prefix, adapter_kwargs=kwargs, log_level=level, shown=shown)


def install_from_env(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> EnvConfig:
    """:func:`~requests_bloxs_errors.install` as the environment says; return what was read.

    Usage::

        >>> rbe.install_from_env()   # RBE_*, BLOXS_*, DEALCLOUD_* variables

    :raises ConfigError: before installing anything, for a bad value.
    """
    config = config_from_env(environ, overrides)
    try:
        install(config.prefix, **config.adapter_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if config.log_level is not None:
        logger = logging.getLogger("requests_bloxs_errors")
        logger.setLevel(config.log_level)
        if not any(getattr(h, "_rbe_env", False) for h in logger.handlers):
            handler = logging.StreamHandler()
            handler._rbe_env = True  # type: ignore[attr-defined]
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
    return config


def credential_from(
    values: Mapping[str, str], default_origin: str | None = None
) -> tuple[Credential | None, str | None]:
    """The credential the ``BLOXS_*`` / ``DEALCLOUD_*`` values describe, and its origin.

    :param values: variable name to value (empty values count as unset).
    :param default_origin: where the API is when ``BLOXS_BASE_URL`` or
        ``DEALCLOUD_TOKEN_URL`` is not given (the ``request`` command passes
        its URL's); None makes them required.
    :return: ``(credential, origin)``, or ``(None, None)`` without credentials.
    :raises ConfigError: naming the variable at fault.
    """
    get = {name: value.strip() for name, value in values.items() if value and value.strip()}
    cache = get.get("RBE_TOKEN_CACHE")
    if cache:
        try:
            parse_storage(cache, what="RBE_TOKEN_CACHE", capability=TokenStore)
        except (ValueError, ImportError) as exc:
            raise ConfigError(str(exc)) from None
    credential, home = _credential(get, default_origin, cache)
    if cache and credential is None:
        raise ConfigError("RBE_TOKEN_CACHE needs credentials (BLOXS_* or DEALCLOUD_* variables)")
    return credential, home


def _credential(
    get: Mapping[str, str], default_origin: str | None, cache: str | None
) -> tuple[Credential | None, str | None]:
    key, secret = get.get("BLOXS_API_KEY"), get.get("BLOXS_API_SECRET")
    client, client_secret = get.get("DEALCLOUD_CLIENT_ID"), get.get("DEALCLOUD_CLIENT_SECRET")
    if key or secret:
        if not (key and secret):
            raise ConfigError("BLOXS_API_KEY and BLOXS_API_SECRET must be set together")
        hmac = _flag("BLOXS_HMAC", get.get("BLOXS_HMAC", "0"))
        if hmac and cache:
            raise ConfigError("RBE_TOKEN_CACHE has no use with BLOXS_HMAC=1: HMAC needs no token")
        base = get.get("BLOXS_BASE_URL") or default_origin
        if base is None:
            raise ConfigError(
                "BLOXS_BASE_URL must be set with BLOXS_API_KEY (the API the credentials are for)"
            )
        home = _endpoint("BLOXS_BASE_URL", base)
        if hmac:
            return BloxsHmacAuth(key, secret), home
        return _made(
            "RBE_TOKEN_CACHE", lambda: BloxsTokenAuth(base, key, secret, cache=cache)
        ), home
    if client or client_secret:
        token_url = get.get("DEALCLOUD_TOKEN_URL") or (
            default_origin + DEALCLOUD_TOKEN_PATH if default_origin else None
        )
        if not (client and client_secret and token_url):
            raise ConfigError(
                "DEALCLOUD_TOKEN_URL, DEALCLOUD_CLIENT_ID and DEALCLOUD_CLIENT_SECRET "
                "must be set together"
            )
        home = _endpoint("DEALCLOUD_TOKEN_URL", token_url)
        scope = get.get("DEALCLOUD_SCOPE") or None
        return _made(
            "RBE_TOKEN_CACHE",
            lambda: ClientCredentialsAuth(
                token_url, client, client_secret, scope=scope, cache=cache
            ),
        ), home
    return None, None


def _made(name: str, make: Any) -> Any:
    """``make()``; its ValueError or ImportError (once the URLs are checked: the
    token cache's) is a :class:`ConfigError` naming ``name``."""
    try:
        return make()
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _endpoint(name: str, url: str) -> str:
    """The origin of the URL in variable ``name``; a :class:`ConfigError` naming it
    when the URL cannot serve as a credential's endpoint."""
    home = _origin(name, url)
    try:
        Prefix.parse(url)  # (its messages never repeat a password)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("prefix "):  # "prefix must not contain credentials ..."
            message = message[len("prefix ") :]
        raise ConfigError(f"{name} {message}") from None
    return home


def _circuit_breaker(value: str) -> CircuitBreaker | None:
    """``RBE_CIRCUIT_BREAKER``: on, off, or ``FAILURES/OPEN_SECONDS``."""
    lowered = value.lower()
    if lowered in _FALSE or lowered == "none":
        return None
    if lowered in _TRUE:
        return CircuitBreaker()
    failures, sep, seconds = value.partition("/")
    try:
        return CircuitBreaker(int(failures), float(seconds) if sep else 30.0)
    except ValueError:
        raise ConfigError(
            "RBE_CIRCUIT_BREAKER must be on, off, or FAILURES/OPEN_SECONDS such as 5/30; "
            f"not {_shown(value)!r}"
        ) from None


def _rate_limit(get: Mapping[str, str]) -> RateLimit | None:
    """The ``RBE_RATE_LIMIT`` / ``RBE_STORAGE`` pair, or None."""
    spec = get.get("RBE_RATE_LIMIT", "")
    storage = get.get("RBE_STORAGE") or "memory://"
    if spec.lower() in ("", "none"):
        if get.get("RBE_STORAGE"):
            raise ConfigError("RBE_STORAGE needs RBE_RATE_LIMIT (bloxs, dealcloud, 5/second)")
        return None
    try:
        parse_storage(storage, what="RBE_STORAGE", capability=PermitLog)
    except (ValueError, ImportError) as exc:
        raise ConfigError(str(exc)) from None
    if spec.lower() == "bloxs":
        return RateLimit.bloxs(storage=storage)
    if spec.lower() == "dealcloud":
        return RateLimit.dealcloud(storage=storage)
    try:
        return RateLimit({"*": spec}, storage=storage)
    except ValueError:
        raise ConfigError(
            "RBE_RATE_LIMIT must be bloxs, dealcloud, none, or a rule such as 5/second, "
            f"100/minute or 8/1.5s; not {_shown(spec)!r}"
        ) from None


def _origin(name: str, url: str) -> str:
    try:
        found = origin(url)
    except ValueError:
        found = ""
    if not found.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, not {redact_url(url)!r}")
    return found


def _whole(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must be 0 or more, not {number}")
    return number


def _seconds(name: str, value: str, *, positive: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ConfigError(f"{name} must be {'above' if positive else 'at least'} 0, not {value}")
    return number


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1 or 0, not {value!r}")


def _shown_value(name: str, value: str) -> str:
    """A variable's value as ``config`` prints it: secrets masked, the API key cut to
    its first characters (as the credential's repr shows it)."""
    if name in _SECRETS and value:
        return "***"
    if name == "BLOXS_API_KEY":
        return masked(value)
    return _shown(value)


def _shown(value: str) -> str:
    """A value fit to print: a URL loses its credentials and query string."""
    try:
        named = bool(urlsplit(value).hostname)
    except ValueError:
        named = False
    return redact_url(value) if named else safe_for_message(value).strip("'")
