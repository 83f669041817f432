"""The sections of ``gateway.yaml`` that stand on their own: the store, the HTTP listeners
(with the operations listener and the console), the pipeline's timings and the plans.

Pure data validated by pydantic; :mod:`gateway.config` assembles them into
:class:`~gateway.config.GatewayConfig` and re-exports them. Each field carries its meaning as
its description, which ``flowbiz schema`` and docs/configuration.md are generated from.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import ConfigError
from gateway.store.redis_sentinel import SENTINEL_SCHEMES, parse_sentinel_url

__all__ = [
    "ConsoleConfig",
    "HttpServerConfig",
    "OperationsListenerConfig",
    "PipelineConfig",
    "PlanConfig",
    "StoreConfig",
    "default_plans",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanConfig(_Model):
    """Limits of a plan (see docs/quotas.md); null means no limit of that kind."""

    monthly_outbound_messages: int | None = Field(
        default=None,
        ge=0,
        description="Replies and proactive messages per calendar month (UTC), every channel.",
    )
    monthly_line_pushes: int | None = Field(
        default=None, ge=0, description="Paid LINE pushes per calendar month."
    )
    inbound_per_user_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="Inbound messages one sender may send per minute (a token bucket per "
        "tenant, channel and sender); more are dropped.",
    )
    inbound_burst: int = Field(
        default=10, ge=1, description="The most tokens the inbound bucket holds."
    )
    replies_per_conversation_per_minute: float | None = Field(
        default=None,
        gt=0,
        description="Replies per conversation per minute: a brake on bot loops.",
    )
    reply_burst: int = Field(
        default=10, ge=1, description="The most tokens the reply bucket holds."
    )
    soft_limit_ratio: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Warn the tenant (tenants[].notify_url) at this share of a monthly limit.",
    )
    over_quota_notice: str | None = Field(
        default=(
            "We have reached our message limit for now and cannot answer at the moment. "
            "We will be back soon."
        ),
        description="Sent once per window per conversation when a limit is reached and the "
        "persona has no `quota_notice` prompt; null keeps the conversation silent.",
    )


def default_plans() -> dict[str, PlanConfig]:
    # Built-in plan names without limits, so configs naming them stay valid; declare
    # ``plans:`` to give them limits.
    return {"free": PlanConfig(), "pro": PlanConfig(), "enterprise": PlanConfig()}


_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", *SENTINEL_SCHEMES})


class StoreConfig(_Model):
    """Where the gateway keeps everything: SQLite for one process, Redis (a server, Sentinel
    or a Cluster) to scale out (see docs/deploy.md). SQLite and the memory store have no
    replicas, so ``replica_acks`` is refused for them."""

    url: str = Field(
        default="sqlite://flowbiz.db",
        description="`sqlite://relative/to/this/file.db`, `sqlite:///absolute/path.db`, "
        "`redis://host:port/db` (`rediss://` with TLS, `unix://` a socket), or through Redis "
        "Sentinel `redis+sentinel://host:port,host:port/master-name[/db]`.",
    )
    cluster: bool = Field(
        default=False,
        description="The url names one node of a Redis Cluster (database 0); the client "
        "learns the others from it.",
    )
    partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Inbox and outbox partitions; conversations are spread over them by hash, "
        "and processes share them through leases. The most worker processes that help.",
    )
    prefix: str = Field(default="fb", description="The prefix of every key in the store.")
    dedupe_ttl_seconds: float = Field(
        default=7 * 86400,
        gt=0,
        description="How long an event id is remembered to drop the platform's retries; "
        "claims, inbound markers and delivery records expire after it.",
    )
    receipts_per_conversation: int = Field(
        default=100, ge=1, description="The newest delivery receipts kept per conversation."
    )
    replica_acks: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Redis only: an admission and every commit wait until this many replicas "
        "hold the write (`WAIT`), or fail (503 at the edge, so the platform retries). "
        "0 sends no `WAIT` at all.",
    )
    replica_ack_timeout_ms: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="How long to wait for the replicas; must be below a third of "
        "`pipeline.lease_seconds` (and is below the store's 10 s command timeout).",
    )
    replica_ack_aof: bool = Field(
        default=False,
        description="Replicas must also have fsynced their AOF (`WAITAOF`, Redis 7.2+); "
        "needs replica_acks.",
    )

    @model_validator(mode="after")
    def _cluster_is_redis(self) -> StoreConfig:
        scheme = urlsplit(self.url).scheme.lower()
        if self.cluster:
            parts = urlsplit(self.url)
            if parts.scheme not in {"redis", "rediss"}:
                raise ValueError("cluster: true needs a redis:// or rediss:// url")
            if parts.path.strip("/") not in {"", "0"}:
                raise ValueError("a Redis Cluster has only database 0")
        if scheme in SENTINEL_SCHEMES:
            try:
                parse_sentinel_url(self.url)
            except ConfigError as exc:
                raise ValueError(exc.problems[0][1]) from exc
        if self.replica_acks and scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"replica_acks needs a Redis store: a {scheme or 'sqlite'} store has no replicas"
            )
        if self.replica_ack_aof and not self.replica_acks:
            raise ValueError("replica_ack_aof needs replica_acks of at least 1")
        return self


class ConsoleConfig(_Model):
    """The operators' console under ``/console/`` on the operations listener."""

    enabled: bool = Field(default=True, description="Serve the console.")
    session_hours: float = Field(
        default=8, gt=0, le=24 * 30, description="How long a sign-in lasts."
    )
    secure_cookie: Literal["auto", "always"] = Field(
        default="auto",
        description="`auto`: the session cookie is Secure when the request came over TLS; "
        "`always`: also behind a proxy that terminates TLS (the request then arrives as "
        "plain HTTP).",
    )


class OperationsListenerConfig(_Model):
    """Where ``/readyz``, ``/metrics`` and the admin API under ``/v1`` are served.

    ``mode: listener`` (the default) serves them on their own host and port, loopback unless
    changed, and never on the public webhook port. ``mode: public`` serves them on the public
    port instead, every one of them behind a global admin API key.
    """

    mode: Literal["listener", "public"] = Field(
        default="listener",
        description="`listener`: on their own host and port, never on the public port; "
        "`public`: on the public port, every one of them behind a global admin API key.",
    )
    host: str = Field(
        default="127.0.0.1",
        description="The operations listener's address (`serve --operations-host` overrides it).",
    )
    port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description="The operations listener's port (`serve --operations-port` overrides it).",
    )
    console: ConsoleConfig = Field(
        default=ConsoleConfig(), description="The operators' console at `/console/`."
    )


class HttpServerConfig(_Model):
    """The public listener: the platforms' webhooks, the HTTP API channel and ``/healthz``."""

    host: str = Field(
        default="127.0.0.1",
        description="The address to listen on (`flowbiz serve --host` overrides it).",
    )
    port: int = Field(
        default=8080,
        ge=0,
        le=65535,
        description="The port to listen on (`flowbiz serve --port` overrides it).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="A larger request body is refused (413)."
    )
    public_base_url: str | None = Field(
        default=None,
        description="How the platforms reach this gateway (`https://host[/prefix]`): the URL "
        "their signatures cover, and where WhatsApp status callbacks are sent.",
    )
    header_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="A request head must be complete this long after the connection opened "
        "or its previous request ended (so it also bounds an idle keep-alive connection).",
    )
    body_timeout_seconds: float = Field(
        default=30, gt=0, description="The whole body must have arrived this long after its head."
    )
    max_connections_per_client: int | None = Field(
        default=64,
        ge=1,
        description="Open connections one client address may hold at once, per listener; "
        "null: no cap (behind a load balancer every connection comes from its address).",
    )
    max_json_depth: int = Field(
        default=64,
        ge=1,
        le=128,
        description="JSON (also inside form fields) nested deeper is refused at the edge.",
    )
    operations: OperationsListenerConfig = Field(
        default=OperationsListenerConfig(),
        description="Where `/readyz`, `/metrics`, the admin API and the console are served.",
    )


class PipelineConfig(_Model):
    """The timings and bounds of the worker and the dispatcher (see docs/deploy.md)."""

    agent_timeout_seconds: float = Field(
        default=15,
        gt=0,
        description="How long an agent may take to answer; then the persona's failure reply "
        "is sent. A persona's `agent.timeout_seconds` overrides it.",
    )
    history_limit: int = Field(
        default=20, ge=0, description="Earlier messages of the conversation an agent is given."
    )
    max_delivery_attempts: int = Field(
        default=6,
        ge=1,
        description="Sends of one reply before a retryable failure is dead-lettered.",
    )
    retry_base_seconds: float = Field(
        default=0.5,
        gt=0,
        description="The first retry's delay (jittered); each next one doubles it.",
    )
    retry_max_seconds: float = Field(
        default=300,
        gt=0,
        description="The longest delay between retries, a platform's Retry-After included.",
    )
    delivery_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="How long one send may take; after it the outcome is unknown and the "
        "reply is dead-lettered, never resent blindly.",
    )
    lease_seconds: float = Field(
        default=10,
        gt=0,
        description="A process's lease on a partition, renewed every third of it; a dead "
        "process's partitions move to a live one when its leases expire.",
    )
    shutdown_grace_seconds: float = Field(
        default=10,
        ge=0,
        description="On SIGTERM, how long a process finishes what it holds before it stops.",
    )
    max_in_flight: int = Field(
        default=512,
        ge=1,
        description="Entries one process works on at once, per role (worker, dispatcher).",
    )
    contact_name_ttl_seconds: float = Field(
        default=86_400,
        gt=0,
        description="How long a display name looked up on a platform (Slack `users.info`, "
        "LINE profiles) is kept in the store before it is asked again.",
    )
    contact_name_failure_ttl_seconds: float = Field(
        default=300,
        gt=0,
        description="After a failed look-up (an error, a timeout), how long the gateway waits "
        "before asking the platform again; the message goes on with the raw id meanwhile.",
    )
