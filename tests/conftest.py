"""Fixtures shared by the whole suite.

Store fixtures: ``redis_server`` (a real ``redis-server`` for the session), ``redis_url``
(that server, flushed before each test) and ``store`` (an opened store, once per
implementation). ``start_redis_server`` is the helper behind them, usable directly by tests
that need their own server (e.g. with AOF persistence, to kill and restart it).
``redis_cluster`` is a real 3-master Redis Cluster for the session (``redis_cluster_url``:
flushed before each test); ``store`` runs on it too, as the ``redis-cluster`` kind.
``s3_server`` is a real S3-compatible server (moto's server mode) for the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.store import Store, open_store
from tests.harness import SECRETS

if TYPE_CHECKING:
    from tests.s3 import S3Server


# -- redis-server --------------------------------------------------------------------------------
@dataclass
class RedisServer:
    """A ``redis-server`` child process on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str) -> bytes:
        """Send one command over a fresh socket and return the raw reply line."""
        return redis_command(self.port, *args)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no flush — what a crash looks like."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def redis_binary() -> str:
    """Path of ``redis-server``; fails under CI (where it must be installed), else skips."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (run `make system-deps`)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """A minimal RESP client for fixtures: no pools to close, nothing left behind."""
    return redis_reply(port, *args, timeout=timeout).split(b"\r\n", 1)[0]


def redis_reply(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """The reply to one command as raw bytes (the first read of it: up to 64 KiB)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def start_redis_server(
    directory: Path,
    *,
    appendonly: bool = False,
    port: int | None = None,
    extra: Sequence[str] = (),
) -> RedisServer:
    """Start ``redis-server`` in ``directory`` and wait until it answers PING.

    ``appendonly=True`` turns on AOF with ``appendfsync always``, for tests that kill the
    server and expect acknowledged writes to survive; pass the same ``port`` to restart it.
    """
    port = free_port() if port is None else port
    args = [
        redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--save", "",
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    if appendonly:
        args += ["--appendonly", "yes", "--appendfsync", "always"]
    else:
        args += ["--appendonly", "no"]
    args += extra
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603 — our own argv, no shell
    server = RedisServer(process, port, directory)
    deadline = time.monotonic() + 10
    while True:
        try:
            if server.command("PING") == b"+PONG":
                return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            log = directory / "redis.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"redis-server did not start on port {port}:\n{tail}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One throwaway redis-server (no persistence) for the whole session."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's redis-server, emptied before each test so tests are isolated."""
    assert redis_server.command("FLUSHALL") == b"+OK"
    return redis_server.url


# -- Redis Cluster -------------------------------------------------------------------------------
@dataclass
class RedisCluster:
    """Three cluster-enabled ``redis-server`` masters on loopback ports, slots shared out."""

    masters: list[RedisServer]
    appendonly: bool = False
    options: list[list[str]] = field(default_factory=list)  # each node's cluster options

    @property
    def url(self) -> str:
        """The first master's URL: a cluster client learns the other nodes from it."""
        return self.masters[0].url

    def restart(self, index: int) -> None:
        """Start master ``index`` again (after ``kill()``) on its ports with its files (AOF,
        ``nodes.conf``), and wait until the cluster reports ``cluster_state:ok``."""
        old = self.masters[index]
        self.masters[index] = start_redis_server(
            old.directory, appendonly=self.appendonly, port=old.port, extra=self.options[index]
        )
        _wait_cluster_ok(self.masters)

    def flush(self) -> None:
        for master in self.masters:
            assert master.command("FLUSHALL") == b"+OK"

    def stop(self) -> None:
        for master in self.masters:
            master.stop()


def start_redis_cluster(
    directory: Path, *, masters: int = 3, appendonly: bool = False
) -> RedisCluster:
    """Start ``masters`` cluster nodes in ``directory`` and join them with
    ``redis-cli --cluster create``; returns once every node reports ``cluster_state:ok``.
    ``appendonly`` as for :func:`start_redis_server` (kill a master and ``restart`` it)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        redis_binary()  # the same skip / CI failure as a missing redis-server
        pytest.fail("redis-cli is not installed (Debian: redis-tools; run `make system-deps`)")
    nodes: list[RedisServer] = []
    cluster = RedisCluster(nodes, appendonly=appendonly)
    try:
        for n in range(masters):
            folder = directory / f"node{n}"
            folder.mkdir()
            # The cluster bus port is given too: by default it is the port + 10000, which
            # for a port from the ephemeral range may be out of range or taken.
            options = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            options += ["--cluster-config-file", str(folder / "nodes.conf")]
            cluster.options.append(options)
            nodes.append(start_redis_server(folder, appendonly=appendonly, extra=options))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        create = subprocess.run(  # noqa: S603 — our own argv, no shell
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{create.stdout.decode()[-2000:]}")
        _wait_cluster_ok(nodes)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_cluster_ok(nodes: Sequence[RedisServer], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not all(b"cluster_state:ok" in redis_reply(n.port, "CLUSTER", "INFO") for n in nodes):
        if time.monotonic() > deadline:
            pytest.fail("the Redis Cluster did not reach cluster_state:ok")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One throwaway 3-master Redis Cluster (no persistence) for the whole session."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """URL of a node of the session's Redis Cluster, every master emptied before each test."""
    redis_cluster.flush()
    return redis_cluster.url


# -- S3 --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (moto's) on loopback, for the session; a bucket per test."""
    from tests.s3 import start_s3_server  # moto loads Flask: only for the tests that use it

    server = start_s3_server(free_port())
    yield server
    server.stop()


# -- stores --------------------------------------------------------------------------------------
STORE_KINDS = ["memory", "sqlite", "redis", "redis-cluster"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened, empty store: once per implementation; closed after the test."""
    kind: str = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    elif kind == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = request.getfixturevalue("redis_cluster_url")
    opened = await open_store(url, cluster=kind == "redis-cluster")
    yield opened
    await opened.aclose()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh store, once for each real implementation."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    """A tenant's website: verifies and records the signed reply webhooks."""
    receiver = await CallbackReceiver(secrets=[SECRETS["T_CALLBACK"]]).start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def channel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the test channels' secrets (``tests.harness.SECRETS``) in the environment."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def notify_receiver() -> AsyncIterator[CallbackReceiver]:
    """Receives a tenant's quota warnings; accepts only ones signed with T_NOTIFY (v1)."""
    receiver = await CallbackReceiver(secrets=[SECRETS["T_NOTIFY"]], accept_v1=True).start()
    yield receiver
    await receiver.stop()
