"""Real Redis high-availability sets for the tests, on free loopback ports: a master,
a replica and a Sentinel (:class:`SentinelSet`), and a three-master Redis Cluster
(:class:`RedisClusterSet`). Stopped, and their files removed, after."""

from __future__ import annotations

import random
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TypeVar

import redis

from .redisserver import free_port

__all__ = ["RedisClusterSet", "SentinelSet"]


def _start(program: str, args: list[str], workdir: str) -> subprocess.Popen[bytes]:
    with open(Path(workdir) / "log.txt", "ab") as log:
        return subprocess.Popen([program, *args], cwd=workdir, stdout=log, stderr=log)


def _server_args(port: int, workdir: str) -> list[str]:
    return [
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", workdir,
        "--protected-mode", "yes",
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip


def _wait(what: str, check: object, limit: float = 15.0) -> None:
    """Wait (loosely bounded) until ``check()`` is true."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not happen within {limit} s")


def _cluster_port() -> int:
    """A free loopback port whose cluster bus port (10000 higher) is free too: Redis
    refuses a cluster node above 55535."""
    while True:
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as one, socket.socket() as bus:
                one.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


_P = TypeVar("_P", bound="_Processes")


class _Processes:
    """Started processes in a folder of their own: ``with`` starts them (stopping
    what started when one fails) and stops them and removes the folder at the end."""

    _dir: tempfile.TemporaryDirectory[str]

    def start(self: _P) -> _P:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _P) -> _P:
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


class SentinelSet(_Processes):
    """``with SentinelSet(program) as s: s.url`` - service ``svc`` on a master and
    one replica, watched by one Sentinel (quorum 1, down after 500 ms)."""

    def __init__(self, program: str) -> None:
        self.program = program
        self._dir = tempfile.TemporaryDirectory(prefix="rbe-sentinel-")
        self.ports: list[int] = []
        self.sentinel_port = 0
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/svc"

    def _dir_for(self, name: str) -> str:
        path = Path(self._dir.name) / name
        path.mkdir()
        return str(path)

    def start(self) -> SentinelSet:
        master, replica, self.sentinel_port = free_port(), free_port(), free_port()
        self.ports = [master, replica]
        self._processes[master] = _start(
            self.program, _server_args(master, self._dir_for("m")), self._dir.name
        )
        self._processes[replica] = _start(
            self.program,
            [*_server_args(replica, self._dir_for("r")), "--replicaof", "127.0.0.1", str(master)],
            self._dir.name,
        )
        config = Path(self._dir.name) / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._dir.name}\n"
            f"sentinel monitor svc 127.0.0.1 {master} 1\n"
            "sentinel down-after-milliseconds svc 500\n"
            "sentinel failover-timeout svc 2000\n"
            "sentinel parallel-syncs svc 1\n"
        )
        self._processes[self.sentinel_port] = _start(
            self.program, [str(config), "--sentinel"], self._dir.name
        )
        sentinel = self.client(self.sentinel_port)
        _wait(
            "the replica's sync",
            lambda: self.client(replica).info("replication")["master_link_status"] == "up",
        )
        _wait("the Sentinel's sight of the replica", lambda: sentinel.sentinel_slaves("svc"))
        return self

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def master_port(self) -> int:
        """The master's port, as the Sentinel says now."""
        return int(self.client(self.sentinel_port).sentinel_get_master_addr_by_name("svc")[1])

    def kill(self, port: int) -> None:
        """Kill the server on ``port`` at once (as a host that dies)."""
        _stop(self._processes[port])

    def stop(self) -> None:
        for process in self._processes.values():
            _stop(process)
        self._processes = {}


class RedisClusterSet(_Processes):
    """``with RedisClusterSet(program, cli) as c: c.url`` - three masters, no replicas,
    every slot covered."""

    def __init__(self, program: str, cli: str) -> None:
        self.program = program
        self.cli = cli
        self._dir = tempfile.TemporaryDirectory(prefix="rbe-cluster-")
        self.ports: list[int] = []
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def start(self) -> RedisClusterSet:
        self.ports = [_cluster_port() for _ in range(3)]
        for port in self.ports:
            workdir = Path(self._dir.name) / str(port)
            workdir.mkdir()
            self._processes.append(
                _start(
                    self.program,
                    [
                        *_server_args(port, str(workdir)),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(workdir / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    str(workdir),
                )
            )
        for port in self.ports:
            log = Path(self._dir.name) / str(port) / "log.txt"
            try:
                _wait(f"redis-server on {port}", redis.Redis(port=port, socket_timeout=2).ping)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: {log.read_text()[-500:]}") from None
        subprocess.run(
            [
                self.cli, "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )  # fmt: skip
        for port in self.ports:
            node = redis.Redis(port=port, socket_timeout=2)
            _wait(
                "the cluster's agreement", lambda n=node: n.cluster("info")["cluster_state"] == "ok"
            )
        return self

    def stop(self) -> None:
        for process in self._processes:
            _stop(process)
        self._processes = []
