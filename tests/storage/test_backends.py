"""One storage layer: backends by scheme (a user's own too), their timeouts and passwords,
one sealer.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import pytest
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors import storage
from requests_bloxs_errors.clock import FakeClock
from requests_bloxs_errors.storage import STORE_TIMEOUT
from requests_bloxs_errors.storage.memory import MemoryBackend
from requests_bloxs_errors.storage.sqlite import when_unlocked
from requests_bloxs_errors.tools import envconfig

from ..helpers.server import Reply

ROOT = Path(__file__).resolve().parents[2]


def test_threads_behind_a_locked_store_do_not_queue_for_seconds(tmp_path):
    # Real time: the waits are a thread lock's timed acquire and SQLite's busy
    # handler, which no clock stands in for. The bound is loose: half of what
    # sixteen threads queueing for a second each would take.
    path = tmp_path / "locked.db"
    limit = rbe.RateLimit({"*": "1000/second"}, storage=f"sqlite:///{path}")
    request = requests.Request("GET", "http://127.0.0.1/").prepare()
    key = limit.key(request, "*")
    limit.store.acquire(key, (1000, 1.0), 1)  # creates the file
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    def permit() -> None:
        started = time.monotonic()
        limit.store.acquire(key, (1000, 1.0), 1)
        waits.append(time.monotonic() - started)

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: permit(), range(16)))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # one busy timeout, not sixteen in turn
    assert max(waits) < 16 * STORE_TIMEOUT / 2


def test_a_step_sqlite_refuses_at_once_is_tried_again_on_the_clock():
    """``when_unlocked`` waits between tries on the clock it is given, never on the
    real one: on a fake clock a file that stays locked is given up at once."""
    clock = FakeClock()
    tries: list[float] = []

    def locked_twice() -> None:
        tries.append(clock.monotonic())
        if len(tries) <= 2:
            raise sqlite3.OperationalError("database is locked")

    when_unlocked(locked_twice, give_up_after=1.0, pause=0.25, clock=clock)
    assert clock.sleeps == [0.25, 0.25]
    assert [t - tries[0] for t in tries] == [0, 0.25, 0.5]

    def always_locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    given_up_at = clock.monotonic() + 1.0
    with pytest.raises(sqlite3.OperationalError):
        when_unlocked(always_locked, give_up_after=1.0, pause=0.25, clock=clock)
    assert clock.monotonic() == given_up_at  # four pauses of 0.25 s, on the fake clock


def test_a_redis_password_with_a_slash_never_reaches_an_error(monkeypatch):
    with pytest.raises(rbe.ConfigError) as caught:
        envconfig.config_from_env(
            {"RBE_RATE_LIMIT": "bloxs", "RBE_STORAGE": "redis://:hun/ter2@127.0.0.1:6399/x"}
        )
    assert "ter2" not in str(caught.value)
    assert "hun" not in str(caught.value)
    with pytest.raises(ValueError, match="not a valid Redis URL") as invalid:
        rbe.RateLimit({"*": "1/second"}, storage="redis://:hun/ter2@h:1/0")
    assert "ter2" not in str(invalid.value)


class DictBackend(MemoryBackend):
    """A user's backend: memory under another scheme, counting what it is asked."""

    made: ClassVar[list[storage.StorageURL]] = []

    def __init__(self, url: storage.StorageURL, clock: rbe.clock.Clock) -> None:
        super().__init__(url, clock)
        DictBackend.made.append(url)

    @classmethod
    def check_url(cls, url: storage.StorageURL, what: str) -> storage.StorageURL:
        if not url.url.endswith("/bucket"):
            raise ValueError(f"{what} must name the bucket: dict://host/bucket")
        return url


@pytest.fixture
def dict_scheme() -> Iterator[None]:
    storage.register_backend("dict", DictBackend)
    yield
    storage.unregister_backend("dict")


def test_a_registered_backend_serves_the_rate_limit_by_its_scheme(server, session, dict_scheme):
    server.route("GET", "/x", Reply(200, "ok"))
    clock = FakeClock()
    limit = rbe.RateLimit({"*": (2, 1.0)}, storage="dict://anywhere/bucket", clock=clock)
    rbe.mount(session, "http://", rate_limit=limit, clock=clock)
    responses = [session.get(server.url("/x")) for _ in range(3)]
    assert [r.status_code for r in responses] == [200] * 3
    paced = [rbe.attempts(r)[0].paced for r in responses]
    assert paced[:2] == [0, 0]
    assert paced[2] == pytest.approx(1.0)  # a period after the first ended (fake clock)
    assert clock.sleeps == [pytest.approx(1.0)]
    assert DictBackend.made[-1].url == "dict://anywhere/bucket"
    assert "dict://..." in storage.schemes()
    with pytest.raises(ValueError, match="bucket"):
        rbe.RateLimit({"*": "1/second"}, storage="dict://anywhere/")


def test_a_feature_names_the_schemes_that_can_keep_it(dict_scheme):
    with pytest.raises(
        ValueError, match=r"cannot be dict:// \(dict:// keeps no outbox\)"
    ) as caught:
        rbe.Outbox("dict://anywhere/bucket")  # a memory-like backend keeps no outbox
    message = str(caught.value)
    assert message.endswith("it must be sqlite:////absolute/path.db")
    assert "redis" not in message
    with pytest.raises(ValueError, match=r"^storage must be ") as caught:
        rbe.RateLimit({"*": "1/second"}, storage="mongo://x")
    assert str(caught.value) == (
        "storage must be memory://, sqlite:////absolute/path.db, redis://host:port/db, "
        "rediss://host:port/db, redis+sentinel://host:26379[,host:port...]/service[/db], "
        "redis+cluster://host:port[,host:port...] or dict://...; got 'mongo://x'"
    )


def test_an_unregistered_scheme_is_refused_again_and_a_built_in_one_stays():
    storage.register_backend("gone", DictBackend)
    assert "gone://..." in storage.schemes()
    storage.unregister_backend("gone")
    assert "gone://..." not in storage.schemes()
    with pytest.raises(ValueError, match="storage must be"):
        rbe.RateLimit({"*": "1/second"}, storage="gone://anywhere/bucket")
    with pytest.raises(KeyError):
        storage.unregister_backend("gone")
    with pytest.raises(ValueError, match="built in"):
        storage.unregister_backend("sqlite")
    assert "sqlite:////absolute/path.db" in storage.schemes()


_SCHEMES_UNIMPORTED = """
import json, sys
from requests_bloxs_errors import storage
said = {name: storage.schemes(getattr(storage, name)) for name in sys.argv[1:]}
loaded = [name for name in sys.modules if name.startswith("requests_bloxs_errors.storage.")]
print(json.dumps([said, sorted(loaded)]))
"""


def test_what_a_built_in_backend_offers_is_known_without_importing_it():
    """``schemes()`` answers for the built-in backends from a table (no ``sqlite3``
    import for a message or ``--help``); what it says then is what the classes say."""
    capabilities = ("PermitLog", "TokenStore", "OutboxStore")
    fresh = subprocess.run(
        [sys.executable, "-c", _SCHEMES_UNIMPORTED, *capabilities],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fresh.returncode == 0, fresh.stderr
    said, loaded = json.loads(fresh.stdout)
    assert not {
        "requests_bloxs_errors.storage.sqlite",
        "requests_bloxs_errors.storage.redis",
    } & set(loaded)  # answered from the table
    for scheme in ("memory", "sqlite", "redis", "rediss"):
        storage.backend_class(scheme)  # imported here: schemes() asks the classes
    assert said == {name: storage.schemes(getattr(storage, name)) for name in capabilities}


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///relative.db", "names the relative path 'relative.db'"),
        ("sqlite:///var/tmp/rbe.db", "such as 'sqlite:////var/tmp/rbe.db'"),
        ("sqlite:///", "names no file"),
        ("sqlite://host/x.db", "must be 'sqlite:///' then the absolute path"),
        ("sqlite:////var/tmp/", "must name a file"),
    ],
)
def test_an_sqlite_url_names_an_absolute_path_or_is_refused(url, says):
    """Three slashes then the absolute path, as SQLAlchemy writes it; a relative path
    would be a different file for each process that starts elsewhere."""
    for make in (
        lambda: rbe.RateLimit({"*": "1/second"}, storage=url),
        lambda: rbe.Outbox(url),
    ):
        with pytest.raises(ValueError, match="sqlite") as caught:
            make()
        assert says in str(caught.value)
        assert "\n" not in str(caught.value)


def test_an_sqlite_url_with_four_slashes_is_the_absolute_path(tmp_path):
    parsed = storage.parse(f"sqlite:///{tmp_path}/rbe.db", capability=storage.PermitLog)
    assert parsed.path == f"{tmp_path}/rbe.db"
    assert storage.parse("sqlite:////var/lib/app/rbe.db").path == "/var/lib/app/rbe.db"


@pytest.mark.parametrize("scheme", ["", "Upper", "two words", 3])
def test_a_scheme_must_be_a_lower_case_word(scheme):
    with pytest.raises(ValueError, match="scheme"):
        storage.register_backend(scheme, DictBackend)  # type: ignore[arg-type]


def test_one_sealer_and_one_lease_owner_serve_every_feature():
    from requests_bloxs_errors.storage.sealing import Sealer

    sealer = Sealer(b"k" * 32, "a test")
    blob = sealer.seal(b"plain", b"label")
    assert sealer.open(blob, b"label") == b"plain"
    with pytest.raises(ValueError, match="does not open"):
        sealer.open(blob, b"another label")
    owners = {storage.lease_owner() for _ in range(100)}
    assert len(owners) == 100
