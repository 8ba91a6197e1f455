"""The ``simulate`` command: both APIs served on two origins, with a request log.

Bloxs answers on ``--port`` and DealCloud on ``--dealcloud-port`` (the next
port by default), each only for its own paths, so that the variables it prints
(``BLOXS_*`` and ``DEALCLOUD_*``) work together under ``run`` as production's
do. Each request is one line as it is answered (its time, API, method, path
without the query string, status, and for a token request the ``apiKey`` or
``client_id`` it named, never a secret); Ctrl-C or SIGTERM stops it with a
summary: requests per category, token requests per credential, 429s given.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import Any

from ..simulator import DEALCLOUD_TOKEN_PATH, ENDPOINTS, Seen, Simulator, Summary
from ..simulator.summary import BLOXS, CATEGORIES, DEALCLOUD, VENDORS, vendor_of
from . import _argtypes as argtypes
from ._term import Terminal, status_style
from ._times import iso

__all__ = [
    "LOG_HEADER",
    "SimulateUsageError",
    "add_command",
    "log_line",
    "run_simulate",
    "summary_lines",
]

#: The longest path a log line shows; a longer one is cut (with "...").
PATH_SHOWN = 160
#: The line after which the request log starts.
LOG_HEADER = "Requests (time, API, method and path, status, credential of a token request):"


class SimulateUsageError(Exception):
    """Bad flags: printed as one line, exit status 2."""


def add_command(commands: Any) -> None:
    """Add ``simulate`` to the main parser."""
    simulate = commands.add_parser(
        "simulate",
        help="serve the Bloxs and DealCloud simulator until interrupted",
        description="Serve the simulated Bloxs API on --port and DealCloud's on "
        "--dealcloud-port, each on its own origin as in production; print the variables "
        "that point 'run' at both, a line per request, and a summary when stopped "
        "(Ctrl-C or SIGTERM).",
        formatter_class=argtypes.RealDefaults,
    )
    simulate.add_argument("--host", default="127.0.0.1", help="address to listen on")
    simulate.add_argument(
        "--port", type=argtypes.port, default=8080, help="Bloxs's port (0: any free port)"
    )
    simulate.add_argument(
        "--dealcloud-port",
        type=argtypes.port,
        default=None,
        help="DealCloud's port (0: any free port; default: --port + 1, or any free one "
        "when --port is 0)",
    )
    simulate.add_argument(
        "--window", type=argtypes.positive, default=60.0, help="rate-limit window, seconds"
    )
    faults = simulate.add_argument_group(
        "an outage to stage", "each fault starts when the simulator does"
    )
    faults.add_argument(
        "--fail", type=argtypes.error_status, metavar="STATUS", help="answer STATUS (400-599)"
    )
    faults.add_argument(
        "--slow", type=argtypes.positive, metavar="SECONDS", help="answer only after SECONDS"
    )
    faults.add_argument(
        "--for",
        dest="for_seconds",
        type=argtypes.positive,
        metavar="SECONDS",
        help="for this long (default: until stopped)",
    )
    faults.add_argument(
        "--path",
        action="append",
        metavar="PATH",
        help="only on PATH and below, repeatable (default: every path)",
    )
    faults.add_argument("--method", help="only for this method (default: every method)")
    faults.add_argument("--retry-after", metavar="VALUE", help="send this Retry-After with --fail")


def _dealcloud_port(port: int, given: int | None) -> int:
    if given is not None:
        return given
    if port == 0:
        return 0
    if port == 65535:
        raise SimulateUsageError(
            "--port 65535 leaves no next port for DealCloud: give --dealcloud-port"
        )
    return port + 1


def run_simulate(term: Terminal, args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; then print the summary. Return the exit status."""
    host, port = args.host, args.port
    if args.retry_after is not None and args.fail is None:
        raise SimulateUsageError("--retry-after needs --fail STATUS")
    if (args.for_seconds or args.path or args.method) and not (args.fail or args.slow):
        raise SimulateUsageError("--for, --path and --method shape a fault: add --fail or --slow")
    dealcloud_port = _dealcloud_port(port, args.dealcloud_port)
    if dealcloud_port == port != 0:
        raise SimulateUsageError(f"--dealcloud-port must differ from --port ({port})")
    try:
        simulator = Simulator(
            host=host, port=port, dealcloud_port=dealcloud_port, window=args.window
        )
    except OSError as exc:  # (its filename names DealCloud's address when that one failed)
        where = exc.filename or f"{host}:{port}"
        raise SimulateUsageError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    printing = threading.Lock()

    def log(seen: Seen) -> None:
        # (a reader that left, and took the pipe with it, does not stop the serving)
        with printing, contextlib.suppress(BrokenPipeError, ValueError):
            term.line(log_line(seen), status_style(seen.status))

    _stop_on_signals()  # before the banner: whoever read it may stop the simulator at once
    try:
        _banner(term, simulator, args)
        simulator.watch(log)
        simulator.serve_forever()
    except KeyboardInterrupt:
        term.line("stopped")
    finally:
        simulator.stop()
    with printing:
        for line in summary_lines(simulator.summary()):
            term.line(line)
    return 0


def _banner(term: Terminal, simulator: Simulator, args: argparse.Namespace) -> None:
    """Where each API is, the demo credentials, the faults staged, the endpoints, and
    the variables for ``run``."""
    key, secret = simulator.bloxs_credentials
    token_url, client_id, client_secret = simulator.dealcloud_credentials
    term.line(
        f"Bloxs API on {simulator.bloxs_url}  DealCloud API on {simulator.dealcloud_url}  "
        "(Ctrl-C stops it)",
        "bold",
    )
    # demo credentials, published in the README: printing them is the point
    term.line(f"  Bloxs:     apiKey={key}  apiSecret={secret}")
    term.line(f"  DealCloud: client_id={client_id}  client_secret={client_secret}")
    term.line(f"  rate-limit window: {args.window:g}s")
    for line in _stage(simulator, args):
        term.line(f"  {line}", "yellow")
    homes = {BLOXS: simulator.bloxs_url, DEALCLOUD: simulator.dealcloud_url}
    term.table(
        ["method", "URL", "what"],
        [[methods, homes[vendor_of(path)] + path, what] for methods, path, what in ENDPOINTS],
    )
    term.line()
    term.line("For 'run' (and install_from_env), both APIs at once:", "bold")
    for name, value in (
        ("BLOXS_BASE_URL", simulator.bloxs_url),
        ("BLOXS_API_KEY", key),
        ("BLOXS_API_SECRET", secret),
        ("DEALCLOUD_TOKEN_URL", token_url),
        ("DEALCLOUD_CLIENT_ID", client_id),
        ("DEALCLOUD_CLIENT_SECRET", client_secret),
    ):
        term.line(f"  export {name}={value}")
    term.line()
    term.line(LOG_HEADER)


def log_line(seen: Seen) -> str:
    """One request as the log shows it: time, API, method, path (no query string),
    status, and for a token request the credential it named (never a secret)."""
    path = seen.path if len(seen.path) <= PATH_SHOWN else seen.path[: PATH_SHOWN - 3] + "..."
    status = "dropped" if seen.status is None else str(seen.status)
    line = f"{iso(seen.received)}  {VENDORS[seen.vendor]:<9}  {seen.method} {path}  {status}"
    if seen.credential is not None:
        named = "client_id" if seen.path == DEALCLOUD_TOKEN_PATH else "apiKey"
        line += f"  {named}={seen.credential}"
    if seen.fault is not None:
        line += f"  (fault {seen.fault})"
    if seen.misdirected:
        line += f"  ({VENDORS[vendor_of(seen.path)]}'s path, on the {VENDORS[seen.vendor]} origin)"
    return line


def summary_lines(summary: Summary) -> list[str]:
    """The summary ``simulate`` prints when it stops."""
    lines = [f"summary: {summary.total} request(s)"]
    width = max(len(name) for name in CATEGORIES.values())
    for category, name in CATEGORIES.items():
        lines.append(f"  {name:<{width}}  {summary.requests.get(category, 0)}")
    if summary.misdirected:
        lines.append(f"  {'on the wrong origin':<{width}}  {summary.misdirected} (404)")
    tokens = [
        f"{VENDORS[vendor]} {'client_id' if vendor == DEALCLOUD else 'apiKey'}={credential}: "
        f"{count}"
        for vendor in (BLOXS, DEALCLOUD)
        for credential, count in sorted(summary.tokens.get(vendor, {}).items())
    ]
    lines.append("token requests: " + (", ".join(tokens) if tokens else "none"))
    given = sum(summary.throttled.values())
    where = ", ".join(
        f"{CATEGORIES.get(category, category)} {count}"
        for category, count in summary.throttled.items()
    )
    lines.append(f"429s given: {given}" + (f" ({where})" if where else ""))
    if summary.dropped:
        lines.append(f"connections reset: {summary.dropped}")
    return lines


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and ``kill`` (SIGTERM) stop the simulator cleanly, also when it
    was started in the background of a script, which starts it with SIGINT ignored."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return  # (signals reach the main thread only: run from one, this has no say)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, stop)


def _stage(simulator: Simulator, args: argparse.Namespace) -> list[str]:
    """Arm the faults the flags ask for; a line describing each."""
    method = args.method.upper() if args.method else None
    paths = args.path or [None]
    how_long = f" for {args.for_seconds:g}s" if args.for_seconds else " until stopped"
    where = (method + " " if method else "") + (
        ", ".join(args.path) if args.path else "every request"
    )
    staged = []
    for path in paths:
        if args.fail is not None:
            simulator.fail(
                args.fail,
                path=path,
                method=method,
                times=None,
                retry_after=args.retry_after,
                for_seconds=args.for_seconds,
            )
        if args.slow is not None:
            simulator.slow(
                args.slow, path=path, method=method, times=None, for_seconds=args.for_seconds
            )
    if args.fail is not None:
        after = f" (Retry-After: {args.retry_after})" if args.retry_after is not None else ""
        staged.append(f"fault: {where} answers {args.fail}{after}{how_long}")
    if args.slow is not None:
        staged.append(f"fault: {where} answers after {args.slow:g}s{how_long}")
    return staged
