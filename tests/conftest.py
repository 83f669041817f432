"""Fixtures shared by the whole suite.

Store fixtures: ``redis_server`` (a real ``redis-server`` for the session), ``redis_url``
(that server, flushed before each test) and ``store`` (an opened store, once per
implementation). ``start_redis_server`` is the helper behind them, usable directly by tests
that need their own server (e.g. with AOF persistence, to kill and restart it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.http_api.emulator import CallbackReceiver
from gateway.store import Store, open_store
from tests.harness import SECRETS


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
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]


def start_redis_server(
    directory: Path, *, appendonly: bool = False, port: int | None = None
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


# -- stores --------------------------------------------------------------------------------------
STORE_KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened, empty store: once per implementation; closed after the test."""
    kind: str = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        url = request.getfixturevalue("redis_url")
    opened = await open_store(url)
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
