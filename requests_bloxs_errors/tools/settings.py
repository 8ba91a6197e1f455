"""The variables ``run`` reads: one :class:`Setting` each, with its one parser and its default.

Every ``RBE_*``, ``BLOXS_*`` and ``DEALCLOUD_*`` variable is read by the
parser its row names, wherever it is read: ``run``,
:func:`~requests_bloxs_errors.install_from_env`, ``config``, ``request`` and
``outbox replay`` (the credential variables). ``run --help``, ``config`` and
the documentation print the same rows, and each default they show is taken
from the value the library itself uses (a named constant, or the default of
the argument the variable sets), never retyped.

An empty value is the same as an unset one, for every variable. An on/off
variable takes one spelling list, :data:`SWITCH_WORDS`, everywhere.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .. import switches
from ..credentials.providers import masked
from ..patch import install
from ..pipeline.retry import DEFAULT_MAX_RETRY_AFTER, DEFAULT_RETRIES
from ..resilience.breaker import DEFAULT_FAILURES, DEFAULT_OPEN_FOR, CircuitBreaker
from ..resilience.outbox import Outbox
from ..resilience.ratelimit import DEFAULT_MAX_WAIT, RateLimit, parse_rule
from ..storage import OutboxStore, PermitLog, TokenStore, accepted, schemes
from ..storage import parse as parse_storage
from ..storage.windows import MAX_PAUSE
from ..switches import OFF_WORDS, ON_WORDS, SWITCH_WORDS
from ..urls import Prefix, redact_url, safe_for_message
from .alert_target import alert_shown, alert_target

__all__ = [
    "DEFAULT_PREFIX",
    "LEVELS",
    "LEVEL_WORDS",
    "OFF",
    "OFF_WORDS",
    "ON_WORDS",
    "RUN_LOG_LEVEL",
    "SETTINGS",
    "SWITCH_WORDS",
    "ConfigError",
    "Setting",
    "Variable",
    "parsed",
    "setting",
    "shared_token_stores",
]


class ConfigError(ValueError):
    """A variable (or flag) with a value that cannot be used; the text names it."""


#: ``RBE_LOG_LEVEL=OFF``: above every level the library logs at.
OFF = logging.CRITICAL + 10
#: The levels ``RBE_LOG_LEVEL`` (and ``run --log-level``) take.
LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "OFF": OFF,
}
LEVEL_WORDS = ", ".join(list(LEVELS)[:-1]) + f" or {list(LEVELS)[-1]}"
#: ``run``'s level where ``RBE_LOG_LEVEL`` says nothing: it speaks, so a fleet
#: that loses its shared state hears of it.
RUN_LOG_LEVEL = "WARNING"

#: A parser: ``(variable name, its value, stripped and not empty)`` to what the
#: value sets; a :class:`ConfigError` naming the variable when it cannot be used.
Parse = Callable[[str, str], Any]


class Variable(NamedTuple):
    """One variable as help and the documentation show it: its name, what it
    sets, and what holds when it is not set."""

    name: str
    what: str
    default: str


@dataclass(frozen=True)
class Setting:
    """One variable: its name, what it sets, its default as shown, its parser, and
    how ``config`` shows a value of it (secrets masked, URLs without credentials)."""

    name: str
    what: str
    default: str
    parse: Parse
    shown: Callable[[str], str]

    @property
    def variable(self) -> Variable:
        return Variable(self.name, self.what, self.default)


def _default_of(function: Callable[..., Any], argument: str) -> Any:
    """The default of ``function``'s ``argument``: the value the library uses when
    nothing is given (for an argument whose default has no constant of its own)."""
    return inspect.signature(function).parameters[argument].default


# -- parsers ------------------------------------------------------------------------------


def switch(name: str, value: str) -> bool:
    """An on/off variable: one of :data:`~..switches.ON_WORDS` or
    :data:`~..switches.OFF_WORDS` (the list every reader of one shares)."""
    try:
        return switches.switch(name, value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _text(name: str, value: str) -> str:
    return value


def _whole(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {_shown(value)!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must be 0 or more, not {number}")
    return number


def _seconds(
    name: str, value: str, what: str, *, positive: bool = False, highest: float = math.inf
) -> float:
    """A number of seconds: 0 or more (above 0 when ``positive``), at most ``highest``."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    low_enough = number <= highest and math.isfinite(number)
    if not (low_enough and (number > 0 if positive else number >= 0)):
        raise ConfigError(f"{name} must be {what}, not {_shown(value)!r}")
    return number


def _deadline(name: str, value: str) -> float | None:
    if value.lower() == "none":
        return None
    return _seconds(name, value, "a number of seconds above 0, or none", positive=True)


def _max_retry_after(name: str, value: str) -> float | None:
    if value.lower() in ("none", "inf"):
        return None
    return _seconds(name, value, "a number of seconds, 0 or more, or none")


def _max_wait(name: str, value: str) -> float:
    return _seconds(name, value, f"a number of seconds from 0 to {MAX_PAUSE:g}", highest=MAX_PAUSE)


def _level(name: str, value: str) -> int:
    if value.upper() not in LEVELS:
        raise ConfigError(f"{name} must be {LEVEL_WORDS}, not {_shown(value)!r}")
    return LEVELS[value.upper()]


def _prefix(name: str, value: str) -> str:
    try:
        Prefix.parse(value)  # its messages never repeat a password or a query
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def _rate_limit(name: str, value: str) -> str | None:
    """``bloxs``, ``dealcloud``, ``none`` (None) or one rule for every request."""
    lowered = value.lower()
    if lowered == "none":
        return None
    if lowered in ("bloxs", "dealcloud"):
        return lowered
    try:
        parse_rule("*", value)
    except ValueError:
        raise ConfigError(
            f"{name} must be bloxs, dealcloud, none, or a rule such as 5/second, "
            f"100/minute or 8/1.5s; not {_shown(value)!r}"
        ) from None
    return value


def _store(capability: type) -> Callable[[str, str], str]:
    """A storage URL whose backend offers ``capability``."""

    def parse(name: str, value: str) -> str:
        try:
            parse_storage(value, what=name, capability=capability)
        except ValueError as exc:  # the message names the variable and what it accepts
            raise ConfigError(str(exc)) from None
        except ImportError as exc:  # a backend whose package is missing
            raise ConfigError(f"{name}: {exc}") from None
        return value

    return parse


def _token_cache(name: str, value: str) -> str:
    """A token store that shares among processes: ``memory://`` shares nothing there
    (each process keeps its own token without a cache), so it is not one of them."""
    scheme = value.partition("://")[0].lower()
    if scheme not in [form.partition("://")[0] for form in shared_token_stores()]:
        raise ConfigError(
            f"{name} must be {_phrase(shared_token_stores())}; got {safe_for_message(value)}"
            + (" (it shares nothing among processes)" if scheme == "memory" else "")
        )
    return _store(TokenStore)(name, value)


def _outbox(name: str, value: str) -> Outbox:
    _store(OutboxStore)(name, value)
    try:
        return Outbox(value)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _circuit_breaker(name: str, value: str) -> CircuitBreaker | None:
    """On (the breaker's defaults), off (None), or ``FAILURES/OPEN_SECONDS``."""
    lowered = value.lower()
    if lowered in OFF_WORDS:
        return None
    if lowered in ON_WORDS:
        return CircuitBreaker()
    failures, sep, seconds = value.partition("/")
    try:
        if not sep:
            raise ValueError(value)
        return CircuitBreaker(int(failures), float(seconds))
    except ValueError:
        raise ConfigError(
            f"{name} must be {SWITCH_WORDS}, or FAILURES/OPEN_SECONDS such as "
            f"{_BREAKER_DEFAULT}; not {_shown(value)!r}"
        ) from None


def _alert(name: str, value: str) -> Callable[[Any], object]:
    try:
        return alert_target(value, what=name)
    except ValueError as exc:  # the message names the variable
        raise ConfigError(str(exc)) from None


def _url(name: str, value: str) -> str:
    """An http:// or https:// URL naming a host, without credentials, query or fragment."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http:// or https:// URL, not {redact_url(value)!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{name} must not contain credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not contain a query string or a fragment")
    return value


def _bloxs_base_url(name: str, value: str) -> str:
    """The Bloxs environment's origin: an http(s) URL without a path."""
    _url(name, value)
    parts = urlsplit(value)
    path = parts.path.strip("/")
    if path:
        home = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
        raise ConfigError(
            f"{name} must be the environment's origin, such as {home}, without a "
            f"path: the token endpoint is {home}/Authorization, and /{path}/Authorization "
            "is not it"
        )
    return value


# -- how config shows a value -------------------------------------------------------------


def _shown(value: str) -> str:
    """A value fit to print: a URL loses its credentials and query string."""
    try:
        named = bool(urlsplit(value).hostname)
    except ValueError:
        named = False
    return redact_url(value) if named else safe_for_message(value).strip("'")


def _secret(value: str) -> str:
    return "***"


def _phrase(forms: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return forms[0] if len(forms) == 1 else f"{', '.join(forms[:-1])} or {forms[-1]}"


def shared_token_stores() -> list[str]:
    """What ``RBE_TOKEN_CACHE`` accepts, as messages write it: every token store but
    ``memory://``, which shares nothing among processes."""
    return [form for form in schemes(TokenStore) if not form.startswith("memory://")]


#: The URLs the adapter serves when ``RBE_PREFIX`` is not set (and no credentials are).
DEFAULT_PREFIX: str = _default_of(install, "prefix")
_BREAKER_DEFAULT = f"{DEFAULT_FAILURES}/{DEFAULT_OPEN_FOR:g}"

#: Every variable ``run``, ``config`` and :func:`~.envconfig.install_from_env` read,
#: in the order help lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "RBE_PREFIX",
        "the URLs to serve",
        f"{DEFAULT_PREFIX}; with credentials, their API's origin",
        _prefix,
        _shown,
    ),
    Setting("RBE_MAX_RETRIES", "retries per call", str(DEFAULT_RETRIES), _whole, _shown),
    Setting("RBE_DEADLINE", "seconds for a whole call, or none", "none", _deadline, _shown),
    Setting(
        "RBE_MAX_RETRY_AFTER",
        "the longest Retry-After waited for, seconds, or none",
        f"{DEFAULT_MAX_RETRY_AFTER:g}",
        _max_retry_after,
        _shown,
    ),
    Setting(
        "RBE_RAISE_ERRORS",
        f"raise the typed error from the call: {SWITCH_WORDS}",
        "off",
        switch,
        _shown,
    ),
    Setting(
        "RBE_LOG_LEVEL",
        f"the adapter's log lines on stderr, each with its time (ISO 8601, UTC): {LEVEL_WORDS}",
        f"{RUN_LOG_LEVEL} under run (elsewhere: logging as the program set it)",
        _level,
        _shown,
    ),
    Setting(
        "RBE_RATE_LIMIT",
        "pace requests: bloxs, dealcloud, or one rule for all, such as 5/second",
        "none",
        _rate_limit,
        _shown,
    ),
    Setting(
        "RBE_STORAGE",
        "where the rate limit is shared, and the circuits are published for status: "
        f"{accepted(PermitLog)}",
        _default_of(RateLimit, "storage"),
        _store(PermitLog),
        _shown,
    ),
    Setting(
        "RBE_MAX_WAIT",
        f"the longest wait for a rate-limit permit, seconds (0 to {MAX_PAUSE:g}); a longer "
        "one is a local 429 at once",
        f"{DEFAULT_MAX_WAIT:g}",
        _max_wait,
        _shown,
    ),
    Setting(
        "RBE_TOKEN_CACHE",
        f"share one token among processes: {_phrase(shared_token_stores())}",
        "none (each process its own)",
        _token_cache,
        _shown,
    ),
    Setting(
        "RBE_CIRCUIT_BREAKER",
        f"fail fast while a host keeps failing: {SWITCH_WORDS}, or FAILURES/OPEN_SECONDS "
        f"such as {_BREAKER_DEFAULT}",
        f"off (on means {_BREAKER_DEFAULT})",
        _circuit_breaker,
        _shown,
    ),
    Setting(
        "RBE_OUTBOX",
        f"keep failed writes for a replay: {accepted(OutboxStore)}",
        "none",
        _outbox,
        _shown,
    ),
    Setting(
        "RBE_ALERT",
        "where each alert goes (needs RBE_CIRCUIT_BREAKER or RBE_OUTBOX): an http:// or "
        "https:// webhook it is POSTed to as JSON, or package.module:function to call",
        "none (alerts are logged only)",
        _alert,
        alert_shown,
    ),
    Setting(
        "RBE_TELEMETRY",
        "spans and metrics to OpenTelemetry's global providers (every adapter reads it, "
        f"not only run's): {SWITCH_WORDS}",
        "on when the otel extra is installed",
        switch,
        _shown,
    ),
    Setting(
        "BLOXS_BASE_URL",
        "the Bloxs environment's origin, such as https://acme.bloxs.io (no path)",
        "none",
        _bloxs_base_url,
        _shown,
    ),
    Setting("BLOXS_API_KEY", "the Bloxs API key", "none", _text, masked),
    Setting("BLOXS_API_SECRET", "the Bloxs API secret", "none", _text, _secret),
    Setting(
        "BLOXS_HMAC",
        f"sign with the Bloxs v1 HMAC scheme instead of tokens: {SWITCH_WORDS}",
        "off",
        switch,
        _shown,
    ),
    Setting("DEALCLOUD_TOKEN_URL", "the DealCloud token endpoint", "none", _url, _shown),
    Setting("DEALCLOUD_CLIENT_ID", "the DealCloud client id", "none", _text, _shown),
    Setting("DEALCLOUD_CLIENT_SECRET", "the DealCloud client secret", "none", _text, _secret),
    Setting("DEALCLOUD_SCOPE", "the DealCloud scopes, such as 'data'", "none", _text, _shown),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The row of variable ``name``."""
    return _BY_NAME[name]


def parsed(name: str, value: str) -> Any:
    """``value`` of variable ``name`` as its parser reads it.

    :raises ConfigError: naming the variable, when the value cannot be used.
    """
    return _BY_NAME[name].parse(name, value.strip())
