"""The aiohttp application: ``create_app(config)`` assembles everything.

Every resource — the store, the outgoing HTTP session, connector listeners, the web
membership heartbeat, the worker and dispatcher consumers (and the MCP server connections
their agents share), the operations listener — is
opened and closed in ``cleanup_ctx``, in that order and in reverse. A process serving
requests beats into the ``web`` membership set (:meth:`Keyspace.web_members`) so the
console's Health page lists it; it leaves the set when it shuts down. Roles: ``all`` (web +
workers, the default), ``web`` (inbound only) and ``worker`` (worker and dispatcher only),
for scale-out on Redis.

The app itself is what the public port serves: ``/healthz`` and the routes of every
installed connector kind (through :mod:`gateway.edge`, which finds the current connector
per request). The configuration given is the seed: the tenants stored through the admin
API are applied over it before any connector starts, and followed while the app runs
(:mod:`gateway.tenant_sync`); so are the personas stored over the persona files
(:mod:`gateway.persona_sync`). ``/readyz``, ``/metrics`` and the admin API live on the
operations listener, or here behind a global key (see :mod:`gateway.operations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from agents.persona import PersonaRegistry, load_personas
from agents.tools.mcp_servers import McpServers
from connectors.base import Connector, ConnectorContext
from connectors.registry import connector_spec, installed_specs
from gateway.config import GatewayConfig
from gateway.deadletters import OUTBOX_GROUP
from gateway.dispatcher import Dispatcher
from gateway.edge import edge_handler
from gateway.errors import StoreError
from gateway.ingest import INBOX_GROUP, Ingestor
from gateway.media import FileBlobStore, MediaLinks, MediaService
from gateway.media.blobs import BlobStore
from gateway.media.links import load_link_keys
from gateway.media.route import MEDIA_PATH, media_handler
from gateway.metrics import Metrics
from gateway.models import Channel
from gateway.observability import get_logger
from gateway.operations import healthz, mount_keyed_operations, operations_listener_ctx
from gateway.partitions import RELEASE_SECONDS, PartitionConsumer
from gateway.persona_sync import install_persona_sync, personas_ctx
from gateway.quotas import QuotaPolicy
from gateway.runtime import RUNTIME, Role, Runtime
from gateway.store import Keyspace, ReplicaAcks, open_store
from gateway.tenant_sync import index_routes, install_tenant_sync, tenants_ctx
from gateway.worker import Worker

__all__ = ["RUNTIME", "Role", "Runtime", "create_app"]

log = get_logger(__name__)


def create_app(
    config: GatewayConfig, *, role: Role = "all", personas: PersonaRegistry | None = None
) -> web.Application:
    personas = personas if personas is not None else load_personas(config.personas_dir)
    metrics = Metrics()
    keyspace = Keyspace(prefix=config.store.prefix, partitions=config.store.partitions)
    context = ConnectorContext(config=config, keyspace=keyspace, metrics=metrics)
    connectors: dict[Channel, Connector] = {}
    for kind in sorted({c.kind for t in config.tenants for c in t.channels}):
        spec = connector_spec(kind)
        if spec is None:  # parse_config already refuses unknown kinds
            raise RuntimeError(f"connector {kind!r} is not installed")
        # The blocks passed the spec's check when the configuration was loaded.
        connectors[spec.channel] = spec.factory(
            context=context, channels=config.channels_of_kind(kind)
        )
    # Every installed kind's routes are mounted, so a kind a tenant adds at run time is
    # served without a restart (the router cannot change once the app runs); a kind without
    # blocks answers 404 unknown_tenant (gateway/edge.py). Its routes come from a connector
    # built with no blocks, never started.
    mounted = dict(connectors)
    if role in ("all", "web"):
        for spec in installed_specs():
            if spec.channel not in mounted:
                mounted[spec.channel] = spec.factory(context=context, channels=[])
    runtime = Runtime(
        config=config,
        role=role,
        personas=personas,
        persona_files=personas,
        metrics=metrics,
        keyspace=keyspace,
        context=context,
        connectors=connectors,
        consumer_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        seed=config,
        routes=index_routes(connectors),
    )
    app = web.Application(client_max_size=config.http.max_body_bytes)
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get(MEDIA_PATH, media_handler(lambda: runtime.media))
    if role in ("all", "web"):
        for channel, connector in mounted.items():
            for route in connector.routes():
                app.router.add_route(
                    route.method,
                    route.path,
                    edge_handler(route, channel.value, runtime),
                    name=route.name or None,
                )
    if config.http.operations.mode == "public":
        mount_keyed_operations(app)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_media_ctx)
    app.cleanup_ctx.append(personas_ctx)  # the stored personas, before the stored tenants
    app.cleanup_ctx.append(tenants_ctx)  # the stored tenants, before any connector starts
    app.cleanup_ctx.append(_connectors_ctx)
    if role in ("all", "web"):
        app.cleanup_ctx.append(_web_membership_ctx)
    if role in ("all", "worker"):
        app.cleanup_ctx.append(_consumers_ctx)
    if config.http.operations.mode == "listener":
        app.cleanup_ctx.append(operations_listener_ctx)
    install_persona_sync(app)
    install_tenant_sync(app)
    return app


# -- resources -------------------------------------------------------------------------------------
async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    store = rt.config.store
    rt.store = await open_store(store.url, cluster=store.cluster, replica_acks=_replica_acks(rt))
    rt.ingestor = Ingestor(
        store=rt.store,
        keyspace=rt.keyspace,
        metrics=rt.metrics,
        dedupe_ttl=rt.config.store.dedupe_ttl_seconds,
    )
    yield
    await rt.store.aclose()


def _replica_acks(rt: Runtime) -> ReplicaAcks | None:
    store = rt.config.store
    if not store.replica_acks:
        return None
    return ReplicaAcks(
        replicas=store.replica_acks,
        timeout_ms=store.replica_ack_timeout_ms,
        aof=store.replica_ack_aof,
        on_short=rt.metrics.replica_acks_short.inc,
    )


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    assert rt.store is not None  # opened by _store_ctx
    assert rt.ingestor is not None
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    rt.context.attach(store=rt.store, http=session, ingest=rt.ingestor)
    rt.quotas = QuotaPolicy(
        config=rt.config, store=rt.store, keyspace=rt.keyspace, metrics=rt.metrics, http=session
    )
    yield
    await rt.quotas.aclose()
    await session.close()


_SWEEP_SECONDS = 3600.0


def open_blob_store(config: GatewayConfig) -> BlobStore:
    """The configured blob store: an S3-compatible bucket, else the folder."""
    if config.media.s3 is not None:
        # Imported here: botocore is loaded only by the processes that keep files in S3.
        from gateway.media.s3 import S3BlobStore

        return S3BlobStore(config.media.s3)
    return FileBlobStore(config.media.dir)


async def _media_ctx(app: web.Application) -> AsyncIterator[None]:
    """Kept files: the blob store, the signed links' keys, and (role all/worker) the hourly
    retention sweep."""
    rt = app[RUNTIME]
    assert rt.store is not None  # opened by _store_ctx
    media = rt.config.media
    keys = await load_link_keys(
        [s.get_secret_value() for s in media.link_secrets], rt.store, rt.keyspace
    )
    http = rt.context.http
    blobs = open_blob_store(rt.config)
    rt.media = MediaService(
        config=lambda: rt.config,
        blobs=blobs,
        links=MediaLinks(
            keys, base_url=lambda: _public_url(rt), ttl_seconds=media.link_ttl_seconds
        ),
        http=http,
        metrics=rt.metrics,
    )
    rt.context.attach_media(rt.media)
    sweep: asyncio.Task[None] | None = None
    if rt.role in ("all", "worker"):
        sweep = asyncio.create_task(_sweep_forever(rt.media), name="media-sweep")
    yield
    if sweep is not None:
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweep
    await blobs.aclose()


def _public_url(rt: Runtime) -> str:
    http = rt.config.http
    return http.public_base_url or rt.public_url or f"http://{http.host}:{http.port}"


async def _sweep_forever(media: MediaService) -> None:
    while True:
        try:
            await media.sweep()
        except Exception as exc:  # noqa: BLE001 - a failed sweep waits for the next, the gateway goes on
            log.warning("media.sweep_failed", error_type=type(exc).__name__)
        await asyncio.sleep(_SWEEP_SECONDS)


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    listening = rt.role in ("all", "web")
    if listening:
        for connector in rt.connectors.values():
            await connector.start()
    yield
    # Every role releases connector resources: a worker-role process never starts listeners,
    # but its send() calls may have opened SDK clients that only stop() closes.
    for connector in rt.connectors.values():
        await connector.stop()


async def _web_membership_ctx(app: web.Application) -> AsyncIterator[None]:
    """Beat into the ``web`` membership set on the consumers' lease cadence.

    A web process holds no partition, so without this nothing in the store says it lives.
    """
    rt = app[RUNTIME]
    store = rt.store
    assert store is not None  # opened by _store_ctx
    key = rt.keyspace.web_members()
    ttl = rt.config.pipeline.lease_seconds

    async def beat() -> None:
        while True:
            try:
                await store.heartbeat(key, rt.consumer_id, ttl=ttl)
            except StoreError as exc:
                log.warning("gateway.web_heartbeat_failed", error=str(exc))
            await asyncio.sleep(ttl / 3)  # as PartitionConsumer renews its leases

    task = asyncio.create_task(beat(), name="web-heartbeat")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # A zero TTL leaves the set now; else the entry expires within a lease, so a store that
    # does not answer is given as long as a consumer's lease releases, not its command timeout.
    with contextlib.suppress(StoreError, TimeoutError):
        async with asyncio.timeout(RELEASE_SECONDS):
            await store.heartbeat(key, rt.consumer_id, ttl=0)


async def _consumers_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    assert rt.store is not None  # opened by _store_ctx
    pipeline = rt.config.pipeline
    # Connected lazily by the first turn that needs a server; closed after the worker stopped.
    rt.mcp = McpServers(rt.config.mcp_servers)
    rt.worker = Worker(
        config=rt.config,
        store=rt.store,
        keyspace=rt.keyspace,
        personas=rt.personas,
        connectors=rt.connectors,
        metrics=rt.metrics,
        quotas=rt.quotas,
        mcp=rt.mcp,
        media=rt.media,
    )
    rt.dispatcher = Dispatcher(
        config=rt.config,
        store=rt.store,
        keyspace=rt.keyspace,
        connectors=rt.connectors,
        metrics=rt.metrics,
    )
    rt.consumers = [
        PartitionConsumer(
            store=rt.store,
            keyspace=rt.keyspace,
            role="worker",
            group=INBOX_GROUP,
            stream_for=rt.keyspace.inbox,
            handler=rt.worker.handle,
            consumer_id=rt.consumer_id,
            metrics=rt.metrics,
            lease_seconds=pipeline.lease_seconds,
            max_in_flight=pipeline.max_in_flight,
        ),
        PartitionConsumer(
            store=rt.store,
            keyspace=rt.keyspace,
            role="dispatcher",
            group=OUTBOX_GROUP,
            stream_for=rt.keyspace.outbox,
            handler=rt.dispatcher.handle,
            consumer_id=rt.consumer_id,
            metrics=rt.metrics,
            lease_seconds=pipeline.lease_seconds,
            max_in_flight=pipeline.max_in_flight,
        ),
    ]
    for consumer in rt.consumers:
        await consumer.start()
    log.info("gateway.consumers_started", consumer=rt.consumer_id)
    yield
    for consumer in rt.consumers:
        await consumer.stop(grace=pipeline.shutdown_grace_seconds)
    await rt.mcp.aclose()
    log.info("gateway.consumers_stopped", consumer=rt.consumer_id)
