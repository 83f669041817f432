"""What a running gateway holds: :class:`Runtime`, one per app, stored under :data:`RUNTIME`.

Kept apart from :mod:`gateway.app` so that what the app mounts (the admin API, the
operations app) can read the runtime without importing the module that mounts them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from agents.persona import PersonaRegistry
from agents.tools.mcp_servers import McpServers
from connectors.base import Connector, ConnectorContext, Route
from gateway.config import GatewayConfig
from gateway.dispatcher import Dispatcher
from gateway.ingest import Ingestor
from gateway.media import MediaService
from gateway.metrics import Metrics
from gateway.models import Channel
from gateway.partitions import PartitionConsumer
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, Store
from gateway.worker import Worker

__all__ = ["RUNTIME", "PersonaSync", "Role", "Runtime", "TenantSync"]

Role = Literal["all", "web", "worker"]


class TenantSync:
    """The tenants this process has applied (gateway/tenant_sync.py), and the connectors
    swapped out that are still finishing their work."""

    def __init__(self) -> None:
        self.seen: int | None = None  # the version counter, as last polled
        self.applied = 0  # the overlay version in force (0: the file alone)
        self.lock = asyncio.Lock()  # one swap at a time: a poll and a local write
        self.reading = asyncio.Lock()  # one read of the store's version and overlay at a time
        self.started = False  # whether the app's connectors have been started
        self.failed: int | None = None  # the overlay version whose apply last failed (logged)
        self.retiring: set[asyncio.Task[None]] = set()


class PersonaSync:
    """The personas this process has applied (gateway/persona_sync.py)."""

    def __init__(self) -> None:
        self.seen: int | None = None  # the version counter, as last polled
        self.applied = 0  # the overlay version in force (0: the files alone)
        self.lock = asyncio.Lock()  # one swap at a time: a poll, a reload and a local write
        self.failed: int | None = None  # the counter value whose apply last failed (logged)


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
    # The configuration the process was started with (the file): tenants defined through the
    # admin API apply over it (gateway/tenant_overlay.py) and ``config`` is the result.
    seed: GatewayConfig | None = None
    # Each mounted connector route by (channel, method, path) -> the current connector's
    # route; the edge looks it up per request, so a connector swapped in serves at once.
    routes: dict[tuple[str, str, str], Route] = field(default_factory=dict)
    tenant_sync: TenantSync = field(default_factory=TenantSync)
    # The personas of the files alone: the ones stored through the admin API apply over
    # them (gateway/persona_overlay.py) and ``personas`` is the result.
    persona_files: PersonaRegistry | None = None
    persona_sync: PersonaSync = field(default_factory=PersonaSync)
    store: Store | None = None
    ingestor: Ingestor | None = None
    worker: Worker | None = None
    dispatcher: Dispatcher | None = None
    consumers: list[PartitionConsumer] = field(default_factory=list)
    quotas: QuotaPolicy | None = None
    mcp: McpServers | None = None  # the MCP server connections (role all/worker)
    media: MediaService | None = None  # kept files and signed links (gateway/media/)
    # The operations app and its listener's base URL once bound (mode "listener").
    operations_app: web.Application | None = None
    operations_url: str | None = None
    # The public listener's base URL as this process can reach it (loopback for a wildcard
    # host), once bound: the console's playground sends its signed requests there.
    public_url: str | None = None


RUNTIME = web.AppKey("runtime", Runtime)
