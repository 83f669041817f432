"""Replicated Redis for the HA tests: a primary with a replica, and three sentinels.

Everything runs as real ``redis-server`` processes on free loopback ports (a sentinel is
``redis-server <file> --sentinel``, the same binary: Debian's ``redis-sentinel`` package
only adds a service unit). Sentinels use short timeouts (``down-after-milliseconds`` 500,
``failover-timeout`` 2000) so that a failover completes in a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import RedisServer, free_port, redis_binary, redis_reply, start_redis_server

__all__ = [
    "MASTER_NAME",
    "Replicated",
    "ReplicatedCluster",
    "SentinelGroup",
    "start_replicated",
    "start_replicated_cluster",
    "start_sentinels",
]

MASTER_NAME = "flowbiz"


def info(port: int, section: str = "replication") -> dict[str, str]:
    raw = redis_reply(port, "INFO", section).decode(errors="replace")
    out: dict[str, str] = {}
    for line in raw.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def wait_until(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout}s")
        time.sleep(0.05)


@dataclass
class Replicated:
    """A primary and its replicas, each a redis-server child process."""

    primary: RedisServer
    replicas: list[RedisServer]

    def stop(self) -> None:
        for server in [self.primary, *self.replicas]:
            server.stop()


def start_replicated(directory: Path, *, replicas: int = 1) -> Replicated:
    """A primary and ``replicas`` replicas of it; returns once every replica is in sync."""
    primary_dir = directory / "primary"
    primary_dir.mkdir(parents=True)
    # No wait for more replicas before a full sync (5 s by default): tests start them at once.
    no_sync_delay = ["--repl-diskless-sync-delay", "0"]  # for replicas too, once promoted
    primary = start_redis_server(primary_dir, extra=no_sync_delay)
    replica_of = ["--replicaof", "127.0.0.1", str(primary.port)]
    group = Replicated(primary, [])
    try:
        for n in range(replicas):
            folder = directory / f"replica{n}"
            folder.mkdir(parents=True)
            group.replicas.append(start_redis_server(folder, extra=[*replica_of, *no_sync_delay]))
        wait_until(
            lambda: all(info(r.port).get("master_link_status") == "up" for r in group.replicas),
            "the replicas did not sync",
        )
    except BaseException:
        group.stop()
        raise
    return group


@dataclass
class SentinelGroup:
    """Three sentinels monitoring ``MASTER_NAME`` (quorum 2)."""

    processes: list[subprocess.Popen[bytes]]
    ports: list[int]
    directory: Path
    extra: list[str] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://{self.addresses}/{MASTER_NAME}/{db}"

    def master_port(self) -> int | None:
        """The master's port as a sentinel reports it (None if none answers)."""
        for port in self.ports:
            try:
                reply = redis_reply(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            except OSError:
                continue
            parts = reply.split(b"\r\n")
            if len(parts) >= 5 and parts[0] == b"*2":
                return int(parts[4])
        return None

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_sentinels(directory: Path, primary_port: int, *, count: int = 3) -> SentinelGroup:
    """``count`` sentinels watching the primary on ``primary_port``; returns once each one
    knows the master and its replicas and the other sentinels."""
    group = SentinelGroup([], [], directory)
    try:
        for n in range(count):
            port = free_port()
            folder = directory / f"sentinel{n}"
            folder.mkdir(parents=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                f"dir {folder}\n"
                f"logfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 500\n"
                f"sentinel failover-timeout {MASTER_NAME} 2000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            group.processes.append(
                subprocess.Popen(  # noqa: S603 — our own argv, no shell
                    [redis_binary(), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            group.ports.append(port)

        def ready() -> bool:
            for port in group.ports:
                master = info(port, "sentinel").get("master0", "")
                if "status=ok" not in master or f"sentinels={count}" not in master:
                    return False
                if "slaves=0" in master:
                    return False
            return True

        wait_until(ready, "the sentinels did not find the master, its replica and each other")
    except BaseException:
        group.stop()
        raise
    return group


@dataclass
class ReplicatedCluster:
    """A Redis Cluster of ``masters`` masters, each with one replica (``nodes``: masters
    first, as ``redis-cli --cluster create`` pairs them), with a short node timeout so that
    a replica takes over from a dead master in a few seconds."""

    nodes: list[RedisServer]
    options: list[list[str]]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def role_of(self, server: RedisServer) -> str:
        return info(server.port).get("role", "")

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The node replicating ``master``."""
        for node in self.nodes:
            fields = info(node.port)
            if fields.get("role") == "slave" and fields.get("master_port") == str(master.port):
                return node
        raise LookupError(f"no replica of {master.port}")

    def master_of_key(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot."""
        reply = redis_reply(self.nodes[0].port, "CLUSTER", "KEYSLOT", key)
        slot = int(reply.split(b"\r\n")[0][1:])
        for node in self.nodes:
            if node.process.poll() is None and self.role_of(node) == "master" and _owns(node, slot):
                return node
        raise LookupError(f"no master owns slot {slot}")

    def restart(self, server: RedisServer) -> RedisServer:
        """Start ``server`` again (after its kill) on its port with its ``nodes.conf``."""
        index = self.nodes.index(server)
        self.nodes[index] = start_redis_server(
            server.directory, port=server.port, extra=self.options[index]
        )
        return self.nodes[index]

    def wait_ok(self, timeout: float = 30) -> None:
        wait_until(
            lambda: all(
                b"cluster_state:ok" in redis_reply(n.port, "CLUSTER", "INFO")
                for n in self.nodes
                if n.process.poll() is None
            ),
            "the Redis Cluster did not reach cluster_state:ok",
            timeout,
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _owns(node: RedisServer, slot: int) -> bool:
    """Whether ``node`` serves ``slot``, by its own ``CLUSTER NODES`` line (``myself``)."""
    for line in redis_reply(node.port, "CLUSTER", "NODES").decode(errors="replace").splitlines():
        fields = line.split()
        if len(fields) < 8 or "myself" not in fields[2]:
            continue
        for part in fields[8:]:
            if part.startswith("["):
                continue
            low, _, high = part.partition("-")
            if int(low) <= slot <= int(high or low):
                return True
    return False


def start_replicated_cluster(directory: Path, *, masters: int = 3) -> ReplicatedCluster:
    """``masters`` masters with a replica each, joined by ``redis-cli --cluster create
    --cluster-replicas 1``; returns once every node reports ``cluster_state:ok`` and every
    replica is in sync."""
    cli = shutil.which("redis-cli")
    if cli is None:
        redis_binary()
        pytest.fail("redis-cli is not installed (Debian: redis-tools; run `make system-deps`)")
    cluster = ReplicatedCluster([], [])
    try:
        for n in range(masters * 2):
            folder = directory / f"node{n}"
            folder.mkdir(parents=True)
            options = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            options += ["--cluster-config-file", str(folder / "nodes.conf")]
            # A master unreachable for 1 s is failed over (15 s by default).
            options += ["--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0"]
            cluster.options.append(options)
            cluster.nodes.append(start_redis_server(folder, extra=options))
        addresses = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
        create = subprocess.run(  # noqa: S603 — our own argv, no shell
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{create.stdout.decode()[-2000:]}")
        cluster.wait_ok()
        wait_until(
            lambda: (
                all(
                    info(n.port).get("master_link_status") == "up"
                    for n in cluster.nodes
                    if cluster.role_of(n) == "slave"
                )
                and sum(cluster.role_of(n) == "slave" for n in cluster.nodes) == masters
            ),
            "the cluster's replicas did not sync",
            30,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster
