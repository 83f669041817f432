"""Processes of a bench run: pinned servers, a private redis-server, RSS, readiness probes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Placement:
    """Which cores the servers get and which the load generator (and redis-server) get."""

    server: tuple[int, ...]
    load: tuple[int, ...]

    @classmethod
    def choose(cls) -> Placement:
        cores = tuple(sorted(os.sched_getaffinity(0)))
        if len(cores) < 2:
            return cls(server=cores, load=cores)
        return cls(server=cores[-1:], load=cores[:-1])

    @property
    def pinned(self) -> bool:
        return set(self.server).isdisjoint(self.load)

    def describe(self) -> str:
        if not self.pinned:
            return f"NOT pinned apart (only cores {list(self.server)} available)"
        return f"server on core(s) {_cores(self.server)}; load generator on {_cores(self.load)}"


def _cores(cores: Sequence[int]) -> str:
    return ",".join(str(c) for c in cores)


def pinned(cmd: Sequence[str], cores: Sequence[int]) -> list[str]:
    """``cmd`` prefixed with ``taskset`` so the process and all its threads stay on ``cores``."""
    if shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", _cores(cores), *cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (VmRSS), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` and all its threads so far, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: field 14 (utime) and 15 (stime) of proc(5), 1-based overall.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, *, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 2xx; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if 200 <= response.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready within {timeout}s")
        time.sleep(0.05)


@dataclass(slots=True)
class Server:
    """A server process started for one case."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, *, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(
    cmd: Sequence[str],
    *,
    cores: Sequence[int],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` pinned to ``cores``, its output in ``log_path`` (never an unread pipe)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            pinned(cmd, cores),
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass(slots=True)
class RedisServer:
    """A private redis-server on a free loopback port, AOF on with ``everysec`` fsync."""

    workdir: Path
    cores: Sequence[int]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    extra: Sequence[str] = ()  # more redis-server options (a cluster node's)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (bash .ci/system-deps)")
        self.port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "no",
                *self.extra,
            ],
            cores=self.cores,
            log_path=self.workdir / "redis.log",
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start; see " + str(self.workdir))
            time.sleep(0.05)

    def flush(self) -> None:
        """Empty the database between cases, so every case starts from a fresh store."""
        if not self.reply("FLUSHALL").startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")

    def reply(self, *args: str) -> bytes:
        """One command over a fresh connection; its raw reply (first read, up to 64 KiB)."""
        request = b"*%d\r\n" % len(args)
        for arg in args:
            request += b"$%d\r\n%s\r\n" % (len(arg.encode()), arg.encode())
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(request)
            return s.recv(65536)

    def version(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            return "absent"
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False
        ).stdout
        for token in out.split():
            if token.startswith("v="):
                return token[2:]
        return out.strip()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass(slots=True)
class RedisClusterServers:
    """A private Redis Cluster: ``masters`` cluster-enabled redis-servers (AOF ``everysec``
    each, like :class:`RedisServer`) joined by ``redis-cli --cluster create``, no replicas."""

    workdir: Path
    cores: Sequence[int]
    masters: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One node's URL: the cluster client learns the others from it."""
        return self.nodes[0].url

    @property
    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes if n.proc is not None]

    def start(self) -> RedisClusterServers:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (bash .ci/system-deps)")
        for n in range(self.masters):
            folder = self.workdir / f"node{n}"
            # The bus port is given, not left at port + 10000 (out of range for high ports).
            extra = ["--cluster-enabled", "yes", "--cluster-port", str(free_port())]
            extra += ["--cluster-config-file", str(folder / "nodes.conf")]
            self.nodes.append(RedisServer(folder, self.cores, extra=extra).start())
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        create = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-500:]}")
        deadline = time.monotonic() + 20
        while not all(b"cluster_state:ok" in node.reply("CLUSTER", "INFO") for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        return self

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_profiler(pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``output`` (collapsed stacks)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    cmd += ["--rate", "1000", "--format", "raw", "--output", str(output)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached before the load starts
    return spy


@contextlib.contextmanager
def stopping(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()
