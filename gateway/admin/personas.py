"""Reloading personas from disk without a restart, in every process.

``POST /v1/personas/reload`` (or :func:`reload_personas`) loads the persona folder again,
checks it against the routing configuration, swaps it into this process and then bumps a
counter in the shared store (``Keyspace.personas_version``). Each process that runs
workers polls that counter (:class:`PersonaSync`, every :data:`POLL_SECONDS`) and reloads
when it changes. A store counter rather than a pub/sub message because it needs nothing
beyond the ``Store`` protocol, works the same on SQLite and Redis, and a worker that was
down or partitioned away catches up on its next poll instead of missing a message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from agents.persona import PersonaRegistry, load_personas
from gateway.config import GatewayConfig
from gateway.errors import ConfigError, StoreError
from gateway.observability import get_logger
from gateway.runtime import RUNTIME, Runtime

__all__ = ["PERSONA_SYNC", "PersonaSync", "install_persona_sync", "reload_personas"]

log = get_logger(__name__)

POLL_SECONDS = 1.0


class PersonaSync:
    """The personas version this process has applied."""

    def __init__(self) -> None:
        self.seen: int | None = None


PERSONA_SYNC = web.AppKey("persona_sync", PersonaSync)


def persona_problems(config: GatewayConfig, personas: PersonaRegistry) -> list[tuple[str, str]]:
    """References from the configuration to personas that do not exist, and from personas
    to MCP servers the configuration does not declare."""
    problems: list[tuple[str, str]] = []
    if config.routing.default_persona not in personas:
        problems.append(("routing.default_persona", config.routing.default_persona))
    for n, rule in enumerate(config.routing.rules):
        if rule.persona not in personas:
            problems.append((f"routing.rules.{n}.persona", rule.persona))
    for n, tenant in enumerate(config.tenants):
        if tenant.default_persona is not None and tenant.default_persona not in personas:
            problems.append((f"tenants.{n}.default_persona", tenant.default_persona))
    found = [(path, f"no persona named {name!r}") for path, name in problems]
    for persona in personas.values():
        for server in sorted({g.server for g in persona.mcp_grants} - set(config.mcp_servers)):
            found.append((f"personas.{persona.name}.tools", f"no MCP server named {server!r}"))
    return found


def _apply(rt: Runtime, personas: PersonaRegistry) -> None:
    rt.personas = personas
    if rt.worker is not None:
        rt.worker.reload(personas)


def _load_checked(config: GatewayConfig) -> PersonaRegistry:
    personas = load_personas(config.personas_dir)
    problems = persona_problems(config, personas)
    if problems:
        raise ConfigError(problems)
    return personas


async def reload_personas(app: web.Application) -> tuple[PersonaRegistry, int]:
    """Reload here, then tell every other process; ConfigError leaves everything as it was."""
    rt = app[RUNTIME]
    assert rt.store is not None  # the app is running
    personas = _load_checked(rt.config)
    _apply(rt, personas)
    version = await rt.store.incr(rt.keyspace.personas_version())
    sync = app.get(PERSONA_SYNC)
    if sync is not None:
        sync.seen = version
    log.info("personas.reloaded", personas=len(personas), version=version)
    return personas, version


def install_persona_sync(app: web.Application) -> None:
    """Make this app's workers follow reloads made by any process (worker roles)."""
    app[PERSONA_SYNC] = PersonaSync()
    app.cleanup_ctx.append(_persona_sync_ctx)


async def _persona_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_poll(app), name="persona-sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _poll(app: web.Application) -> None:
    rt = app[RUNTIME]
    sync = app[PERSONA_SYNC]
    assert rt.store is not None  # opened before this context
    key = rt.keyspace.personas_version()
    while True:
        try:
            version = await rt.store.incr(key, 0)  # a read: the protocol has no plain get
            if sync.seen is None:
                sync.seen = version
            elif version != sync.seen:
                try:
                    _apply(rt, _load_checked(rt.config))
                    log.info("personas.synced", version=version)
                except ConfigError as exc:
                    # Keep serving the personas we have; the reload is retried next change.
                    log.error("personas.sync_failed", version=version, problems=len(exc.problems))
                sync.seen = version
        except StoreError as exc:
            log.warning("personas.sync_store_error", error=str(exc))
        await asyncio.sleep(POLL_SECONDS)
