"""The command line: ``python -m requests_bloxs_errors`` (or ``requests-bloxs-errors``).

Commands: ``demo``, ``explain STATUS``, ``table``, ``simulate``,
``request METHOD URL``, ``run``, ``config``, ``status`` (see :mod:`.status`),
``outbox`` (see :mod:`.outbox_cli`).
Bad input is one line on stderr and exit status 2; nothing here prints a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import runpy
import socket
import ssl
import sys
import textwrap
from collections.abc import Sequence
from http import HTTPStatus
from typing import NoReturn
from urllib.parse import urlsplit

import requests

from .. import __version__
from ..adapter import attempts, mount
from ..credentials.auth import Credential
from ..errors.classify import classify
from ..errors.table import (
    CLIENT_ERROR_RULE,
    QUOTA_RULE,
    READS_TEXT,
    RETRY_WORDS,
    RULES,
    SERVER_ERROR_RULE,
    Retryable,
    Rule,
    rule_for,
    rules_text,
)
from ..exceptions import BloxsError
from ..patch import count_usage, usage
from ..pipeline.failures import causes
from ..pipeline.retry import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_MAX_RETRY_AFTER,
    DEFAULT_RETRIES,
)
from ..urls import origin, redact_url
from . import _argtypes as argtypes
from ._term import PROGRAM, Terminal, complain, neutral, safe_text, status_style
from .demo import run_demo
from .envconfig import (
    RUN_DEFAULTS,
    VARIABLES,
    ConfigError,
    EnvConfig,
    config_from_env,
    credentials_from,
    install_from_env,
    shown_prefix,
)
from .outbox_cli import OutboxUsageError, run_outbox
from .outbox_cli import add_commands as add_outbox_commands
from .settings import LEVEL_WORDS, OFF_WORDS, ON_WORDS
from .simulate_cli import SimulateUsageError, run_simulate
from .simulate_cli import add_command as add_simulate_command
from .status import StoreError, check_stores, run_status
from .status import add_command as add_status_command

__all__ = ["main"]


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


def _rule_rows() -> list[tuple[str, Rule]]:
    rows = [(str(status), rule) for status, rule in sorted(RULES.items())]
    rows.insert(3, ("403+Retry-After", QUOTA_RULE))
    return [*rows, ("other 4xx", CLIENT_ERROR_RULE), ("other 5xx", SERVER_ERROR_RULE)]


def _field(term: Terminal, label: str, text: str) -> None:
    """One labelled paragraph, wrapped under its label."""
    term.lines(
        textwrap.fill(text, 100, initial_indent=f"  {label:<12} ", subsequent_indent=" " * 15)
    )


#: What ``explain 429`` says about the client-side rate limiter.
PACING_WORDS = (
    "with rate_limit=rbe.RateLimit(...) (or 'bloxs' / 'dealcloud') the adapter takes a "
    "permit before every attempt and keeps each category within its quota in any window "
    "of its period; a 429 that still comes pauses the category for every thread and "
    "process sharing the limit's storage (until Retry-After, else one period), and a quota "
    "stated in the body ('maximum admitted 5 per 1 second') becomes the category's rule."
)


def _explain(term: Terminal, status_text: str) -> int:
    try:
        status = int(status_text.strip())
    except ValueError:
        raise UsageError(
            f"STATUS must be an HTTP status code such as 429, not {status_text!r}"
        ) from None
    if not 100 <= status <= 599:
        raise UsageError(f"STATUS must be between 100 and 599, not {status}")
    if status < 400:
        term.line(f"{status} is not an error: the adapter passes it through untouched.")
        return 0
    rule = rule_for(status)
    assert rule is not None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = rule.title
    term.line(f"{status} {phrase}", "bold")
    fallback = "" if rule.status else " (no row of its own: the class fallback)"
    _field(term, "kind:", rule.kind + fallback)
    _field(term, "raises:", f"{rule.exception.__name__} (a requests.HTTPError)")
    _field(term, "retried:", RETRY_WORDS[rule.retry][1])
    if rule.retry in (Retryable.IDEMPOTENT, Retryable.IDEMPOTENT_OR_RETRY_AFTER):
        _field(term, "reads:", READS_TEXT)
    if rule.retry is not Retryable.NEVER:
        _field(
            term,
            "waits:",
            "the server's Retry-After when it sends one (seconds, fractions, an "
            "HTTP date, or retry-after-ms); a wait longer than max_retry_after "
            f"({DEFAULT_MAX_RETRY_AFTER:g}s by default) is not slept on: the response comes "
            "back at once with retry_after set, so the work can be scheduled. Without "
            f"Retry-After, back-off: {DEFAULT_BACKOFF_FACTOR:g}s, doubling, plus jitter, at "
            f"most {DEFAULT_BACKOFF_MAX:g}s. A deadline, when set, is never crossed.",
        )
    if rule.reauth:
        _field(
            term,
            "re-auth:",
            "yes: with auth, credentials are refreshed once and the request "
            "resent once; a second refusal is the error.",
        )
    else:
        _field(term, "re-auth:", "no")
    if status == 403:
        _field(
            term,
            "note:",
            "a 403 that carries Retry-After is an exhausted quota, not a missing "
            f"permission: {QUOTA_RULE.exception.__name__}, retried like a 429, no re-auth.",
        )
    if status in (403, 429):
        _field(term, "pacing:", PACING_WORDS)
    _field(term, "what to do:", rule.action)
    return 0


def _table(term: Terminal) -> int:
    rows = [
        [
            status,
            rule.kind,
            rule.exception.__name__,
            RETRY_WORDS[rule.retry][0],
            "once" if rule.reauth else "no",
        ]
        for status, rule in _rule_rows()
    ]
    term.table(["status", "kind", "exception", "retried", "re-auth"], rows)
    term.line()
    for line in rules_text():
        term.lines(textwrap.fill(line, 100, subsequent_indent="  "))
    term.line("Run 'explain STATUS' for what to do about one of them.")
    return 0


def _simulate(term: Terminal, args: argparse.Namespace) -> int:
    """``simulate``: see :mod:`.simulate_cli`."""
    try:
        return run_simulate(term, args)
    except SimulateUsageError as exc:
        raise UsageError(str(exc)) from None


def _credentials(args: argparse.Namespace, url: str | None) -> list[tuple[Credential, str]]:
    """The credentials the flags and the environment give (flags win), as ``run`` reads
    them, each with the origin of the API it is for.

    :param url: the request's URL, whose origin is the API's unless a variable
        or flag names it; None (``outbox replay``): it must be named.
    """
    values = {v.name: os.environ.get(v.name, "") for v in VARIABLES}
    flags = {
        "BLOXS_BASE_URL": args.base_url,
        "BLOXS_API_KEY": args.bloxs_key,
        "BLOXS_API_SECRET": args.bloxs_secret,
        "BLOXS_HMAC": "1" if args.hmac else None,
        "DEALCLOUD_CLIENT_ID": args.client_id,
        "DEALCLOUD_CLIENT_SECRET": args.client_secret,
        "DEALCLOUD_TOKEN_URL": args.token_url,
        "DEALCLOUD_SCOPE": args.scope,
    }
    values.update({name: value for name, value in flags.items() if value})
    try:
        return credentials_from(values, default_origin=origin(url) if url else None)
    except ConfigError as exc:
        if url is None:
            raise UsageError(
                f"{exc}, or the matching flag: outbox replay sends credentials only to the API "
                "named there, never to the host of a queued entry"
            ) from None
        raise UsageError(f"{exc} (or the matching flags: see 'request --help')") from None


def _request(term: Terminal, args: argparse.Namespace) -> int:
    url = args.url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(
            f"URL must be an absolute http:// or https:// URL, not {redact_url(url)!r}"
        )
    body = None
    if args.json is not None:
        try:
            body = json.loads(args.json)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
    headers = {}
    for header in args.header or []:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header must look like 'Name: value', not {header!r}")
        headers[name.strip()] = value.strip()
    credentials = _credentials(args, url)
    session = requests.Session()
    options = {"max_retries": args.max_retries, "max_retry_after": args.max_retry_after}
    mount(session, f"{parts.scheme}://{parts.netloc}/", **options)
    for auth, home in credentials:  # each API's credentials on its own origin only
        mount(session, home + "/", auth=auth, **options)
    method = args.method.upper()
    try:
        response = session.request(
            method, url, json=body, data=args.data, headers=headers, timeout=args.timeout
        )
    except BloxsError:
        raise  # a refused credential: main() prints it as one line
    except requests.RequestException as exc:
        term.line(f"{method} {redact_url(url)}: no response: {_why(exc)}", "red")
        for attempt in attempts(exc):
            wait = f", waited {attempt.wait:.2f}s" if attempt.wait else ""
            term.line(f"  #{attempt.number}  {attempt.kind}  {attempt.decision}{wait}", "dim")
        term.line(f"  ({type(exc).__name__})", "dim")
        return 3
    finally:
        session.close()
    term.line(f"{method} {redact_url(url)}", "bold")
    for attempt in attempts(response):
        wait = f", waited {attempt.wait:.2f}s" if attempt.wait else ""
        term.line(
            f"  #{attempt.number}  {attempt.status}  {attempt.kind}  {attempt.decision}{wait}",
            status_style(attempt.status),
        )
    info = classify(response)
    if info is not None:
        term.line(f"{info.rule.exception.__name__}: {info.message}", "red")
        for line in info.error_lines:
            term.line(f"  {line}")
        if info.retry_after is not None:
            term.line(f"  retry after: {info.retry_after:g}s")
        if info.trace_id:
            term.line(f"  trace id: {info.trace_id}")
        term.line(f"  what to do: {info.action}")
    text = response.text
    if text:
        term.line()
        term.lines(safe_text(text))
    return 0 if response.status_code < 400 else 1


def _why(exc: BaseException) -> str:
    """Why no response came, in words: the first cause in the chain that names a reason."""
    for current in causes(exc):
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, socket.gaierror) or type(current).__name__ == "NameResolutionError":
            return "the host name did not resolve"
        if isinstance(current, ssl.SSLCertVerificationError):
            return "the certificate did not verify"
        if isinstance(current, (ConnectionResetError, BrokenPipeError)):
            return "the connection was reset"
        if isinstance(current, (TimeoutError, requests.Timeout)):
            return "timed out"
    return "the connection failed"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with a pointer to --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROGRAM}: error: {neutral(message)} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="requests-bloxs-errors",
        description="Retries, re-authentication and typed errors for the Bloxs and DealCloud APIs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    defaults = argtypes.RealDefaults
    commands.add_parser(
        "demo",
        help="run a scripted workload against the embedded simulator",
        description="Start the simulator on a free loopback port and run a narrated workload "
        "through two mounted Sessions: token fetches, a revoked token, a throttled burst, "
        "pacing to a quota, maintenance, validation errors, an outage with its circuit, "
        "outbox and replay. Exit status 1 when a step ends otherwise than it expects.",
    )
    explain = commands.add_parser(
        "explain",
        help="what a status means and what the adapter does",
        description="What an HTTP error status means, the typed error it raises, whether "
        "and how it is retried, whether credentials are refreshed, and what to do about it.",
    )
    explain.add_argument("status", metavar="STATUS", help="an HTTP status such as 429")
    commands.add_parser(
        "table",
        help="print the whole error table",
        description="Every status the adapter knows: its kind, typed error, whether it is "
        "retried and re-authenticated; then the retry rules.",
    )
    add_simulate_command(commands)
    run = commands.add_parser(
        "run",
        help="run a script (or -m module) with the adapter installed, configured from the "
        "environment",
        description=textwrap.fill(
            "Install the adapter as RBE_*, BLOXS_* and DEALCLOUD_* say (flags win), then run "
            "the script in this interpreter with its own arguments; its exit status and "
            "exceptions are its own.",
            96,
        )
        + "\n\n"
        + textwrap.fill(
            "run's options come before SCRIPT (or -m MODULE): everything after it is the "
            "script's. --raise-errors and --no-raise-errors take no value: write "
            "'run --raise-errors SCRIPT [ARGS...]'.",
            96,
            break_on_hyphens=False,
        ),
        epilog=_variables_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--prefix", help="the URLs to serve (RBE_PREFIX)")
    run.add_argument("--max-retries", help="retries per call (RBE_MAX_RETRIES)")
    run.add_argument("--deadline", help="seconds for a whole call (RBE_DEADLINE)")
    run.add_argument(
        "--max-retry-after", help="longest Retry-After waited for (RBE_MAX_RETRY_AFTER)"
    )
    run.add_argument(
        "--raise-errors",
        action=argparse.BooleanOptionalAction,
        help="raise typed errors instead of returning error responses, or not "
        "(RBE_RAISE_ERRORS=1 or 0); no value: 'run --raise-errors SCRIPT'",
    )
    run.add_argument("--log-level", help=f"{LEVEL_WORDS} (RBE_LOG_LEVEL)")
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m")
    run.add_argument("target", nargs=argparse.REMAINDER, metavar="SCRIPT [ARGS...]")
    config = commands.add_parser(
        "config",
        help="print the configuration the environment gives (secrets masked)",
        description="The adapters run would install, then every variable: the value the "
        "environment sets (secrets masked) or, marked so, its default.",
    )
    config.add_argument(
        "--check",
        action="store_true",
        help="also try each shared store it configures (exit status 1 if one fails)",
    )
    add_status_command(commands)
    request = commands.add_parser(
        "request",
        help="send one request through the adapter",
        description="Send one request through the adapter and print each attempt, the "
        "typed error with what to do, and the body. Exit status 0 for success, 1 for an "
        "error response, 3 when no response came.",
        formatter_class=defaults,
    )
    request.add_argument("method", metavar="METHOD", help="GET, POST, PUT, ...")
    request.add_argument("url", metavar="URL", help="an absolute http:// or https:// URL")
    _credential_flags(request)
    request.add_argument("--json", help="a JSON body")
    request.add_argument("--data", help="a raw body")
    request.add_argument("--header", "-H", action="append", help="'Name: value', repeatable")
    request.add_argument(
        "--timeout",
        type=argtypes.positive,
        default=30.0,
        help="seconds per attempt (connect and read)",
    )
    request.add_argument(
        "--max-retries", type=argtypes.count, default=DEFAULT_RETRIES, help="retries per call"
    )
    request.add_argument(
        "--max-retry-after",
        type=argtypes.seconds_or_none,
        default=DEFAULT_MAX_RETRY_AFTER,
        help="the longest Retry-After to wait for, seconds ('none': no limit)",
    )
    add_outbox_commands(commands, _credential_flags)
    return parser


def _variables_text() -> str:
    """Every variable, what it sets and its default: the end of ``run --help``."""
    lines = ["variables (flags win; 'config' shows what the environment gives):"]
    for variable in VARIABLES:
        lines.append(f"  {variable.name}")
        lines.extend(
            textwrap.wrap(
                f"{variable.what} (default: {variable.default})",
                96,
                initial_indent="      ",
                subsequent_indent="      ",
            )
        )
    return "\n".join(lines)


def _credential_flags(parser: argparse.ArgumentParser) -> None:
    """The credential flags of ``request`` and ``outbox replay``."""
    parser.add_argument(
        "--base-url",
        help="the Bloxs environment the credentials are for (or BLOXS_BASE_URL; request's "
        "default: the URL's origin)",
    )
    parser.add_argument("--bloxs-key", help="Bloxs API key (or BLOXS_API_KEY)")
    parser.add_argument("--bloxs-secret", help="Bloxs API secret (or BLOXS_API_SECRET)")
    parser.add_argument("--hmac", action="store_true", help="sign with the Bloxs v1 HMAC scheme")
    parser.add_argument("--client-id", help="OAuth2 client id (or DEALCLOUD_CLIENT_ID)")
    parser.add_argument("--client-secret", help="OAuth2 client secret (or DEALCLOUD_CLIENT_SECRET)")
    parser.add_argument(
        "--token-url",
        help="OAuth2 token URL (or DEALCLOUD_TOKEN_URL; default: the URL's origin + "
        "/api/rest/v1/oauth/token)",
    )
    parser.add_argument("--scope", default=None, help="OAuth2 scope, such as 'data'")


def _run_script(args: argparse.Namespace) -> int:
    """Install from the environment and flags, then run the script as ``python`` would.

    The script's ``SystemExit`` and exceptions pass through untouched.
    """
    overrides = {
        "RBE_PREFIX": args.prefix,
        "RBE_MAX_RETRIES": args.max_retries,
        "RBE_DEADLINE": args.deadline,
        "RBE_MAX_RETRY_AFTER": args.max_retry_after,
        "RBE_RAISE_ERRORS": {True: "1", False: "0", None: None}[args.raise_errors],
        "RBE_LOG_LEVEL": args.log_level,
    }
    target = list(args.target)
    if args.module is None and not target:
        raise UsageError("run needs a script or -m MODULE")
    if args.module is None and not os.path.isfile(target[0]):
        if args.raise_errors is not None and target[0].lower() in _FLAG_WORDS:
            raise UsageError(
                "--raise-errors takes no value: write 'run --raise-errors SCRIPT' "
                "(or --no-raise-errors)"
            )
        raise UsageError(f"no such script: {target[0]!r}")
    if args.module is not None:
        problem = _module_problem(args.module)
        if problem is not None:  # in python -m's words, and its exit status
            Terminal(sys.stderr).line(f"{sys.executable}: {problem}")
            return 1
    try:
        config = install_from_env(
            overrides={k: v for k, v in overrides.items() if v is not None},
            defaults=RUN_DEFAULTS,
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    count_usage()
    try:
        if args.module is not None:
            sys.argv = [args.module, *target]
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            sys.argv = target
            sys.path.insert(0, os.path.dirname(os.path.abspath(target[0])))
            runpy.run_path(target[0], run_name="__main__")
    finally:
        _report_unused(config)
    return 0


#: Values ``--raise-errors`` took before it became a flag: one of them where the
#: script's name should be is that older form.
_FLAG_WORDS = frozenset(ON_WORDS + OFF_WORDS)


def _report_unused(config: EnvConfig) -> None:
    """One line at exit when the script made requests and none went through the adapter."""
    sent, served = usage()
    if not sent or served:
        return
    where = ", ".join(shown_prefix(prefix) for prefix, _ in config.mounts)
    if "RBE_PREFIX" in config.shown:
        under = f"under RBE_PREFIX ({where})"
    elif any("auth" in kwargs for _, kwargs in config.mounts):
        under = f"under the API the credentials are for ({where})"
    else:
        under = f"under {where}, all the adapter serves while RBE_PREFIX is not set"
    Terminal(sys.stderr).line(
        f"{PROGRAM}: the script made {sent} request(s) and none was {under}: the adapter "
        "did nothing; set RBE_PREFIX to the URL of the API the script calls"
    )


def _module_problem(name: str) -> str | None:
    """Why ``python -m name`` would not start, as python says it; None when it would."""
    try:
        spec = importlib.util.find_spec(name)
        package = spec is not None and spec.submodule_search_locations is not None
        if package and importlib.util.find_spec(name + ".__main__") is None:
            return (
                f"No module named {name}.__main__; {name!r} is a package and cannot be "
                "directly executed"
            )
    except (ImportError, ValueError) as exc:  # a parent package is missing; a bad name
        return (
            f"Error while finding module specification for {name!r} ({type(exc).__name__}: {exc})"
        )
    return f"No module named {name}" if spec is None else None


def _config(term: Terminal, *, check: bool = False) -> int:
    try:
        config = config_from_env(defaults=RUN_DEFAULTS)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for line in config.warnings:
        complain(line, "warning")
    for prefix, kwargs in config.mounts:
        term.line(f"prefix: {shown_prefix(prefix)}", "bold")
        for name, value in kwargs.items():
            if name == "auth":
                shown = type(value).__name__
            elif name == "on_alert":
                shown = config.shown["RBE_ALERT"]
            else:
                shown = repr(value)
            line = neutral(f"  {name}: {shown}")
            width = term.width
            term.lines(textwrap.fill(line, width, subsequent_indent="      ") if width else line)
    term.line()
    rows = [
        [v.name, "set", config.shown[v.name], v.what]
        if v.name in config.shown
        else [v.name, "default", v.default, v.what]
        for v in VARIABLES
    ]
    term.table(["variable", "from", "value", "what"], rows, width=term.width, wrap=(2, 3))
    if check:
        term.line()
        return check_stores(term, os.environ)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    term = Terminal()
    if args.command == "run":  # outside the handlers below: the script's errors are its own
        try:
            return _run_script(args)
        except UsageError as exc:
            complain(str(exc))
            return 2
    try:
        return _run(term, args)
    except BrokenPipeError:  # `explain 503 | head -3`: the reader left; so do we, quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes
        return 0


def _run(term: Terminal, args: argparse.Namespace) -> int:
    try:
        if args.command == "demo":
            return run_demo(term)
        if args.command == "explain":
            return _explain(term, args.status)
        if args.command == "table":
            return _table(term)
        if args.command == "simulate":
            return _simulate(term, args)
        if args.command == "config":
            return _config(term, check=args.check)
        if args.command == "status":
            return run_status(term, args, os.environ)
        if args.command == "outbox":
            return run_outbox(term, args, _credentials)
        return _request(term, args)
    except (UsageError, OutboxUsageError, StoreError) as exc:
        complain(str(exc))
        return 2
    except (TypeError, ValueError) as exc:  # bad configuration from the flags
        complain(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except requests.HTTPError as exc:  # a refused credential, for one
        complain(str(exc), type(exc).__name__)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
