"""Test and lint sessions: ``python -m nox`` runs them all.

The suite runs twice: against current requests and urllib3 2.x, and against
the oldest supported pair (requests 2.31, urllib3 1.26), which legacy
environments still pin.
"""

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests", "tests_legacy", "docs"]
nox.options.error_on_missing_interpreters = True
# uv makes each session's environment in seconds where pip takes most of a minute;
# without it (nox installed without its uv extra), virtualenv and pip do it.
nox.options.default_venv_backend = "uv|virtualenv"

# pytest exits 5 when it collected no test. That is a broken suite, not a
# pass, so only 0 counts as success (nox's default, stated here on purpose).
PYTEST_OK = [0]
#: Test processes (pytest-xdist): most tests wait on loopback servers and on the
#: processes they start, not on the CPU, so three times the cores of a small machine
#: keeps both busy (beside two CPU-bound neighbours, 4 and 6 processes alternated took
#: 178 s, 139 s, 165 s and 138 s).
WORKERS = ["-n", "6", "--dist", "loadgroup"]  # (a group's tests share a process)
SHOW_VERSIONS = (
    "import requests, urllib3; print('requests', requests.__version__, urllib3.__version__)"
)


def _show_versions(session: nox.Session) -> None:
    session.run("python", "-c", SHOW_VERSIONS)


def _ensure_redis_server(session: nox.Session) -> None:
    """The Redis tests start a real redis-server: install the Debian package when
    it is missing and this is root on a Debian-like machine (as CI is)."""
    if shutil.which("redis-server"):
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "redis-server", external=True)
    else:
        session.log(
            "redis-server is not installed: the Redis tests will be skipped "
            "(with CI=true they fail). Install it: apt-get install -y redis-server"
        )


def _pytest(session: nox.Session) -> None:
    """The suite in :data:`WORKERS` processes, then the tests that load the whole
    machine on purpose (marker ``machine``) alone, so that their CPU-bound
    neighbours slow no other test. Arguments after ``--`` make one run of them."""
    if session.posargs:
        session.run("pytest", *WORKERS, *session.posargs, success_codes=PYTEST_OK)
        return
    session.run("pytest", *WORKERS, "-m", "not machine", success_codes=PYTEST_OK)
    session.run("pytest", "-m", "machine", success_codes=PYTEST_OK)


@nox.session
def tests(session: nox.Session) -> None:
    """The suite against the newest requests and urllib3 2.x."""
    session.install("-e", ".[test]", "urllib3>=2,<3")
    _show_versions(session)
    _ensure_redis_server(session)
    _pytest(session)


@nox.session
def tests_legacy(session: nox.Session) -> None:
    """The suite against requests 2.31 and urllib3 1.26 (the oldest supported)."""
    session.install("-e", ".[test]", "requests==2.31.0", "urllib3==1.26.20")
    _show_versions(session)
    _ensure_redis_server(session)
    _pytest(session)


#: Unpacks the requests sdist in a folder (argv: folder, version).
_EXTRACT = """
import sys, tarfile
folder, version = sys.argv[1:]
with tarfile.open(f"{folder}/requests-{version}.tar.gz") as archive:
    archive.extractall(folder, filter="data")
"""


@nox.session
def requests_suite(session: nox.Session) -> None:
    """requests' own test suite with the adapter installed (not run by default: about
    eight minutes): python -m nox -s requests_suite.

    The suite comes from the sdist of the requests version installed here, and
    runs twice: with ``rbe.install("http://")`` and with ``rbe.install("https://")``.
    Its tests that would leave this machine are deselected, and a loopback
    guard fails the run if any other test tries (tests/requests_suite/).
    """
    session.install(
        "pip",  # (to download the sdist: an environment uv makes has no pip)
        "-e",
        ".[test]",
        "requests[socks]",
        "pytest-httpbin==2.1.0",
        "httpbin~=0.10.0",
        "pytest-mock",
    )
    version = session.run(
        "python", "-c", "import requests; print(requests.__version__)", silent=True
    )
    version = str(version).strip()
    folder = session.create_tmp()
    session.run(
        "python", "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
        f"requests=={version}", "-d", folder,
    )  # fmt: skip
    session.run("python", "-c", _EXTRACT, folder, version)
    plugin = os.path.abspath(os.path.join("tests", "requests_suite"))
    with session.chdir(os.path.join(folder, f"requests-{version}")):
        for prefix in ("http://", "https://"):
            session.run(
                "pytest", "tests", "-p", "rbe_suite_plugin", "-p", "no:cacheprovider",
                env={"RBE_SUITE_PREFIX": prefix, "PYTHONPATH": plugin},
                success_codes=PYTEST_OK,
            )  # fmt: skip


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks (not run by default): python -m nox -s bench [-- --quick]."""
    session.install("-e", ".[bench,chart]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy --strict."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors, then its doctests: open
    docs/_build/html/index.html."""
    session.install("-e", ".[docs]")
    session.run("python", "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                "docs", "docs/_build/html")  # fmt: skip
    session.run("python", "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "doctest",
                "docs", "docs/_build/doctest")  # fmt: skip
