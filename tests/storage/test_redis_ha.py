"""``redis+sentinel://`` and ``redis+cluster://`` (issue 29, point 6): real
``redis-server`` processes on loopback - a master, a replica and a Sentinel that
fails the master over during a run; a three-master Redis Cluster - with the
guarantees (and the fallback) of ``redis://``.

Pacing is checked as the server counts it (never more than N in any window),
on the real clock: the failover is a real process killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import requests

import requests_bloxs_errors as rbe
from requests_bloxs_errors.simulator import Simulator
from requests_bloxs_errors.storage import (
    CircuitRecord,
    TokenStore,
    accepted,
    fallback,
    open_backend,
    parse,
)

from ..helpers import wait_until
from ..helpers.arrivals import most_in_any
from ..helpers.cli import run
from ..helpers.redisha import RedisClusterSet, SentinelSet
from ..helpers.redisserver import find_redis_server, free_port
from ..helpers.server import Reply

pytestmark = pytest.mark.xdist_group("redis_ha")


def _programs() -> tuple[str, str]:
    program, cli = find_redis_server(), shutil.which("redis-cli")
    if program is None or cli is None:
        message = "redis-server and redis-cli are not installed (apt-get install -y redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; under CI=true they are required", pytrace=False)
        pytest.skip(message)
    return program, cli


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet(*_programs()) as found:
        yield found


@pytest.fixture
def cluster_url(cluster: RedisClusterSet) -> str:
    for port in cluster.ports:
        node = redis.Redis(port=port)
        node.flushall()
        node.close()
    return cluster.url


def _cluster_keys(cluster: RedisClusterSet) -> list[bytes]:
    found: list[bytes] = []
    for port in cluster.ports:
        node = redis.Redis(port=port)
        found += node.keys("rbe:*")
        node.close()
    return found


def _slot(cluster: RedisClusterSet, key: bytes) -> int:
    node = redis.Redis(port=cluster.ports[0])
    try:
        return int(node.execute_command("CLUSTER KEYSLOT", key))
    finally:
        node.close()


# -- URLs ----------------------------------------------------------------------------


def test_the_forms_limits_writes_are_accepted_and_listed():
    for url in (
        "redis+sentinel://localhost:26379/my-redis-service",
        "redis+sentinel://:sekret@localhost:26379,localhost:26380/my-redis-service/2",
        "redis+cluster://localhost:7000",
        "redis+cluster://:sekret@localhost:7000,localhost:7001",
    ):
        assert parse(url, capability=TokenStore).scheme == url.partition("://")[0]
    listed = accepted(TokenStore)
    assert "redis+sentinel://host:26379[,host:port...]/service[/db]" in listed
    assert "redis+cluster://host:port[,host:port...]" in listed


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:hunter2@localhost:26379",  # no service
        "redis+sentinel://:hunter2@localhost:26379/svc/zero",  # a database not a number
        "redis+sentinel://:hunter2@localhost:port/svc",  # a port not a number
        "redis+cluster://:hunter2@localhost:7000/0",  # a cluster has one database
        "redis+cluster://:hunter2@",  # no host
    ],
)
def test_a_malformed_ha_url_is_one_line_without_its_password(url):
    with pytest.raises(ValueError, match=r"^storage must be redis") as caught:
        parse(url, what="storage")
    message = str(caught.value)
    assert "hunter2" not in message
    assert "\n" not in message
    assert message.startswith("storage must be redis+")
    assert "hunter2" not in parse("redis+cluster://:hunter2@h:1").shown


# -- Sentinel ------------------------------------------------------------------------


def test_a_sentinel_failover_during_a_run_fails_no_call_and_the_new_master_is_used(
    server, session, caplog, monkeypatch
):
    # The documented fallback: while the store is gone the process paces on its own
    # (a fresh window), and shares again once the new master answers. The store keeps
    # N per window; a window that spans a switch of store joins two (at most 2N).
    monkeypatch.setattr(fallback, "RETRY_STORE_AFTER", 1.0)  # (5 s: a shorter test)
    caplog.set_level(logging.INFO, logger="requests_bloxs_errors")
    server.route("GET", "/paced", Reply(200, "ok"))
    with SentinelSet(_programs()[0]) as ha:
        old = ha.master_port()
        replica = ha.client(next(port for port in ha.ports if port != old))
        limit = rbe.RateLimit({"*": (5, 1.0)}, storage=ha.url)
        rbe.mount(session, "http://", rate_limit=limit, pool_maxsize=4)
        failures: list[BaseException] = []
        stop = threading.Event()

        def send() -> None:
            while not stop.is_set():
                try:
                    assert session.get(server.url("/paced"), timeout=10).status_code == 200
                except BaseException as exc:  # (recorded, asserted below)
                    failures.append(exc)

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "requests_bloxs_errors"]

        threads = [threading.Thread(target=send) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            # the permits before the failover are replicated to the master to be
            assert wait_until(lambda: _ended_since(replica, 0.0) >= 5, 5)
            killed = time.monotonic()
            ha.kill(old)
            assert wait_until(lambda: ha.master_port() != old, 10), "no failover"
            new = ha.client(ha.master_port())
            switched = float(new.time()[0])
            assert wait_until(lambda: any("sharing resumed" in line for line in said()), 10)
            assert wait_until(lambda: _ended_since(new, switched) >= 3, 5), (
                "no permit reached the new master"
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
        assert not failures, failures[:3]
        arrivals = [r.at for r in server.seen()]
        assert len(arrivals) >= 10
        assert len([at for at in arrivals if at < killed]) >= 5
        # before the store first failed (as logged, before any permit of this process's
        # own window: the kill, or sooner on a host so busy that an answer came late),
        # the store alone paced; across a switch two windows may meet
        offset = time.monotonic() - time.time()
        failed = min(
            r.created + offset
            for r in caplog.records
            if r.name == "requests_bloxs_errors" and "failed (" in r.getMessage()
        )
        assert most_in_any([at for at in arrivals if at < failed], 1.0) <= 5, said()
        assert most_in_any(arrivals, 1.0) <= 10
        new.close()
        replica.close()


def _ended_since(client: redis.Redis, since: float) -> int:
    return sum(int(client.zcount(name, since, "+inf")) for name in client.keys("rbe:{*}:ended"))


@pytest.mark.parametrize(
    "form",
    [
        "redis+sentinel://127.0.0.1:{port}/svc",  # no Sentinel answers: no master is found
        "redis+cluster://127.0.0.1:{port}",  # no node of the cluster answers
    ],
)
def test_a_high_availability_store_nobody_answers_is_an_outage_and_calls_go_on(
    server, session, form
):
    server.route("GET", "/paced", Reply(200, "ok"))
    url = form.format(port=free_port())  # nothing listens there
    backend = open_backend(parse(url))
    with pytest.raises(redis.ConnectionError) as caught:
        backend.check(0.5)
    assert backend.unreachable(caught.value)
    rbe.mount(session, "http://", rate_limit=rbe.RateLimit({"*": (50, 1.0)}, storage=url))
    assert [session.get(server.url("/paced")).status_code for _ in range(3)] == [200] * 3


# -- Cluster -------------------------------------------------------------------------


def test_a_rate_limit_paces_through_a_cluster_with_each_keys_keys_in_one_slot(
    cluster, cluster_url, server, session
):
    server.route("GET", "/a", Reply(200, "ok"))
    server.route("GET", "/b", Reply(200, "ok"))
    limit = rbe.RateLimit(
        {"/a": (4, 1.0), "/b": (4, 1.0)},
        categorize=lambda request: request.path_url,
        storage=cluster_url,
    )
    rbe.mount(session, "http://", rate_limit=limit)
    for _ in range(6):
        assert session.get(server.url("/a")).status_code == 200
        assert session.get(server.url("/b")).status_code == 200
    by_path: dict[str, list[float]] = {}
    for seen in server.seen():
        by_path.setdefault(seen.path, []).append(seen.at)
    assert len(by_path["/a"]) == len(by_path["/b"]) == 6
    assert most_in_any(by_path["/a"], 1.0) <= 4
    assert most_in_any(by_path["/b"], 1.0) <= 4
    tags: dict[bytes, set[int]] = {}
    for key in _cluster_keys(cluster):
        tags.setdefault(key.rpartition(b":")[0], set()).add(_slot(cluster, key))
    assert len(tags) == 2  # one tag per limiter key...
    assert all(len(slots) == 1 for slots in tags.values())  # ...each in one slot
    states = open_backend(parse(cluster_url)).survey()
    assert len(states[0]) == 2
    assert not states[1]
    assert all(state.ended >= 2 for state in states[0])  # (the last period's, at least)


def test_status_reads_every_master_of_a_cluster(cluster, cluster_url):
    backend = open_backend(parse(cluster_url))
    for n in range(12):  # keys spread over the masters
        grant = backend.acquire(f"https://api.example:443|GET /k{n}", (5, 60.0), 1.0)
        backend.finish(f"https://api.example:443|GET /k{n}", grant.stamp)
        backend.publish_circuit(
            CircuitRecord(f"h{n}.example", "open", 1.0, 3, "host", n, 1.0), 60.0
        )
    masters = {port for port in cluster.ports if redis.Redis(port=port).keys("rbe:*")}
    assert len(masters) >= 2
    assert len(backend.circuit_records()) == 12
    shown = run("status", "--storage", cluster_url)
    assert shown.returncode == 0, shown.stderr
    assert all(f"GET /k{n}" in shown.stdout for n in range(12)), shown.stdout
    backend.close()


def test_a_token_cache_in_a_cluster_keeps_entry_and_lock_in_one_slot(cluster, cluster_url):
    pytest.importorskip("cryptography")
    with Simulator() as sim:
        key, secret = sim.bloxs_credentials
        auth = rbe.BloxsTokenAuth(sim.url, key, secret, cache=cluster_url)
        request = requests.Request("GET", "http://127.0.0.1/").prepare()
        auth(request)
        assert request.headers["Authorization"].startswith("Bearer ")
        again = rbe.BloxsTokenAuth(sim.url, key, secret, cache=cluster_url)
        second = requests.Request("GET", "http://127.0.0.1/").prepare()
        again(second)
        assert second.headers["Authorization"] == request.headers["Authorization"]
    (name,) = [k for k in _cluster_keys(cluster) if k.startswith(b"rbe:token:")]
    assert _slot(cluster, name) == _slot(cluster, name + b":lock")
    backend = open_backend(parse(cluster_url))
    assert len(backend.token_entries()) == 1
    backend.close()
