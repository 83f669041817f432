"""The aiohttp application: ``create_app(config)`` assembles everything.

Every resource — the store, the outgoing HTTP session, connector listeners, the worker and
dispatcher consumers — is opened and closed in ``cleanup_ctx``, in that order and in
reverse. Roles: ``all`` (web + workers, the default), ``web`` (inbound only) and
``worker`` (worker and dispatcher only), for scale-out on Redis.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

from agents.persona import PersonaRegistry, load_personas
from connectors.base import Connector, ConnectorContext, InboundRequest, Route
from connectors.registry import connector_class
from gateway.config import GatewayConfig
from gateway.deadletters import OUTBOX_GROUP
from gateway.dispatcher import Dispatcher
from gateway.errors import InboundError, IngestUnavailableError, StoreError
from gateway.ingest import INBOX_GROUP, Ingestor
from gateway.metrics import Metrics
from gateway.models import Channel
from gateway.observability import get_logger
from gateway.partitions import PartitionConsumer
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, Store, open_store
from gateway.worker import Worker

__all__ = ["RUNTIME", "Role", "Runtime", "create_app"]

log = get_logger(__name__)

Role = Literal["all", "web", "worker"]


@dataclass(slots=True)
class Runtime:
    """Everything a running gateway holds; one per app."""

    config: GatewayConfig
    role: Role
    personas: PersonaRegistry
    metrics: Metrics
    keyspace: Keyspace
    context: ConnectorContext
    connectors: dict[Channel, Connector]
    consumer_id: str
    store: Store | None = None
    ingestor: Ingestor | None = None
    worker: Worker | None = None
    dispatcher: Dispatcher | None = None
    consumers: list[PartitionConsumer] = field(default_factory=list)
    quotas: QuotaPolicy | None = None


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(
    config: GatewayConfig, *, role: Role = "all", personas: PersonaRegistry | None = None
) -> web.Application:
    personas = personas if personas is not None else load_personas(config.personas_dir)
    metrics = Metrics()
    keyspace = Keyspace(prefix=config.store.prefix, partitions=config.store.partitions)
    context = ConnectorContext(config=config, keyspace=keyspace, metrics=metrics)
    connectors: dict[Channel, Connector] = {}
    for kind in sorted({c.kind for t in config.tenants for c in t.channels}):
        factory = connector_class(kind)
        if factory is None:  # parse_config already refuses unknown kinds
            raise RuntimeError(f"connector {kind!r} is not installed")
        connector = factory(context=context, channels=config.channels_of_kind(kind))
        connectors[connector.channel] = connector
    runtime = Runtime(
        config=config,
        role=role,
        personas=personas,
        metrics=metrics,
        keyspace=keyspace,
        context=context,
        connectors=connectors,
        consumer_id=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
    )
    app = web.Application(client_max_size=config.http.max_body_bytes)
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    if role in ("all", "web"):
        for channel, connector in connectors.items():
            for route in connector.routes():
                app.router.add_route(
                    route.method, route.path, _edge(route, channel.value), name=route.name or None
                )
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_connectors_ctx)
    if role in ("all", "worker"):
        app.cleanup_ctx.append(_consumers_ctx)
    # Imported here: the admin package reads RUNTIME from this module.
    from gateway.admin.personas import install_persona_sync
    from gateway.admin.routes import mount_admin

    if role in ("all", "web"):
        mount_admin(app)
    if role in ("all", "worker"):
        install_persona_sync(app)
    return app


# -- resources -------------------------------------------------------------------------------------
async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    rt.store = await open_store(rt.config.store.url)
    rt.ingestor = Ingestor(
        store=rt.store,
        keyspace=rt.keyspace,
        metrics=rt.metrics,
        dedupe_ttl=rt.config.store.dedupe_ttl_seconds,
    )
    yield
    await rt.store.aclose()


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


async def _consumers_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    assert rt.store is not None  # opened by _store_ctx
    pipeline = rt.config.pipeline
    rt.worker = Worker(
        config=rt.config,
        store=rt.store,
        keyspace=rt.keyspace,
        personas=rt.personas,
        connectors=rt.connectors,
        metrics=rt.metrics,
        quotas=rt.quotas,
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
    log.info("gateway.consumers_stopped", consumer=rt.consumer_id)


# -- the edge --------------------------------------------------------------------------------------
def _edge(route: Route, channel: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Adapt a connector route: neutral request in, ingest, then the connector's response."""

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rt = request.app[RUNTIME]
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            rt.metrics.inbound.labels(channel, "too_large").inc()
            log.warning("inbound.rejected", channel=channel, reason="too_large", status=413)
            return web.json_response(
                {"error": "too_large", "message": "request body too large"}, status=413
            )
        neutral = InboundRequest(
            method=request.method,
            path=request.path,
            # Computed only if the connector reads them (see InboundRequest).
            url=lambda: str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            query=lambda: dict(request.query),
            body=body,
            remote=request.remote,
            match_info=dict(request.match_info),
        )
        try:
            result = await route.handler(neutral)
            flags: list[bool] = []
            admit = result.to_admit()
            if admit:
                assert rt.ingestor is not None  # exists while the app runs
                flags = await rt.ingestor.submit(admit, started=started)
        except InboundError as exc:
            return _refused(rt, channel, route, exc)
        except StoreError as exc:
            # A route that reads the store (long-poll, thread lookups) during an outage: the
            # platform or client must retry, exactly as when the append itself fails.
            unavailable = IngestUnavailableError("the store is unavailable; retry later")
            unavailable.__cause__ = exc
            return _refused(rt, channel, route, unavailable)
        response = result.respond(flags) if result.respond is not None else result.response
        return web.Response(
            status=response.status,
            body=response.body,
            headers={"Content-Type": response.content_type, **response.headers},
        )

    return handle


def _refused(rt: Runtime, channel: str, route: Route, exc: InboundError) -> web.Response:
    rt.metrics.inbound.labels(channel, exc.reason).inc()
    log.warning(
        "inbound.rejected",
        channel=channel,
        route=route.name,
        reason=exc.reason,
        status=exc.status,
        detail=str(exc),
    )
    return web.json_response({"error": exc.reason, "message": str(exc)}, status=exc.status)


# -- probes ----------------------------------------------------------------------------------------
async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    problems: list[str] = []
    if rt.store is None:
        problems.append("store not open")
    else:
        try:
            await rt.store.ping()
        except StoreError as exc:
            problems.append(f"store unreachable: {exc}")
    if rt.role in ("all", "worker") and not all(c.running for c in rt.consumers):
        problems.append("workers not running")
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready", "role": rt.role})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
