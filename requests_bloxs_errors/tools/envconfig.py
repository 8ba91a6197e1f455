"""Configuration from the environment: :func:`install_from_env` and the ``run`` command.

Every variable is listed once, in :data:`VARIABLES`; the README's table and
the ``config`` command show the same list. A bad value is a
:class:`ConfigError` naming the variable, raised before anything is
installed.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from ..credentials.auth import Credential
from ..credentials.providers import (
    DEALCLOUD_TOKEN_PATH,
    BloxsHmacAuth,
    BloxsTokenAuth,
    ClientCredentialsAuth,
    masked,
)
from ..patch import install_mounts
from ..resilience.breaker import CircuitBreaker
from ..resilience.outbox import Outbox
from ..resilience.ratelimit import RateLimit
from ..storage import OutboxStore, PermitLog, TokenStore, accepted
from ..storage import parse as parse_storage
from ..urls import Prefix, origin, redact_url, safe_for_message

__all__ = [
    "PREFIXES",
    "VARIABLES",
    "ConfigError",
    "EnvConfig",
    "Variable",
    "config_from_env",
    "credential_from",
    "credentials_from",
    "install_from_env",
]


class Variable(NamedTuple):
    """One variable: its name, what it sets, and what holds when it is not set."""

    name: str
    what: str
    default: str


#: Every variable ``run``, ``config`` and :func:`install_from_env` read.
VARIABLES: tuple[Variable, ...] = (
    Variable("RBE_PREFIX", "the URLs to serve", "https://; with credentials, their API's origin"),
    Variable("RBE_MAX_RETRIES", "retries per call", "3"),
    Variable("RBE_DEADLINE", "seconds for a whole call, or none", "none"),
    Variable("RBE_MAX_RETRY_AFTER", "the longest Retry-After waited for, seconds, or none", "60"),
    Variable("RBE_RAISE_ERRORS", "1 to raise the typed error from the call", "0"),
    Variable(
        "RBE_LOG_LEVEL",
        "the adapter's log lines on stderr, with an ISO 8601 time: DEBUG, INFO, WARNING, "
        "ERROR, or OFF",
        "WARNING under run (elsewhere: logging as the program set it)",
    ),
    Variable(
        "RBE_RATE_LIMIT",
        "pace requests: bloxs, dealcloud, or one rule for all, such as 5/second",
        "none",
    ),
    Variable(
        "RBE_STORAGE",
        f"where the limit is shared: {accepted(PermitLog)}",
        "memory://",
    ),
    Variable(
        "RBE_TOKEN_CACHE",
        f"share one token among processes: {accepted(TokenStore)}",
        "none (each process its own)",
    ),
    Variable(
        "RBE_CIRCUIT_BREAKER",
        "fail fast while a host keeps failing: on, off, or FAILURES/OPEN_SECONDS such as 5/30",
        "off (on means 5/30)",
    ),
    Variable("RBE_OUTBOX", f"keep failed writes for a replay: {accepted(OutboxStore)}", "none"),
    Variable(
        "RBE_TELEMETRY",
        "spans and metrics to OpenTelemetry's global providers: on or off (every adapter "
        "reads it, not only run's)",
        "on when the otel extra is installed",
    ),
    Variable(
        "BLOXS_BASE_URL",
        "the Bloxs environment's origin, such as https://acme.bloxs.io (no path)",
        "none",
    ),
    Variable("BLOXS_API_KEY", "the Bloxs API key", "none"),
    Variable("BLOXS_API_SECRET", "the Bloxs API secret", "none"),
    Variable("BLOXS_HMAC", "1 to sign with the Bloxs v1 HMAC scheme instead of tokens", "0"),
    Variable("DEALCLOUD_TOKEN_URL", "the DealCloud token endpoint", "none"),
    Variable("DEALCLOUD_CLIENT_ID", "the DealCloud client id", "none"),
    Variable("DEALCLOUD_CLIENT_SECRET", "the DealCloud client secret", "none"),
    Variable("DEALCLOUD_SCOPE", "the DealCloud scopes, such as 'data'", "none"),
)
#: The prefixes of the names this project reads: an unknown name with one of them
#: is named in a warning, with the closest known one.
PREFIXES = ("RBE_", "BLOXS_", "DEALCLOUD_")
_KNOWN = frozenset(v.name for v in VARIABLES)
_SECRETS = frozenset({"BLOXS_API_SECRET", "DEALCLOUD_CLIENT_SECRET"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
#: RBE_LOG_LEVEL=OFF: above every level the library logs at.
OFF = logging.CRITICAL + 10
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING}
_LEVELS |= {"ERROR": logging.ERROR, "OFF": OFF}
#: How ``run`` writes the adapter's log lines: an ISO 8601 time first, as cron logs need.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_TIME = "%Y-%m-%dT%H:%M:%S%z"


class ConfigError(ValueError):
    """A variable (or flag) with a value that cannot be used; the text names it."""


@dataclass(frozen=True)
class EnvConfig:
    """What the environment configures.

    :ivar mounts: ``(prefix, adapter arguments)`` for each adapter to install:
        one, or one per vendor when both vendors' credentials are set.
    :ivar log_level: the level for the library's logger, or None to leave it.
    :ivar shown: each variable's value as the ``config`` command prints it
        (secrets masked), for the variables that are set.
    :ivar warnings: one line per variable that is not one of :data:`VARIABLES`
        (a misspelt name), with the closest known name.
    """

    mounts: tuple[tuple[str, dict[str, Any]], ...]
    log_level: int | None = None
    shown: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        """The first mount's prefix."""
        return self.mounts[0][0]

    @property
    def adapter_kwargs(self) -> dict[str, Any]:
        """The first mount's adapter arguments."""
        return self.mounts[0][1]


def config_from_env(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> EnvConfig:
    """Read the configuration; ``overrides`` (the ``run`` command's flags) win, and
    ``defaults`` hold where nothing is set (``run``'s log level).

    :raises ConfigError: naming the first variable with a bad value.
    """
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for name, value in (defaults or {}).items():
        source.setdefault(name, value)
    get = {v.name: source[v.name].strip() for v in VARIABLES if v.name in source}
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
        if name not in _LEVELS:
            raise ConfigError(
                f"RBE_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or OFF, not {name!r}"
            )
        level = _LEVELS[name]
    rate_limit = _rate_limit(get)
    if rate_limit is not None:
        kwargs["rate_limit"] = rate_limit
    breaker = _circuit_breaker(get.get("RBE_CIRCUIT_BREAKER", ""))
    if breaker is not None:
        kwargs["circuit_breaker"] = breaker
    if "RBE_TELEMETRY" in get and not _flag("RBE_TELEMETRY", get["RBE_TELEMETRY"]):
        kwargs["telemetry"] = False
    if get.get("RBE_OUTBOX"):
        try:
            parse_storage(get["RBE_OUTBOX"], what="RBE_OUTBOX", capability=OutboxStore)
        except ValueError as exc:  # the message names RBE_OUTBOX and what it accepts
            raise ConfigError(str(exc)) from None
        except ImportError as exc:  # a registered backend whose package is missing
            raise ConfigError(f"RBE_OUTBOX: {exc}") from None
        try:
            kwargs["outbox"] = Outbox(get["RBE_OUTBOX"])
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"RBE_OUTBOX: {exc}") from None
    mounts = _mounts(get.get("RBE_PREFIX"), credentials_from(get), kwargs)
    shown = {name: _shown_value(name, value) for name, value in get.items()}
    return EnvConfig(
        mounts=mounts, log_level=level, shown=shown, warnings=unknown_variables(source)
    )


def _mounts(
    given: str | None, credentials: list[tuple[Credential, str]], kwargs: dict[str, Any]
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Where each adapter goes: ``RBE_PREFIX`` without credentials; with them, each
    credential on its API's origin (``RBE_PREFIX`` may narrow one of them)."""
    if given is not None:
        try:
            parsed = Prefix.parse(given)  # its messages never repeat a password or a query
        except ValueError as exc:
            raise ConfigError(f"RBE_PREFIX: {exc}") from None
    if not credentials:
        return ((given or "https://", kwargs),)
    mounts = []
    matched = given is None
    for credential, home in credentials:
        prefix = home + "/"
        if given is not None and parsed.names_host and origin(given) == home:
            prefix, matched = given, True
        mounts.append((prefix, {**kwargs, "auth": credential}))
    if not matched:
        homes = " and ".join(home for _, home in credentials)
        raise ConfigError(
            f"RBE_PREFIX {_shown(given or '')!r} is not under the API the credentials are "
            f"for ({homes}): they would never be used; leave RBE_PREFIX out, or set it to "
            f"{credentials[0][1]}/"
        )
    return tuple(mounts)


def unknown_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """One line per variable named like this project's (``RBE_``, ``BLOXS_``,
    ``DEALCLOUD_``) that it does not read, with the closest name it does."""
    lines = []
    for name in sorted(environ):
        if not name.startswith(PREFIXES) or name in _KNOWN:
            continue
        close = difflib.get_close_matches(name, sorted(_KNOWN), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{name} is not a variable of requests-bloxs-errors and is ignored{hint}")
    return tuple(lines)


def install_from_env(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> EnvConfig:
    """:func:`~requests_bloxs_errors.install` as the environment says; return what was read.

    Usage::

        >>> rbe.install_from_env()   # RBE_*, BLOXS_*, DEALCLOUD_* variables

    With ``RBE_LOG_LEVEL`` set, the library's log lines go to stderr, each with
    an ISO 8601 time; a misspelt variable is named in a WARNING there.

    :raises ConfigError: before installing anything, for a bad value.
    """
    config = config_from_env(environ, overrides, defaults)
    try:
        install_mounts(config.mounts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    logger = logging.getLogger("requests_bloxs_errors")
    if config.log_level is not None:
        logger.setLevel(config.log_level)
        if config.log_level < OFF and not any(
            getattr(h, "_rbe_env", False) for h in logger.handlers
        ):
            handler = logging.StreamHandler()
            handler._rbe_env = True  # type: ignore[attr-defined]
            handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_TIME))
            logger.addHandler(handler)
    for line in config.warnings:
        logger.warning("%s", line)
    return config


def credential_from(
    values: Mapping[str, str], default_origin: str | None = None
) -> tuple[Credential | None, str | None]:
    """The first credential :func:`credentials_from` finds, and its origin; ``(None,
    None)`` without credentials."""
    found = credentials_from(values, default_origin)
    return found[0] if found else (None, None)


def credentials_from(
    values: Mapping[str, str], default_origin: str | None = None
) -> list[tuple[Credential, str]]:
    """The credentials the ``BLOXS_*`` and ``DEALCLOUD_*`` values describe (none, one,
    or both vendors'), each with the origin of the API it is for.

    :param values: variable name to value (empty values count as unset).
    :param default_origin: where the API is when ``BLOXS_BASE_URL`` or
        ``DEALCLOUD_TOKEN_URL`` is not given (the ``request`` command passes
        its URL's); None makes them required.
    :raises ConfigError: naming the variable at fault.
    """
    get = {name: value.strip() for name, value in values.items() if value and value.strip()}
    cache = get.get("RBE_TOKEN_CACHE")
    if cache:
        try:
            parse_storage(cache, what="RBE_TOKEN_CACHE", capability=TokenStore)
        except (ValueError, ImportError) as exc:
            raise ConfigError(str(exc)) from None
    found = [
        credential
        for credential in (
            _bloxs(get, default_origin, cache),
            _dealcloud(get, default_origin, cache),
        )
        if credential is not None
    ]
    if cache and not found:
        raise ConfigError("RBE_TOKEN_CACHE needs credentials (BLOXS_* or DEALCLOUD_* variables)")
    homes = [home for _, home in found]
    if len(set(homes)) < len(homes):
        raise ConfigError(
            f"BLOXS_* and DEALCLOUD_* credentials are both for {homes[0]}: set "
            "BLOXS_BASE_URL and DEALCLOUD_TOKEN_URL to each API's own address"
        )
    return found


def _bloxs(
    get: Mapping[str, str], default_origin: str | None, cache: str | None
) -> tuple[Credential, str] | None:
    key, secret = get.get("BLOXS_API_KEY"), get.get("BLOXS_API_SECRET")
    if not (key or secret):
        return None
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
    path = urlsplit(base).path.strip("/")
    if path:
        raise ConfigError(
            f"BLOXS_BASE_URL must be the environment's origin, such as {home}, without a "
            f"path: the token endpoint is {home}/Authorization, and /{path}/Authorization "
            "is not it"
        )
    if hmac:
        return BloxsHmacAuth(key, secret), home
    credential = _made("RBE_TOKEN_CACHE", lambda: BloxsTokenAuth(base, key, secret, cache=cache))
    return credential, home


def _dealcloud(
    get: Mapping[str, str], default_origin: str | None, cache: str | None
) -> tuple[Credential, str] | None:
    client, client_secret = get.get("DEALCLOUD_CLIENT_ID"), get.get("DEALCLOUD_CLIENT_SECRET")
    if not (client or client_secret):
        return None
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
    credential = _made(
        "RBE_TOKEN_CACHE",
        lambda: ClientCredentialsAuth(token_url, client, client_secret, scope=scope, cache=cache),
    )
    return credential, home


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
    raise ConfigError(f"{name} must be 1 or 0 (or on and off), not {value!r}")


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
