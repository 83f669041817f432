"""Bench cases: each module here exposes ``cases() -> list[ThroughputCase]``.

A throughput case starts one server process (pinned to the server core), names the request
generator that feeds it (cases fed by the same generator get byte-identical request
streams) and optionally checks the store afterwards. To add a channel, write
``bench/cases/<kind>.py`` with its plain-SDK baseline and its gateway case and list the
module in ``MODULES``; a module whose connector is not installed yet returns no cases.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.procs import Placement, RedisClusterServers, RedisServer, Server
from bench.wrk import RawRequest

__all__ = ["MODULES", "RequestMaker", "RunContext", "ThroughputCase", "all_cases"]

MODULES = (
    "bench.cases.bare_aiohttp",
    "bench.cases.http_api",
    "bench.cases.slack",
    "bench.cases.line",
    "bench.cases.whatsapp",
    "bench.cases.email",
)

# (count, tag) -> requests; ``tag`` makes event ids distinct between request files.
RequestMaker = Callable[[int, str], Iterator[RawRequest]]


@dataclass(slots=True)
class RunContext:
    """What a case may use while it runs: the scratch folder, the cores, the stores."""

    workdir: Path
    placement: Placement
    redis: RedisServer | None = None
    redis_cluster: RedisClusterServers | None = None
    # Other Redis set-ups, started on first use: "redis-replica" (a primary and its replica),
    # "redis-always" (appendfsync always). Each kind's first server is the one to connect to.
    redis_others: dict[str, list[RedisServer]] = field(default_factory=dict)
    counter: int = 0

    def scratch(self, name: str) -> Path:
        self.counter += 1
        path = self.workdir / f"{self.counter:02d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def store_url(self, kind: str, where: Path) -> str:
        """A fresh, empty store of ``kind`` (memory, sqlite, redis or redis-cluster: a URL
        of one node of a 3-master cluster, for ``store.cluster: true``)."""
        if kind == "memory":
            return "memory://"
        if kind == "sqlite":
            return f"sqlite:///{where / 'gateway.db'}"
        if kind == "redis":
            if self.redis is None:
                self.redis = RedisServer(self.workdir / "redis", cores=self.placement.load).start()
            self.redis.flush()
            return self.redis.url
        if kind in _OTHER_REDIS:
            servers = self.redis_others.get(kind)
            if servers is None:
                servers = self.redis_others[kind] = _start_other_redis(self, kind)
            servers[0].flush()  # a replica follows its primary's FLUSHALL
            return servers[0].url
        if kind == "redis-cluster":
            if self.redis_cluster is None:
                where = self.workdir / "redis-cluster"
                self.redis_cluster = RedisClusterServers(where, self.placement.load).start()
            self.redis_cluster.flush()
            return self.redis_cluster.url
        raise ValueError(f"unknown store kind {kind!r}")

    @staticmethod
    def store_options(kind: str) -> dict[str, Any]:
        """What the config's ``store`` block needs beside the URL for a store of ``kind``."""
        return {"replica_acks": 1} if kind == "redis-replica" else {}

    def stop_others(self) -> None:
        from bench.replica_acks import stop

        for servers in self.redis_others.values():
            for server in reversed(servers):
                stop(server)


_OTHER_REDIS = ("redis-replica", "redis-always")


def _start_other_redis(ctx: RunContext, kind: str) -> list[RedisServer]:
    where, cores = ctx.workdir / kind, ctx.placement.load
    if kind == "redis-always":
        return [RedisServer(where, cores, extra=["--appendfsync", "always"]).start()]
    primary = RedisServer(where / "primary", cores, extra=["--repl-diskless-sync-delay", "0"])
    primary.start()
    follow = ["--replicaof", "127.0.0.1", str(primary.port)]
    replica = RedisServer(where / "replica", cores, extra=follow).start()
    deadline = time.monotonic() + 30
    while b"master_link_status:up" not in replica.reply("INFO", "replication"):
        if time.monotonic() > deadline:
            primary.stop()
            replica.stop()
            raise RuntimeError("the bench's replica did not sync; see " + str(where))
        time.sleep(0.1)
    return [primary, replica]


@dataclass(frozen=True, slots=True)
class ThroughputCase:
    key: str  # short, for --cases and the JSON output
    label: str  # the table's first column
    requests: RequestMaker
    start: Callable[[RunContext], Server]
    unique: bool = True  # needs distinct event ids (False for baselines that ignore them)
    baseline: str | None = None  # key of the case's own plain-SDK baseline, if any
    # Run after the server stopped: a short note proving the work was really done.
    check: Callable[[RunContext, Server], str] | None = None
    needs: tuple[str, ...] = field(default=())  # programs that must be installed
    # Upper bound of the case's req/s, to size its request file when the expected rate (the
    # bare baseline's) is far above it: large signed bodies at 33k req/s would fill GBs.
    rate_cap: float | None = None
    # "wrk" for HTTP; "smtp" runs bench.smtpload (the request file's records are mails).
    driver: Literal["wrk", "smtp"] = "wrk"
    # Whether "x bare" (against bare aiohttp) means anything for this case (not for SMTP).
    vs_bare_http: bool = True


def all_cases() -> list[ThroughputCase]:
    found: list[ThroughputCase] = []
    for name in MODULES:
        module = importlib.import_module(name)
        found.extend(module.cases())
    return found


def start_module_server(ctx: RunContext, name: str, module: str, *args: str) -> Server:
    """``python -m MODULE PORT ARGS…`` pinned to the server core; ready when /healthz answers.

    The plain-SDK baselines are such modules: an aiohttp app with the route under test and
    ``GET /healthz``.
    """
    from bench.procs import free_port, python_module, spawn, wait_http

    where = ctx.scratch(name)
    port = free_port()
    log_path = where / f"{name}.log"
    proc = spawn(
        python_module(module, str(port), *args), cores=ctx.placement.server, log_path=log_path
    )
    server = Server(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    try:
        wait_http(server.url + "/healthz", proc=proc)
    except BaseException:
        server.stop()
        raise
    return server


def start_channel_gateway(
    ctx: RunContext,
    name: str,
    block: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    role: str = "web",
) -> Server:
    """The real gateway (web role unless told, Redis) with one channel, on the server's cores."""
    from bench import gateway  # bench.gateway is the process-level helper; import on use

    where = ctx.scratch(name)
    url = ctx.store_url("redis", where)
    server = gateway.start(
        name,
        gateway.config(url, channels=[block]),
        workdir=where,
        cores=ctx.placement.server,
        role=role,
        env=env,
    )
    server.extra["store_url"] = url
    return server


def inbox_check(ctx: RunContext, server: Server) -> str:
    """After a run: how many entries ingest really appended."""
    from bench import gateway

    return f"inbox holds {gateway.count_inbox(server.extra['store_url'])} entries"
