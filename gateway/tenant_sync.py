"""Tenants changed through the admin API, applied in every process without a restart.

Each process polls :meth:`~gateway.store.Keyspace.tenants_version` every
:data:`POLL_SECONDS` (the pattern of :mod:`gateway.admin.personas`: a counter, so it needs
nothing beyond the ``Store`` protocol and a process that was away catches up on its next
poll). On a change it reads the overlay, builds the effective configuration
(:func:`gateway.tenant_overlay.effective_config`) and :func:`swap_config` swaps it in; a
process starting reads the overlay before its connectors start (:func:`tenants_ctx`), so a
restart serves what is stored.

What a swap guarantees:

- the runtime's configuration, the connector context's, the worker's (routing, desks), the
  dispatcher's and the quota policy's are replaced together, with nothing awaited between,
  so a request or a turn sees the old tenants or the new ones, never a mix;
- only the connectors whose blocks changed are rebuilt: the new one is built and started
  before it replaces the old one in ``rt.connectors`` (the mapping the worker and the
  dispatcher read) and in ``rt.routes`` (the edge's), and the old one is stopped only after
  ``pipeline.shutdown_grace_seconds``, so sends and requests already in it finish (a new
  connector that cannot bind what the old one holds, an SMTP port, starts after the old
  one is stopped instead);
- a configuration this process cannot build (a variable set where the write was made but
  not here, a persona stored by another process that this one has not polled yet) is
  logged once and not applied: the process keeps serving what it had and tries again at
  each poll;
- an older overlay is never applied over a newer one (a poll racing a local write);
- the worker and the dispatcher do not wait for the poll: before dead-lettering an event
  or a reply for a tenant or channel they do not know, they apply what the store holds
  (:func:`catch_up`) and try once more, so a message another process accepted for a tenant
  it already serves is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from functools import partial

from aiohttp import web

from connectors.base import Connector, Route
from connectors.registry import connector_spec
from gateway.config import GatewayConfig
from gateway.errors import ConfigError, StoreError
from gateway.models import Channel
from gateway.observability import get_logger
from gateway.runtime import RUNTIME, Runtime, TenantSync
from gateway.tenant_overlay import effective_config, read_overlay

__all__ = [
    "POLL_SECONDS",
    "apply_overlay_version",
    "catch_up",
    "index_routes",
    "install_tenant_sync",
    "swap_config",
    "tenant_poll_ctx",
    "tenants_ctx",
]

log = get_logger(__name__)

POLL_SECONDS = 1.0


def index_routes(connectors: Mapping[Channel, Connector]) -> dict[tuple[str, str, str], Route]:
    """Every connector's routes by (channel, method, path): what the edge looks up."""
    return {
        (channel.value, route.method, route.path): route
        for channel, connector in connectors.items()
        for route in connector.routes()
    }


def _kinds(config: GatewayConfig) -> set[str]:
    return {c.kind for t in config.tenants for c in t.channels}


async def swap_config(rt: Runtime, sync: TenantSync, config: GatewayConfig) -> None:
    """Serve ``config`` from now on (see the module's guarantees); call under ``sync.lock``."""
    old = rt.config
    changed = sorted(
        kind
        for kind in _kinds(old) | _kinds(config)
        if old.channels_of_kind(kind) != config.channels_of_kind(kind)
    )
    listening = rt.role in ("all", "web")
    started = sync.started
    built: dict[Channel, Connector] = {}
    try:
        for kind in changed:
            blocks = config.channels_of_kind(kind)
            spec = connector_spec(kind)
            if not blocks or spec is None:  # parse_config refuses kinds not installed
                continue
            connector = spec.factory(context=rt.context, channels=blocks)
            if started and listening:
                await _start_beside(rt, spec.channel, connector)
            built[spec.channel] = connector
    except BaseException:
        for connector in built.values():
            with contextlib.suppress(Exception):
                await connector.stop()
        raise
    # The swap itself: nothing awaited from here to the end of the block.
    rt.config = config
    rt.context.config = config
    if rt.quotas is not None:
        rt.quotas.config = config
    if rt.worker is not None:
        rt.worker.reconfigure(config)
    if rt.dispatcher is not None:
        rt.dispatcher.config = config
    retired: list[Connector] = []
    for kind in changed:
        channel = Channel(kind)
        previous = rt.connectors.pop(channel, None)
        if previous is not None:
            retired.append(previous)
        if channel in built:
            rt.connectors[channel] = built[channel]
    rt.routes = index_routes(rt.connectors)
    if changed:
        log.info("tenants.connectors_swapped", kinds=changed)
    if started:
        for connector in retired:
            task = asyncio.create_task(_retire(connector, config.pipeline.shutdown_grace_seconds))
            sync.retiring.add(task)
            task.add_done_callback(sync.retiring.discard)


async def _start_beside(rt: Runtime, channel: Channel, connector: Connector) -> None:
    """Start ``connector`` while the one it replaces still serves; if it cannot bind what
    the old one holds (an SMTP listener's port), stop the old one first and start again:
    that kind then pauses for the start instead of never taking the change."""
    try:
        await connector.start()
    except OSError as exc:
        previous = rt.connectors.get(channel)
        if previous is None:
            raise
        log.warning("tenants.connector_restarted_in_place", channel=channel.value, error=str(exc))
        await connector.stop()  # whatever it had opened before it failed
        await previous.stop()
        await connector.start()


async def _retire(connector: Connector, grace: float) -> None:
    try:
        await asyncio.sleep(grace)  # what it is sending or answering finishes meanwhile
    finally:
        try:
            await connector.stop()
        except Exception as exc:  # noqa: BLE001 - a connector failing to stop must not stop us
            log.warning("tenants.connector_stop_failed", error=str(exc))


async def apply_overlay_version(rt: Runtime, version: int, config: GatewayConfig) -> None:
    """Swap in ``config``, built from the overlay at ``version``, unless a newer one is in force."""
    sync = rt.tenant_sync
    async with sync.lock:
        if version < sync.applied:
            return
        await swap_config(rt, sync, config)
        sync.applied = version


async def _load(rt: Runtime) -> bool:
    """Apply the stored overlay; False when it does not pass the checks here (logged once
    per version), so the caller tries again later."""
    assert rt.store is not None  # opened before
    assert rt.seed is not None  # set by create_app
    sync = rt.tenant_sync
    overlay, version = await read_overlay(rt.store, rt.keyspace)
    if version == 0:
        return True
    try:
        config = effective_config(rt.seed, overlay, rt.personas)
    except ConfigError as exc:
        # Keep serving what we have. Tried again at each poll: what it lacks here may be a
        # poll away (a persona stored just before the tenant that names it).
        if sync.failed != version:
            log.error(
                "tenants.sync_failed",
                version=version,
                problems=[f"{path}: {message}" for path, message in exc.problems][:20],
            )
            sync.failed = version
        return False
    await apply_overlay_version(rt, version, config)
    log.info("tenants.synced", version=version, tenants=len(config.tenants))
    return True


def install_tenant_sync(app: web.Application) -> None:
    """Follow the tenants stored through the admin API by polling (after every other
    context; :func:`tenants_ctx` must already be in place before the connectors')."""
    app.cleanup_ctx.append(tenant_poll_ctx)


async def tenants_ctx(app: web.Application) -> AsyncIterator[None]:
    """Apply the stored tenants before the connectors start (a cleanup context)."""
    rt = app[RUNTIME]
    assert rt.store is not None  # opened by the store's context
    sync = rt.tenant_sync
    sync.seen = await rt.store.incr(rt.keyspace.tenants_version(), 0)  # before the read
    if not await _load(rt):
        sync.seen = None  # the first poll tries again
    yield


async def catch_up(rt: Runtime) -> bool:
    """Apply the stored tenants now if they changed since the last poll; True when they had.

    The worker and the dispatcher call it before giving up on a tenant or a channel they do
    not know, so a message accepted by a process that already applied a change is not
    dead-lettered by one that would have applied it within the next poll.
    """
    assert rt.store is not None  # open while the app runs
    sync = rt.tenant_sync
    before = sync.seen
    # One reader at a time: a caller that waited here for another's load sees it done.
    async with sync.reading:
        version = await rt.store.incr(rt.keyspace.tenants_version(), 0)
        if version != sync.seen:
            previous, sync.seen = sync.seen, version
            try:
                applied = await _load(rt)
            except StoreError:
                sync.seen = previous  # read again next time: nothing was applied
                raise
            if not applied:
                sync.seen = previous
    return sync.seen != before


async def tenant_poll_ctx(app: web.Application) -> AsyncIterator[None]:
    """Poll for changes while the app runs (after the connectors started); at the end, stop
    the connectors still retiring."""
    rt = app[RUNTIME]
    rt.tenant_sync.started = True
    for consumer in (rt.worker, rt.dispatcher):
        if consumer is not None:
            consumer.catch_up = partial(catch_up, rt)
    task = asyncio.create_task(_poll(app), name="tenant-sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sync = app[RUNTIME].tenant_sync
    for retiring in list(sync.retiring):
        retiring.cancel()  # stops the connector now rather than after its grace
    await asyncio.gather(*sync.retiring, return_exceptions=True)


async def _poll(app: web.Application) -> None:
    rt = app[RUNTIME]
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            await catch_up(rt)
        except StoreError as exc:
            log.warning("tenants.sync_store_error", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a connector that fails to start, say
            log.error("tenants.sync_error", error=repr(exc)[:500])
