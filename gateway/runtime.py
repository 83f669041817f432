"""What a running gateway holds: :class:`Runtime`, one per app, stored under :data:`RUNTIME`.

Kept apart from :mod:`gateway.app` so that what the app mounts (the admin API, the
operations app) can read the runtime without importing the module that mounts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from agents.persona import PersonaRegistry
from agents.tools.mcp_servers import McpServers
from connectors.base import Connector, ConnectorContext
from gateway.config import GatewayConfig
from gateway.dispatcher import Dispatcher
from gateway.ingest import Ingestor
from gateway.metrics import Metrics
from gateway.models import Channel
from gateway.partitions import PartitionConsumer
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, Store
from gateway.worker import Worker

__all__ = ["RUNTIME", "Role", "Runtime"]

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
    mcp: McpServers | None = None  # the MCP server connections (role all/worker)
    # The operations app and its listener's base URL once bound (mode "listener").
    operations_app: web.Application | None = None
    operations_url: str | None = None
    # The public listener's base URL as this process can reach it (loopback for a wildcard
    # host), once bound: the console's playground sends its signed requests there.
    public_url: str | None = None


RUNTIME = web.AppKey("runtime", Runtime)
