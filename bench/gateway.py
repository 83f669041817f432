"""The real gateway as a bench server: a generated config, ``flowbiz serve`` in its own process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from bench.procs import REPO, Server, free_port, python_module, spawn, wait_http
from gateway.store import Keyspace, open_store

TENANT = "bench"
SECRETS = {
    "BENCH_SIGNING_SECRET": "bench-signing-secret",
    "BENCH_CALLBACK_SECRET": "bench-callback-secret",
}
SIGNING_SECRET = SECRETS["BENCH_SIGNING_SECRET"]
CALLBACK_SECRET = SECRETS["BENCH_CALLBACK_SECRET"]
# Requests are signed before the run; a generous window keeps them fresh for its length.
REPLAY_WINDOW_SECONDS = 3600
PARTITIONS = 8


def config(
    store_url: str,
    *,
    callback_url: str | None = None,
    personas_dir: Path | None = None,
    pipeline: dict[str, Any] | None = None,
    channels: list[dict[str, Any]] | None = None,
    cluster: bool = False,
) -> dict[str, Any]:
    """A gateway config with one tenant on the HTTP API channel, signature-authenticated only.

    ``channels`` replaces the HTTP channel with other channel blocks (a channel's bench case);
    ``cluster``: ``store_url`` names a node of a Redis Cluster.
    """
    channel: dict[str, Any] = {
        "kind": "http",
        "signing_secrets": ["env:BENCH_SIGNING_SECRET"],
        "replay_window_seconds": REPLAY_WINDOW_SECONDS,
    }
    if callback_url is not None:
        channel |= {
            "callback_url": callback_url,
            "callback_secrets": ["env:BENCH_CALLBACK_SECRET"],
            "callback_allow_private": True,  # the bench receiver listens on loopback
        }
    return {
        "store": {"url": store_url, "partitions": PARTITIONS, "cluster": cluster},
        "personas_dir": str(personas_dir or REPO / "agents" / "personas"),
        "pipeline": {"shutdown_grace_seconds": 3, **(pipeline or {})},
        # The load generator is one client address holding every connection of the run.
        "http": {"max_connections_per_client": None},
        "routing": {"default_persona": "core"},
        "log_level": "info",
        "tenants": [{"id": TENANT, "name": "Bench", "channels": channels or [channel]}],
    }


def start(
    name: str,
    data: dict[str, Any],
    *,
    workdir: Path,
    cores: tuple[int, ...],
    role: str,
    env: dict[str, str] | None = None,
) -> Server:
    """``python -m gateway.cli serve --role ROLE`` on a free port (and its operations listener
    on another, in ``extra["ops_url"]``), pinned to ``cores``.

    ``env`` adds the secrets the config's ``env:`` references name (beside ``SECRETS``).
    """
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(data))
    port, ops_port = free_port(), free_port()
    cmd = python_module(
        *("gateway.cli", "serve", "--config", str(config_path), "--role", role),
        *("--port", str(port), "--operations-port", str(ops_port)),
    )
    log_path = workdir / f"{name}.log"
    proc = spawn(cmd, cores=cores, log_path=log_path, env={**SECRETS, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    ops_url = f"http://127.0.0.1:{ops_port}"  # /readyz and /metrics live there
    extra = {"role": role, "ops_url": ops_url}
    server = Server(name=name, url=url, proc=proc, log_path=log_path, extra=extra)
    try:
        wait_http(ops_url + "/readyz", proc=proc)
    except BaseException:
        server.stop()
        raise
    return server


def count_inbox(store_url: str) -> int:
    """Entries in all inbox partitions: what ingest really appended."""

    async def count() -> int:
        store = await open_store(store_url)
        keyspace = Keyspace(partitions=PARTITIONS)
        total = 0
        try:
            for p in range(PARTITIONS):
                after: str | None = None
                while entries := await store.range(keyspace.inbox(p), after=after, count=5000):
                    total += len(entries)
                    after = entries[-1].id
        finally:
            await store.aclose()
        return total

    return asyncio.run(count())
