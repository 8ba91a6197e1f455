"""Configuration from the environment: :func:`install_from_env` and the ``run`` command.

Every variable is one row of :data:`~.settings.SETTINGS`, with the one
parser that reads it; :data:`VARIABLES` is the same list as help shows it
(``run --help``, ``config`` and the documentation). A bad value is a
:class:`ConfigError` naming the variable, raised before anything is
installed. This module puts the parsed values together: the adapters to
mount, and the log level.
"""

from __future__ import annotations

import difflib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..credentials.auth import Credential
from ..credentials.providers import (
    DEALCLOUD_TOKEN_PATH,
    BloxsHmacAuth,
    BloxsTokenAuth,
    ClientCredentialsAuth,
)
from ..patch import install_mounts
from ..resilience.ratelimit import RateLimit
from ..storage import missing_extra
from ..storage import parse as parse_storage
from ..telemetry import otel_installed
from ..urls import Prefix, origin, redact_url
from ._times import LOG_DATEFMT
from .settings import (
    DEFAULT_PREFIX,
    OFF,
    RUN_LOG_LEVEL,
    SETTINGS,
    ConfigError,
    Variable,
    parsed,
    setting,
)

__all__ = [
    "LOG_FORMAT",
    "PREFIXES",
    "RUN_DEFAULTS",
    "VARIABLES",
    "ConfigError",
    "EnvConfig",
    "Variable",
    "config_from_env",
    "credential_from",
    "credentials_from",
    "install_from_env",
    "shown_prefix",
]

#: Every variable ``run``, ``config`` and :func:`install_from_env` read, as help
#: shows it: name, what it sets, default.
VARIABLES: tuple[Variable, ...] = tuple(s.variable for s in SETTINGS)
#: The prefixes of the names this project reads: an unknown name with one of them
#: is named in a warning, with the closest known one.
PREFIXES = ("RBE_", "BLOXS_", "DEALCLOUD_")
_KNOWN = frozenset(v.name for v in VARIABLES)
#: The variables :func:`credentials_from` reads (and parses, each with its own parser).
_CREDENTIALS = frozenset(
    v.name for v in VARIABLES if v.name.startswith(("BLOXS_", "DEALCLOUD_", "RBE_TOKEN_CACHE"))
)
#: What ``run`` (and ``config``, which shows what ``run`` would do) assume where the
#: environment says nothing.
RUN_DEFAULTS = {"RBE_LOG_LEVEL": RUN_LOG_LEVEL}
#: How ``run`` writes the adapter's log lines: the time first (ISO 8601, UTC, as
#: every time the tools print), as cron logs need.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class EnvConfig:
    """What the environment configures.

    :ivar mounts: ``(prefix, adapter arguments)`` for each adapter to install:
        one, or one per vendor when both vendors' credentials are set.
    :ivar log_level: the level for the library's logger, or None to leave it.
    :ivar shown: each variable's value as the ``config`` command prints it
        (secrets masked), for the variables the environment (or a flag) sets;
        a variable not in it holds its default.
    :ivar warnings: one line per variable that is not one of :data:`VARIABLES`
        (a misspelt name), with the closest known name; and one when
        ``RBE_TELEMETRY`` asks for telemetry the ``otel`` extra is missing for.
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
    ``defaults`` hold where nothing is set (``run``'s log level, :data:`RUN_DEFAULTS`).
    An empty value is the same as an unset one.

    :raises ConfigError: naming the first variable with a bad value.
    """
    source = dict(os.environ if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v is not None})
    given = {v.name: source[v.name].strip() for v in VARIABLES if source.get(v.name, "").strip()}
    used = {**{k: v for k, v in (defaults or {}).items() if k not in given}, **given}
    values = {name: parsed(name, value) for name, value in used.items() if name not in _CREDENTIALS}
    kwargs: dict[str, Any] = {}
    for name, argument in _ARGUMENTS.items():
        if name in values:
            kwargs[argument] = values[name]
    if values.get("RBE_DEADLINE") is None:
        kwargs.pop("deadline", None)  # "none": the adapter's default
    rate_limit = _rate_limit(values)
    if rate_limit is not None:
        kwargs["rate_limit"] = rate_limit
    for name, argument in (("RBE_CIRCUIT_BREAKER", "circuit_breaker"), ("RBE_OUTBOX", "outbox")):
        if values.get(name) is not None:
            kwargs[argument] = values[name]
    if rate_limit is None and "RBE_STORAGE" in values:  # (where the circuits are published)
        breaker = kwargs.get("circuit_breaker")
        if breaker is None:
            raise ConfigError(
                "RBE_STORAGE needs RBE_RATE_LIMIT (bloxs, dealcloud, 5/second) or "
                "RBE_CIRCUIT_BREAKER (its circuits are published there for status)"
            )
        breaker.publish_to(parse_storage(values["RBE_STORAGE"], what="RBE_STORAGE"))
    if "RBE_ALERT" in values:
        if not ({"circuit_breaker", "outbox"} & kwargs.keys()):
            raise ConfigError(
                "RBE_ALERT needs RBE_CIRCUIT_BREAKER or RBE_OUTBOX: alerts come from them"
            )
        kwargs["on_alert"] = values["RBE_ALERT"]
    warnings = list(unknown_variables(source))
    if values.get("RBE_TELEMETRY") is False:
        kwargs["telemetry"] = False
    elif values.get("RBE_TELEMETRY"):
        if otel_installed():
            kwargs["telemetry"] = True
        else:  # the script runs on, without it: said once, never silently
            missing = missing_extra(
                "otel", "opentelemetry-api", "RBE_TELEMETRY=" + used["RBE_TELEMETRY"]
            )
            warnings.append(f"{missing}; telemetry stays off")
            kwargs["telemetry"] = False  # (said here: the adapter need not say it again)
    mounts = _mounts(used.get("RBE_PREFIX"), credentials_from(used), kwargs)
    shown = {name: setting(name).shown(value) for name, value in given.items()}
    return EnvConfig(
        mounts=mounts,
        log_level=values.get("RBE_LOG_LEVEL"),
        shown=shown,
        warnings=tuple(warnings),
    )


#: The variables that set one adapter argument each, as their parser reads them.
_ARGUMENTS = {
    "RBE_MAX_RETRIES": "max_retries",
    "RBE_DEADLINE": "deadline",
    "RBE_MAX_RETRY_AFTER": "max_retry_after",
    "RBE_RAISE_ERRORS": "raise_errors",
}


def _rate_limit(values: Mapping[str, Any]) -> RateLimit | None:
    """``RBE_RATE_LIMIT`` with its ``RBE_STORAGE`` and ``RBE_MAX_WAIT``, or None."""
    spec = values.get("RBE_RATE_LIMIT")
    if spec is None:
        if "RBE_MAX_WAIT" in values:
            raise ConfigError("RBE_MAX_WAIT needs RBE_RATE_LIMIT (bloxs, dealcloud, 5/second)")
        return None
    options: dict[str, Any] = {}
    if "RBE_STORAGE" in values:
        options["storage"] = values["RBE_STORAGE"]
    if "RBE_MAX_WAIT" in values:
        options["max_wait"] = values["RBE_MAX_WAIT"]
    if spec == "bloxs":
        return RateLimit.bloxs(**options)
    if spec == "dealcloud":
        return RateLimit.dealcloud(**options)
    return RateLimit({"*": spec}, **options)


def shown_prefix(prefix: str) -> str:
    """A mount's prefix as a message shows it: ``https://`` as it is, a URL without
    its credentials and query string."""
    try:
        names_host = Prefix.parse(prefix).names_host
    except ValueError:
        names_host = True
    return redact_url(prefix) if names_host else prefix


def _mounts(
    given: str | None, credentials: list[tuple[Credential, str]], kwargs: dict[str, Any]
) -> tuple[tuple[str, dict[str, Any]], ...]:
    """Where each adapter goes: ``RBE_PREFIX`` without credentials; with them, each
    credential on its API's origin (``RBE_PREFIX`` may narrow one of them)."""
    names_host = given is not None and Prefix.parse(given).names_host  # (RBE_PREFIX's parser
    # has read it)
    if not credentials:
        return ((given or DEFAULT_PREFIX, kwargs),)
    mounts = []
    matched = given is None
    for credential, home in credentials:
        prefix = home + "/"
        if given is not None and names_host and origin(given) == home:
            prefix, matched = given, True
        mounts.append((prefix, {**kwargs, "auth": credential}))
    if not matched:
        homes = " and ".join(home for _, home in credentials)
        raise ConfigError(
            f"RBE_PREFIX {shown_prefix(given or '')!r} is not under the API the credentials are "
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
    its time in ISO 8601, UTC (``2026-12-07T20:12:50Z``); a misspelt variable is
    named in a WARNING there, and so is ``RBE_TELEMETRY=on`` without the ``otel``
    extra.

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
            formatter = logging.Formatter(LOG_FORMAT, LOG_DATEFMT)
            formatter.converter = time.gmtime  # UTC, as LOG_DATEFMT's "Z" says
            handler.setFormatter(formatter)
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
    cache = parsed("RBE_TOKEN_CACHE", get["RBE_TOKEN_CACHE"]) if "RBE_TOKEN_CACHE" in get else None
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
    hmac = parsed("BLOXS_HMAC", get["BLOXS_HMAC"]) if "BLOXS_HMAC" in get else False
    if hmac and cache:
        raise ConfigError("RBE_TOKEN_CACHE has no use with BLOXS_HMAC=on: HMAC needs no token")
    if "BLOXS_BASE_URL" in get:
        base = parsed("BLOXS_BASE_URL", get["BLOXS_BASE_URL"])
    elif default_origin is not None:
        base = default_origin
    else:
        raise ConfigError(
            "BLOXS_BASE_URL must be set with BLOXS_API_KEY (the API the credentials are for)"
        )
    home = origin(base)
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
    if "DEALCLOUD_TOKEN_URL" in get:
        parsed("DEALCLOUD_TOKEN_URL", token_url)
    home = origin(token_url)
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
